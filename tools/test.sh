#!/bin/sh
# Sets everything up and runs the whole test suite (the README's test
# command; CI runs it through .ci/run):
#   build/       release: every test
#   build-asan/  AddressSanitizer + UBSan (any report fatal): the stated
#                subset (tests/tests.cmake, MATC_SANITIZE_TESTS)
#   build-fuzz/  the libFuzzer targets (clang): each fuzzed FUZZ_SECONDS
#                (default 15) from the committed corpus
# Extra arguments go to the release build's ctest.
set -e
cd "$(dirname "$0")/.."
sh tools/setup.sh
jobs=$(nproc)
t0=$(date +%s)
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMATC_SANITIZE=ON > /dev/null
cmake --build build-asan -j "$jobs" > build-asan/build.log 2>&1 || { tail -50 build-asan/build.log; exit 1; }
status=0
echo "== release build: every test"
(cd build && ctest -j "$jobs" --output-on-failure "$@") || status=1
echo "== sanitizer build (ASan + UBSan): $(cd build-asan && ctest -N | tail -1 | sed 's/Total Tests: //') tests"
(cd build-asan && ctest -j "$jobs" --output-on-failure) || status=1
echo "== fuzzing: ${FUZZ_SECONDS:-15} s per target"
sh tools/fuzz.sh -t "${FUZZ_SECONDS:-15}" -j "$jobs" || status=1
echo "test.sh: $(( $(date +%s) - t0 )) s after setup"
exit $status
