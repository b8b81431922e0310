"""Two ONNX Runtime distributions' CPU execution provider on the same graph sets: the tracker's
ms per frame for each set, each distribution in its own process (a venv holds one of them; the
other is put first on sys.path from a folder given with --other, e.g. one filled by
`pip install --no-deps --target DIR onnxruntime-gpu==1.31.1`), alternating round by round.

    python benchmarks/bench_ort_dist.py --other /tmp/ortgpu --set small-fp32=DIR --set small-int8=DIR2 ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
import numpy as np, torch
import onnxruntime
from s3rt import Tracker
from s3rt.graphs import load_manifest
from s3rt.synthetic import make_clip
torch.set_num_threads(1)
out = {"ort": onnxruntime.__version__, "file": onnxruntime.__file__, "sets": {}}
frames_n, warm = int(sys.argv[1]), int(sys.argv[2])
for item in sys.argv[3:]:
    name, d = item.split("=", 1)
    m = load_manifest(d)
    H, W = m.spec.padded_size
    f, masks = make_clip(frames_n + warm, H, W, num_objects=2, seed=0)
    t = Tracker(backend="onnxruntime", graphs=d, size=-1, threads=2)
    per = []
    for i, x in enumerate(f):
        t0 = time.perf_counter()
        t.step(x, masks[0] if i == 0 else None)
        if i >= warm:
            per.append((time.perf_counter() - t0) * 1e3)
    out["sets"][name] = float(np.median(per))
print("RESULT " + json.dumps(out))
"""


def run(env_extra, sets, frames, warmup):
    env = dict(os.environ, **env_extra)
    r = subprocess.run([sys.executable, "-c", CHILD, str(frames), str(warmup), *sets], capture_output=True, text=True,
                       env=env, timeout=3600)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(line[0][7:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=True, help="folder holding the other distribution's onnxruntime/")
    ap.add_argument("--set", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "ort_distributions_cpu.md"))
    args = ap.parse_args()
    pp = os.environ.get("PYTHONPATH", "")
    configs = {"venv": {}, "other": {"PYTHONPATH": args.other + (os.pathsep + pp if pp else "")}}
    best, versions = {}, {}
    for r in range(args.rounds):
        for label, env in configs.items():
            res = run(env, args.set, args.frames, args.warmup)
            versions[label] = f"onnxruntime {res['ort']} ({res['file']})"
            for k, v in res["sets"].items():
                best.setdefault(label, {})
                best[label][k] = min(best[label].get(k, 1e18), v)
            print(f"round {r} {label}: {res['sets']}", flush=True)
    lines = ["# ONNX Runtime distributions, CPU execution provider", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f} at the end; "
             f"median ms per frame of the tracker (2 intra-op threads, 1 torch thread), best of {args.rounds} "
             f"alternating rounds, {args.frames} frames after {args.warmup} warm-up, 2 objects, random weights.", "",
             "| graph set | " + " | ".join(versions[k] for k in configs) + " | ratio |",
             "|---|" + "---|" * (len(configs) + 1)]
    for name in best["venv"]:
        a, b = best["venv"][name], best["other"][name]
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
