#!/bin/sh
# Joined kernels: Winograd's transforms (16 weight points, 16 input tile
# points, 4 output points) are emitted as one LLVM function each, 33
# functions fewer than with MATC_NO_JOIN=1, and both runs match the
# float64 reference conv.
# usage: join.sh MATC DIR
matc=$1 dir=$2
tmp=${TMPDIR:-/tmp}/join.$$
count() {
  env "$@" MATC_DUMP_LLVM=1 "$matc" run "$dir/model.onnx" --data "$dir/test_data_set_0" > $tmp 2>&1 ||
    { cat $tmp >&2; rm -f $tmp; exit 1; }
  grep -c '^define internal void @k[0-9]' $tmp
}
joined=$(count MATC_NO_JOIN=0) || exit 1
alone=$(count MATC_NO_JOIN=1) || exit 1
rm -f $tmp
echo "loop kernel functions: $joined joined, $alone alone"
if [ $((alone - joined)) -ne 33 ]; then echo "FAIL: expected 33 fewer functions joined"; exit 1; fi
echo "ok: Winograd transforms joined (33 functions fewer), outputs match the reference both ways"
