#!/bin/sh
# Installs what matc needs (Debian packages, only those missing) and builds
# it into build/. Safe to run again. clang and libclang-rt-dev (libFuzzer,
# its sanitizer runtimes) build the fuzz targets (tools/fuzz.sh).
# usage: tools/setup.sh [extra packages...]
set -e
cd "$(dirname "$0")/.."
pkgs="cmake make gcc libc6-dev llvm-19-dev libprotobuf-c-dev protobuf-c-compiler libonnx-dev
      libonnx-testdata libopenblas-dev zlib1g-dev python3 dataset-fashion-mnist fortunes
      openmpi-bin libopenmpi-dev clang libclang-rt-dev $*"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)"
