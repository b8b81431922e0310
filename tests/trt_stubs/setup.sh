#!/usr/bin/env bash
# Install TensorRT's real Python bindings (10.x and 11.x) with stub native libraries, for the API
# conformance test (tests/test_tensorrt_api.py). Usage: tests/trt_stubs/setup.sh DEST
# Makes DEST/<major>/lib (stub libnvinfer.so.<major>, libnvinfer_plugin.so.<major>,
# libnvonnxparser.so.<major>) and DEST/<major>/site (the tensorrt_bindings module), and checks that
# each imports. Any failure (no gcc, no network, a wheel missing) exits non-zero.
set -euo pipefail
dest=${1:?usage: setup.sh DEST}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
declare -A wheel=([10]="tensorrt-cu12-bindings==10.16.1.11" [11]="tensorrt-cu13-bindings==11.4.0.106")
for major in 10 11; do
  lib="$dest/$major/lib" site="$dest/$major/site"
  rm -rf "$lib" "$site"
  mkdir -p "$lib" "$site"
  for name in nvinfer nvinfer_plugin nvonnxparser; do
    gcc -shared -fPIC -O1 -Wl,-soname,"lib$name.so.$major" -o "$lib/lib$name.so.$major" "$here/nvinfer_stub.c"
  done
  "$python" -m pip install -q --no-deps --only-binary=:all: --target "$site" "${wheel[$major]}"
  LD_LIBRARY_PATH="$lib" PYTHONPATH="$site" "$python" -c \
    "import tensorrt_bindings as t; assert t.__version__.startswith('$major.'), t.__version__; print('tensorrt_bindings', t.__version__, 'imports with stub libraries')"
done
