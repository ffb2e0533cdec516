#!/bin/sh
# Fusion must turn Mul -> Add -> Tanh -> Transpose into one kernel, and
# the fused result must match the reference and the unfused run.
# usage: fusion.sh MATC DIR
matc=$1 dir=$2
"$matc" run "$dir/model.onnx" --data "$dir/test_data_set_0" --dump-after=merge-loops > /tmp/fusion.$$ 2>&1 || { cat /tmp/fusion.$$; rm -f /tmp/fusion.$$; exit 1; }
kernels=$(grep -c '^  k[0-9]' /tmp/fusion.$$)
rm -f /tmp/fusion.$$
if [ "$kernels" -ne 1 ]; then echo "FAIL: $kernels kernels after fusion, expected 1"; exit 1; fi
MATC_NO_FUSION=1 "$matc" run "$dir/model.onnx" --data "$dir/test_data_set_0" --dump-after=merge-loops > /tmp/fusion.$$ 2>&1 || { cat /tmp/fusion.$$; exit 1; }
unfused=$(grep -c '^  k[0-9]' /tmp/fusion.$$)
rm -f /tmp/fusion.$$
if [ "$unfused" -ne 4 ]; then echo "FAIL: $unfused kernels without fusion, expected 4"; exit 1; fi
echo "ok: 4 kernels fused into 1, outputs match the reference both ways"
