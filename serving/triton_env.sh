#!/usr/bin/env bash
# Make the separate venv the real-Triton test (tests/test_serving_triton.py) and a CPU deployment
# need: NVIDIA's tritonserver 2.51 as bundled in nvidia-pytriton (Python backend only), numpy < 2
# (the backend's stub corrupts tensors with numpy 2), tritonclient, the CPU torch, onnxruntime and
# s3rt itself (editable, this checkout).
#
#   bash serving/triton_env.sh [VENV]          # default .venv/triton (inside the ignored .venv/)
#   S3RT_TRITON_VENV=.venv/triton python -m pytest -m triton tests/test_serving_triton.py   # from the main venv
#
# Needs the package index (about 600 MB; torch==2.13.0 comes from local disk as for the main venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv/triton}"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
cons="$(mktemp)"
trap 'rm -f "$cons"' EXIT
echo "numpy<2" > "$cons"
"$VENV/bin/pip" install -q -c "$cons" torch==2.13.0
"$VENV/bin/pip" install -q -c "$cons" "nvidia-pytriton==0.7.0" "tritonclient[grpc]>=2.40" onnxruntime \
  "opencv-python-headless<4.11" -e .
"$VENV/bin/python" - <<'PY'
import numpy, pytriton, tritonclient.grpc, onnxruntime, torch, s3rt.serving
assert numpy.__version__.startswith("1."), numpy.__version__
print(f"triton venv ready: numpy {numpy.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
PY
