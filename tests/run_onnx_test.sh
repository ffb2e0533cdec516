#!/bin/sh
# Runs one ONNX backend test directory: every test_data_set_N against
# model.onnx. Exit 0 all match, 77 unsupported (skip), else failure.
# usage: run_onnx_test.sh MATC TESTDIR
matc=$1 dir=$2
status=0
for d in "$dir"/test_data_set_*; do
  [ -d "$d" ] || continue
  "$matc" run "$dir/model.onnx" --data "$d" --rtol 1e-3 --atol 1e-7
  rc=$?
  if [ $rc -eq 77 ]; then exit 77; fi
  if [ $rc -ne 0 ]; then status=1; fi
done
exit $status
