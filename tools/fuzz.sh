#!/bin/sh
# Builds the libFuzzer targets (build-fuzz/, clang, ASan + UBSan) and fuzzes
# each for SECONDS, one at a time, starting from the committed corpus
# (fuzz/corpus/TARGET) and every input that once crashed (fuzz/regress/TARGET).
# New inputs go to build-fuzz/corpus/TARGET, crashes to build-fuzz/crashes/;
# the committed files are not changed. Prints one line per target: runs,
# exec/s, corpus size. Exits 1 when a target crashes, leaks or times out.
#
# usage: tools/fuzz.sh [-t SECONDS] [-j JOBS] [TARGET...]   (default 15 s, every target)
#        tools/fuzz.sh --merge SEEDDIR [TARGET...]
#          replaces fuzz/corpus/TARGET with the smallest set of inputs from it,
#          build-fuzz/corpus/TARGET and SEEDDIR/TARGET (fuzz/make_seeds.py) that
#          covers what they all cover
set -e
cd "$(dirname "$0")/.."
secs=15 merge="" jobs=2
while [ $# -gt 0 ]; do
  case "$1" in
    -t) secs=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    --merge) merge=$2; shift 2 ;;
    *) break ;;
  esac
done
targets=${*:-"onnx idx npy tensorproto checkpoint"}
cmake -S . -B build-fuzz -DMATC_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build-fuzz -j "$jobs" > build-fuzz/build.log 2>&1 || { cat build-fuzz/build.log; exit 1; }
# Inputs past these sizes are not generated (the seeds hold larger ones).
maxlen() { case "$1" in onnx) echo 65536 ;; idx|npy) echo 16384 ;; *) echo 32768 ;; esac; }
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"
status=0
for t in $targets; do
  mkdir -p "build-fuzz/corpus/$t" build-fuzz/crashes
  if [ -n "$merge" ]; then
    seeds="$merge/$t"
    [ -d "$seeds" ] || seeds=""
    rm -rf "build-fuzz/merged/$t" && mkdir -p "build-fuzz/merged/$t"
    build-fuzz/fuzz_$t -merge=1 -rss_limit_mb=2048 -timeout=10 "build-fuzz/merged/$t" "fuzz/corpus/$t" \
      "build-fuzz/corpus/$t" $seeds > "build-fuzz/merge-$t.log" 2>&1 || { tail -30 "build-fuzz/merge-$t.log"; exit 1; }
    rm -rf "fuzz/corpus/$t" && mv "build-fuzz/merged/$t" "fuzz/corpus/$t"
    echo "$t: fuzz/corpus/$t holds $(ls "fuzz/corpus/$t" | wc -l) inputs, $(du -sk "fuzz/corpus/$t" | cut -f1) KB"
    continue
  fi
  log="build-fuzz/fuzz-$t.log"
  if build-fuzz/fuzz_$t -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len="$(maxlen "$t")" \
       -print_final_stats=1 -artifact_prefix="build-fuzz/crashes/$t-" \
       "build-fuzz/corpus/$t" "fuzz/corpus/$t" "fuzz/regress/$t" > "$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    corp=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p')
    echo "fuzz $t: ok, ${secs} s, $runs runs, $rate exec/s, corpus $corp"
  else
    echo "fuzz $t: FAILED (crash, leak or timeout); the input is in build-fuzz/crashes/:"
    grep -E 'ERROR|SUMMARY|runtime error|internal error|Test unit written' "$log" | head -20
    status=1
  fi
done
exit $status
