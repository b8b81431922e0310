#!/usr/bin/env bash
# Make the separate venv the real-Triton test (tests/test_serving_triton.py) and a CPU deployment
# need: NVIDIA's tritonserver 2.51 as bundled in nvidia-pytriton (Python backend only), numpy < 2
# (the backend's stub corrupts tensors with numpy 2), tritonclient, the CPU torch, onnxruntime and
# s3rt itself (editable, this checkout).
#
#   bash serving/triton_env.sh [VENV]          # default .venv/triton (inside the ignored .venv/)
#   S3RT_TRITON_VENV=.venv/triton python -m pytest -m triton tests/test_serving_triton.py   # from the main venv
#
# Needs the package index (nvidia-pytriton, ~340 MB installed; torch==2.13.0 comes from local disk
# as for the main venv). About a minute on 2 cores (63 s at load 3: venv 5 s, pip 3 s, torch 27 s,
# the rest 27 s).
#
# S3RT_TRITON_LINK_FROM=OTHER_VENV (what .ci/run does with its main venv) hard-links torch,
# onnxruntime, tritonclient, Pillow, tqdm and what they require (never numpy: this venv keeps
# numpy < 2) from that venv's site-packages (copies where a link is impossible) before pip runs;
# pip then takes them as installed, and still replaces any whose version does not fit. Saves
# unpacking them twice. The files are links, not references: the other venv may change or go.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv/triton}"
PY="${PYTHON:-python3}"
SECONDS=0

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
cons="$(mktemp)"
trap 'rm -f "$cons"' EXIT
echo "numpy<2" > "$cons"
if [ -n "${S3RT_TRITON_LINK_FROM:-}" ]; then
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$S3RT_TRITON_LINK_FROM/bin/python" - "$site" torch onnxruntime "tritonclient[grpc]" pillow tqdm <<'PY'
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

dst, wanted = Path(sys.argv[1]), sys.argv[2:]
present = {canonicalize_name(p.name.rsplit("-", 1)[0]) for p in dst.glob("*.dist-info")}
never = {"numpy", "pip", "setuptools", "wheel"}  # numpy: < 2 here; the rest: the venv's own
todo, seen, linked = [Requirement(w) for w in wanted], set(), []
while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    if name in never or name in present or (name, *sorted(req.extras)) in seen:
        continue
    seen.add((name, *sorted(req.extras)))
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        continue  # pip installs it
    for r in map(Requirement, dist.requires or []):
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
            todo.append(r)
    if any(n == name for n, *_ in seen - {(name, *sorted(req.extras))}):
        continue  # its files are linked already (asked for again with other extras)
    for f in dist.files or []:
        if f.parts[0] == "..":
            continue  # console scripts outside site-packages: not needed
        src, target = Path(dist.locate_file(f)), dst / f
        if target.exists() or not src.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)
    linked.append(f"{dist.metadata['Name']} {dist.version}")
print(f"linked from {sys.prefix}: {', '.join(sorted(linked))}")
PY
fi
echo "triton venv: base ready (${SECONDS} s)"
"$VENV/bin/pip" install -q -c "$cons" torch==2.13.0
echo "triton venv: torch (${SECONDS} s)"
"$VENV/bin/pip" install -q -c "$cons" "nvidia-pytriton==0.7.0" "tritonclient[grpc]>=2.40" onnxruntime \
  "opencv-python-headless<4.11" -e .
"$VENV/bin/python" - <<'PY'
import numpy, pytriton, tritonclient.grpc, onnxruntime, torch, s3rt.serving
assert numpy.__version__.startswith("1."), numpy.__version__
print(f"triton venv ready: numpy {numpy.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
PY
echo "triton venv: done (${SECONDS} s)"
