#!/bin/sh
# Sets everything up and runs the whole test suite (the README's test
# command; CI runs it through .ci/run).
set -e
cd "$(dirname "$0")/.."
sh tools/setup.sh
cd build
ctest -j "$(nproc)" --output-on-failure "$@"
