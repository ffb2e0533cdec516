#!/bin/sh
# Runs every ONNX backend test (node, pytorch-converted, pytorch-operator,
# simple) and prints one line per test, the skip reasons grouped, and a
# closing "N passed, N failed, N skipped" line.
# usage: tools/onnx_backend_report.sh [BUILD_DIR] [DATA_ROOT]
build=${1:-build}
root=${2:-/usr/include/onnx/backend/test/data}
matc=$build/matc
tmp=$(mktemp -d)
pass=0 fail=0 skip=0
for suite in node pytorch-converted pytorch-operator simple; do
  for t in "$root/$suite"/*/; do
    t=${t%/}
    name=$suite/$(basename "$t")
    out=$(sh "$(dirname "$0")/../tests/run_onnx_test.sh" "$matc" "$t" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "PASS $name"
    elif [ $rc -eq 77 ]; then skip=$((skip+1))
      reason=$(printf '%s\n' "$out" | grep -m1 '^matc:' | sed -e 's/^matc: [^ ]*: //' -e "s/node '[^']*' //" -e "s/input [0-9]* '[^']*': //" -e "s/'[^']*'//g")
      echo "SKIP $name: $reason"; printf '%s\n' "$reason" >> "$tmp/reasons"
    else fail=$((fail+1)); echo "FAIL $name: $(printf '%s\n' "$out" | grep -m1 -E 'MISMATCH|matc:|differ')"
    fi
  done
done
if [ -f "$tmp/reasons" ]; then
  echo "skip reasons:"
  sort "$tmp/reasons" | uniq -c | sort -rn
fi
rm -rf "$tmp"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
