#!/bin/sh
# Sets everything up and runs the whole test suite (the README's test
# command; CI runs it through .ci/run). Builds build/ (release) and
# build-asan/ (AddressSanitizer + UBSan, for the sanitizer tests).
set -e
cd "$(dirname "$0")/.."
sh tools/setup.sh
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMATC_SANITIZE=ON > /dev/null
cmake --build build-asan -j "$(nproc)" --target matc
cmake -S . -B build -DMATC_ASAN_BINARY="$PWD/build-asan/matc" > /dev/null
cmake --build build -j "$(nproc)"
cd build
ctest -j "$(nproc)" --output-on-failure "$@"
