#!/usr/bin/env bash
# Everything that needs a GPU, in one call (under 8 minutes on an H100/H200), for the day a GPU
# machine is lent. Run from anywhere:   bash benchmarks/gpu_check.sh
#
#   1. the environment: GPU, driver, nvcc, torch, onnxruntime, TensorRT (importable or not)
#   2. the readout kernel built with CMake for this GPU's architecture (build/libs3rt_readout.so)
#   3. pytest -m cuda (the CUDA tests; TensorRT ones skip with their reason when it is missing)
#   4. benchmarks/bench_readout_kernel.py (kernel vs the dense top-k; goal >= 10x at 26k tokens)
#   5. benchmarks/bench_torch.py --device cuda (the torch CUDA tracker, per stage and per frame)
#   6. only where TensorRT is importable: engines for a small preset (s3rt build with a timing
#      cache), pytest -m tensorrt (per-graph and per-clip parity), benchmarks/bench_tensorrt.py
#
# Results: benchmarks/results/gpu_check_<gpu>/ (summary.md with the device, the versions and each
# step's status and time; every step's log; the benchmark tables). Steps have their own time
# limits and a failed step does not stop the others; the exit status is non-zero when one failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
START=$(date +%s)
BUDGET=${S3RT_GPU_CHECK_BUDGET:-450}   # seconds for all steps (the device call allows 480+)
BUILD=${S3RT_GPU_CHECK_BUILD:-build}    # CMake's folder (the library is looked for in build/ by default)

gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no-gpu')" 2>/dev/null || echo unknown)
slug=$(echo "$gpu" | tr -c 'A-Za-z0-9\n' '_' | sed 's/__*/_/g; s/^_//; s/_$//')
OUT=${S3RT_GPU_CHECK_OUT:-$ROOT/benchmarks/results/gpu_check_$slug}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.md
WORK=$(mktemp -d "${TMPDIR:-/tmp}/s3rt-gpu-check.XXXXXX")
failed=0

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME LIMIT_S COMMAND...: run with a time limit (never past the budget), log, record the status
step() {
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 15 ]; then
    echo "| $name | skipped: out of time budget | - |" >> "$SUMMARY"; failed=1; return
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  echo "== $name (limit ${limit}s)"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local status="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMED OUT after ${limit}s"; failed=1
  elif [ $rc -ne 0 ]; then status="FAILED (exit $rc)"; failed=1; fi
  echo "| $name | $status | ${dt}s |" >> "$SUMMARY"
  tail -n 3 "$OUT/$name.log"
}

# s3rt importable from this checkout (the device machine has no package index: nothing is fetched).
# First an editable install without dependencies; if that is impossible, a symlinked overlay that
# puts export/, calibration/, training/ and engines/ inside the package, as pyproject's package-dir does.
how="already importable"
if ! "$PY" -c "import s3rt.engines" >/dev/null 2>&1; then
  if "$PY" -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
      && "$PY" -c "import s3rt.engines" >/dev/null 2>&1; then
    how="pip install -e . (no dependencies)"
  else
    mkdir -p "$WORK/overlay"
    cp -rs "$ROOT/s3rt" "$WORK/overlay/s3rt"
    for sub in export calibration training engines; do ln -sfn "$ROOT/$sub" "$WORK/overlay/s3rt/$sub"; done
    export PYTHONPATH="$WORK/overlay${PYTHONPATH:+:$PYTHONPATH}"
    how="symlinked overlay on PYTHONPATH (pip install failed: see install.log)"
  fi
fi

{
  echo "# GPU check: $gpu"
  echo
  echo "s3rt: $how."
  echo
  echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')."
  echo
  echo '```'
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>&1 | head -4
  (nvcc --version 2>&1 | tail -1) || echo "nvcc: not found"
  "$PY" - <<'EOF' 2>&1
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "sm", ".".join(map(str, torch.cuda.get_device_capability())))
for mod in ("onnxruntime", "onnx", "polygraphy"):
    try:
        print(mod, __import__(mod).__version__)
    except Exception as e:
        print(mod, "not importable:", type(e).__name__)
try:
    from s3rt.engine_manifest import import_tensorrt
    print("tensorrt", import_tensorrt().__version__)
except Exception as e:
    print("tensorrt not usable:", str(e).split(":")[0])
EOF
  echo '```'
  echo
  echo "| step | status | time |"
  echo "|---|---|---|"
} > "$SUMMARY"

arch=$("$PY" -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability())))" 2>/dev/null || echo 90)
step kernel_build 120 bash -c "cmake -S . -B '$BUILD' -DCMAKE_BUILD_TYPE=Release -DS3RT_CUDA_ARCHITECTURES=${arch}-real && cmake --build '$BUILD' -j"
case "$BUILD" in /*) lib=$BUILD ;; *) lib=$ROOT/$BUILD ;; esac
[ -f "$lib/libs3rt_readout.so" ] && export S3RT_READOUT_LIB=$lib/libs3rt_readout.so
step pytest_cuda 150 "$PY" -m pytest -m "cuda and not tensorrt" -q -rs -p no:cacheprovider tests
step bench_readout_kernel 100 "$PY" benchmarks/bench_readout_kernel.py --out "$OUT/readout_kernel.md"
step bench_torch_cuda 90 "$PY" benchmarks/bench_torch.py --device cuda --preset cutie-base --frames 20 --warmup 3 \
  --out "$OUT/torch_backend_cuda.md"

if "$PY" -c "from s3rt.engine_manifest import import_tensorrt; import_tensorrt()" >/dev/null 2>&1; then
  step export_small 90 "$PY" -m s3rt.cli export --preset cutie-small --size 480x864 --max-objects 3 --no-verify \
    --out "$WORK/graphs" --quiet
  step build_engines 150 "$PY" -m s3rt.cli build --graphs "$WORK/graphs" --out "$WORK/engines" --timing-cache "$OUT/timing.cache" --quiet
  cp -f "$WORK/engines/engines.json" "$OUT/engines.json" 2>/dev/null
  step pytest_tensorrt 120 "$PY" -m pytest -m tensorrt -q -rs -p no:cacheprovider tests
  step bench_tensorrt 90 "$PY" benchmarks/bench_tensorrt.py --preset cutie-small --size 480x864 --objects 3 \
    --export "$WORK/graphs" --engines "$WORK/engines" --out "$OUT/tensorrt_vs_torch.md"
else
  echo "| tensorrt steps | skipped: TensorRT is not importable here ($("$PY" -c "from s3rt.engine_manifest import import_tensorrt; import_tensorrt()" 2>&1 | tail -1 | sed "s/^[^:]*: //" | cut -c1-200)) | - |" >> "$SUMMARY"
fi

echo >> "$SUMMARY"
echo "Total $(( $(date +%s) - START )) s. Logs and tables beside this file." >> "$SUMMARY"
rm -rf "$WORK"
cat "$SUMMARY"
exit $failed
