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


GRAPH_CHILD = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
from s3rt.graphs import example_inputs, graph_io, load_manifest
out = {"ort": ort.__version__, "file": ort.__file__, "sets": {}}
reps = int(sys.argv[1])
for item in sys.argv[3:]:
    name, d = item.split("=", 1)
    m = load_manifest(d)
    io = graph_io(m.config(), m.spec.padded_size, m.spec.batch, m.spec.memory_tokens)
    so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    total = 0.0
    for g, (ins, _) in io.items():
        feeds = {k: v.numpy() for k, v in example_inputs(ins, 2).items()}
        s = ort.InferenceSession(str(m.graph_path(g)), so, providers=["CPUExecutionProvider"])
        s.run(None, feeds)
        best = 1e9
        for _ in range(reps):
            t0 = time.perf_counter(); s.run(None, feeds); best = min(best, time.perf_counter() - t0)
        total += best * 1e3
    out["sets"][name] = total
print("RESULT " + json.dumps(out))
"""


def run(env_extra, sets, frames, warmup, graphs=False):
    env = dict(os.environ, **env_extra)
    r = subprocess.run([sys.executable, "-c", GRAPH_CHILD if graphs else CHILD, str(frames), str(warmup), *sets],
                       capture_output=True, text=True,
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
    ap.add_argument("--graphs", action="store_true",
                    help="time each graph's session alone (best of --frames runs on contract-shaped random inputs, "
                         "summed over the five graphs) instead of the tracker: less sensitive to a shared machine")
    ap.add_argument("--out", default=str(HERE / "results" / "ort_distributions_cpu.md"))
    args = ap.parse_args()
    pp = os.environ.get("PYTHONPATH", "")
    configs = {"venv": {}, "other": {"PYTHONPATH": args.other + (os.pathsep + pp if pp else "")}}
    best, versions = {}, {}
    for r in range(args.rounds):
        for label, env in configs.items():
            res = run(env, args.set, args.frames, args.warmup, args.graphs)
            versions[label] = f"onnxruntime {res['ort']} ({res['file']})"
            for k, v in res["sets"].items():
                best.setdefault(label, {})
                best[label][k] = min(best[label].get(k, 1e18), v)
            print(f"round {r} {label}: {res['sets']}", flush=True)
    what = (f"ms for one call of each of the five graphs (summed), best of {args.frames} calls on contract-shaped random "
            f"inputs, 2 objects, 2 intra-op threads" if args.graphs else
            f"median ms per frame of the tracker (2 intra-op threads, 1 torch thread), {args.frames} frames after "
            f"{args.warmup} warm-up, 2 objects")
    lines = [f"## ONNX Runtime distributions, CPU execution provider ({'graphs' if args.graphs else 'tracker'})", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f} at the end; "
             f"{what}; best of {args.rounds} alternating rounds; random weights.", "",
             "| graph set | " + " | ".join(versions[k] for k in configs) + " | ratio |",
             "|---|" + "---|" * (len(configs) + 1)]
    for name in best["venv"]:
        a, b = best["venv"][name], best["other"][name]
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
