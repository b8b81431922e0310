#!/usr/bin/env python3
"""The tensorrt backend against torch CUDA eager, in one run on one GPU: same preset, same
random weights (seed 0), same synthetic clip, same tracker settings. Per graph (from
Tracker(profile=True), which synchronizes around each graph) and per frame (p50, p99, FPS),
and the ratio torch / tensorrt. The two trackers run one after the other, each after warm-up.

    python benchmarks/bench_tensorrt.py --preset cutie-base --size 480x864          # export + build here
    python benchmarks/bench_tensorrt.py --engines ENGINES --export GRAPHS           # engines already built

Needs a CUDA GPU, a CUDA build of PyTorch and TensorRT 10.x or 11.x. Writes
benchmarks/results/tensorrt_<gpu>.md (or --out) with the device and versions.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_backends import run_clip  # noqa: E402

from s3rt import __version__  # noqa: E402
from s3rt.graphs import GRAPHS, padded_size, parse_size  # noqa: E402
from s3rt.io import atomic_write  # noqa: E402
from s3rt.runtime.tracker import Tracker  # noqa: E402
from s3rt.synthetic import make_clip  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cutie-base")
    p.add_argument("--size", default="480x864", help="HxW of the synthetic frames (default 480x864)")
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--frames", type=int, default=30, help="timed frames (after warm-up)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--export", help="a graph set to reuse (default: export one into --work)")
    p.add_argument("--engines", help="an engine set built from --export (default: build one into --work)")
    p.add_argument("--work", default=None, help="folder for the export and engines (default: a temporary one)")
    p.add_argument("--timing-cache", default=None)
    p.add_argument("--readout", default="auto", choices=("auto", "cuda-kernel", "engine"))
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_tensorrt: no CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    from s3rt.engine_manifest import import_tensorrt
    from s3rt.engines import BuildOptions, build_engines
    from s3rt.export import export_graphs
    from s3rt.model import build_model, get_config
    from s3rt.runtime.backends.tensorrt.runner import TensorRTBackend

    trt = import_tensorrt()
    cfg = get_config(args.preset)
    h, w = parse_size(args.size)
    padded = padded_size(h, w, -1, cfg.pad_multiple)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-trt-"))
    t0 = time.perf_counter()
    export_dir = Path(args.export) if args.export else work / f"{args.preset}-{padded[0]}x{padded[1]}"
    manifest = export_graphs(args.preset, export_dir, size=padded, max_objects=args.objects, progress=True,
                             reuse=True) if not args.export else None
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engines = Path(args.engines) if args.engines else work / "engines"
    if not args.engines:
        build_engines(export_dir, engines, BuildOptions(max_objects=args.objects, timing_cache=args.timing_cache),
                      overwrite=True)
    build_s = time.perf_counter() - t0

    backend = TensorRTBackend(engines, device="cuda", readout=args.readout, cuda_graphs=args.cuda_graphs)
    spec = backend.spec
    frames, masks = make_clip(args.frames + args.warmup, h, w, num_objects=args.objects, seed=0)
    results = {}
    for name in ("torch", "tensorrt"):
        if name == "torch":
            model = build_model(args.preset, seed=manifest.seed if manifest else 0)
            tracker = Tracker(model, device="cuda", size=-1, profile=True, max_mem_frames=spec.max_mem_frames,
                              top_k=spec.top_k, flip_aug=spec.flip_aug)
        else:
            tracker = Tracker(backend=backend, size=-1, profile=True)
        per_frame, stages = run_clip(tracker, frames, masks[0], args.warmup)
        results[name] = (tracker.describe() if hasattr(tracker, "describe") else name, per_frame, stages)
        del tracker
        torch.cuda.synchronize()

    gpu = torch.cuda.get_device_name()
    cc = ".".join(map(str, torch.cuda.get_device_capability()))
    header = (f"{gpu} (sm {cc}); torch {torch.__version__} (CUDA {torch.version.cuda}), TensorRT {trt.__version__}, "
              f"s3rt {__version__}; {args.preset} at {padded[0]}x{padded[1]}, {args.objects} objects, "
              f"{args.frames} timed frames after {args.warmup} warm-up; export {export_s:.0f} s, engine build "
              f"{build_s:.0f} s; engines: {backend.manifest.describe()}; readout: {backend.readout_impl}"
              + (", CUDA graphs" if args.cuda_graphs else "") + "; per-graph times are per frame (summed over "
              "the graph's calls in it), with synchronisation around each graph (so they add up to more than the "
              "frame time without it)")
    cols = ["backend", "frame p50 ms", "frame p99 ms", "fps"] + [f"{g} p50 / p99 ms" for g in GRAPHS]
    rows = []
    for name, (desc, per_frame, stages) in results.items():
        rows.append([name, f"{np.percentile(per_frame, 50):.2f}", f"{np.percentile(per_frame, 99):.2f}",
                     f"{1000 / per_frame.mean():.1f}"]
                    + [f"{np.percentile(stages[g], 50):.2f} / {np.percentile(stages[g], 99):.2f}" if stages[g] else "-"
                       for g in GRAPHS])
    t, r = results["torch"][1], results["tensorrt"][1]
    rows.append(["torch / tensorrt", f"{np.percentile(t, 50) / np.percentile(r, 50):.2f}x",
                 f"{np.percentile(t, 99) / np.percentile(r, 99):.2f}x",
                 f"{r.mean() and t.mean() / r.mean():.2f}x"]
                + [f"{np.percentile(results['torch'][2][g], 50) / np.percentile(results['tensorrt'][2][g], 50):.2f}x"
                   if results["torch"][2][g] and results["tensorrt"][2][g] else "-" for g in GRAPHS])
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                      + ["| " + " | ".join(row) + " |" for row in rows])
    text = f"# tensorrt backend vs torch CUDA eager\n\n{header}\n\n{table}\n"
    print(text)
    out = Path(args.out or HERE / "results" / f"tensorrt_{re.sub(r'[^A-Za-z0-9]+', '_', gpu).strip('_')}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        f.write(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
