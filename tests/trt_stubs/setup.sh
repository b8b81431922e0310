#!/usr/bin/env bash
# Install TensorRT's real Python bindings with stub native libraries, for the API conformance test
# (tests/test_tensorrt_api.py): the oldest 10.x s3rt supports (10.3, JetPack 6.2's), the newest
# 10.x checked, and 11.x. Usage: tests/trt_stubs/setup.sh DEST
# Makes DEST/<label>/lib (stub libnvinfer.so.<major>, libnvinfer_plugin.so.<major>,
# libnvonnxparser.so.<major>) and DEST/<label>/site (the tensorrt_bindings module), and checks that
# each imports. Any failure (no gcc, no network, a wheel missing) exits non-zero.
set -euo pipefail
dest=${1:?usage: setup.sh DEST}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
# label -> wheel (about 1.3 MB each); keep in step with VERSIONS in tests/test_tensorrt_api.py
declare -A wheel=([10.3]="tensorrt-cu12-bindings==10.3.0" [10.16]="tensorrt-cu12-bindings==10.16.1.11"
                  [11.4]="tensorrt-cu13-bindings==11.4.0.106")
for label in 10.3 10.16 11.4; do
  major=${label%%.*}
  lib="$dest/$label/lib" site="$dest/$label/site"
  rm -rf "$lib" "$site"
  mkdir -p "$lib" "$site"
  for name in nvinfer nvinfer_plugin nvonnxparser; do
    gcc -shared -fPIC -O1 -Wl,-soname,"lib$name.so.$major" -o "$lib/lib$name.so.$major" "$here/nvinfer_stub.c"
  done
  "$python" -m pip install -q --no-deps --only-binary=:all: --target "$site" "${wheel[$label]}"
  LD_LIBRARY_PATH="$lib" PYTHONPATH="$site" "$python" -c \
    "import tensorrt_bindings as t; assert t.__version__.startswith('$label.'), t.__version__; print('tensorrt_bindings', t.__version__, 'imports with stub libraries')"
done
