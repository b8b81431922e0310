"""Time the torch backend per graph (encoder, readout, fusion, decoder, mask_encoder) and per
frame (p50, p99) on a synthetic clip, for each preset, and write a results table.

    python benchmarks/bench_torch.py                       # cutie-base and s3-base at 480x864, this CPU
    python benchmarks/bench_torch.py --preset cutie-test --size 96x160 --frames 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from s3rt import __version__
from s3rt.io import atomic_write
from s3rt.model import build_model
from s3rt.graphs import GRAPHS
from s3rt.runtime.tracker import Tracker
from s3rt.synthetic import make_clip

from bench_backends import cpu_name  # same folder: scripts run with it on sys.path


def bench(preset: str, size: tuple[int, int], frames: int, warmup: int, device: str, objects: int):
    clip, masks = make_clip(frames + warmup, size[0], size[1], objects, seed=0)
    tracker = Tracker(build_model(preset), device=device, size=-1, profile=True)
    per_frame, stages = [], {g: [] for g in GRAPHS}
    for i, frame in enumerate(clip):
        t0 = time.perf_counter()
        r = tracker.step(frame, masks[0] if i == 0 else None)
        if i >= warmup:
            per_frame.append((time.perf_counter() - t0) * 1000)
            for k, v in r.timings.items():
                stages[k].append(v * 1000)
    return tracker, np.asarray(per_frame), stages


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", help="repeatable (default: cutie-base and s3-base)")
    p.add_argument("--size", default="480x864", help="HxW of the synthetic frames (default 480x864)")
    p.add_argument("--frames", type=int, default=8, help="timed frames (after warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "torch_backend_cpu.md"))
    args = p.parse_args(argv)
    size = tuple(int(x) for x in args.size.lower().split("x"))
    presets = args.preset or ["cutie-base", "s3-base"]

    header = (f"torch backend, FP32, device {args.device} ({cpu_name() if args.device == 'cpu' else torch.cuda.get_device_name()}), "
              f"{torch.get_num_threads()} threads; torch {torch.__version__}, s3rt {__version__}; "
              f"synthetic {size[0]}x{size[1]} clip, {args.objects} objects, {args.frames} timed frames after "
              f"{args.warmup} warm-up; mem_every 5, memory frames every 5th frame; graph times are means per frame, "
              f"with synchronisation")
    rows = []
    for preset in presets:
        print(f"benchmarking {preset} ...", flush=True)
        tracker, per_frame, stages = bench(preset, size, args.frames, args.warmup, args.device, args.objects)
        cells = [preset, f"{tracker.padded_size[0]}x{tracker.padded_size[1]}",
                 f"{np.percentile(per_frame, 50):.0f}", f"{np.percentile(per_frame, 99):.0f}",
                 f"{1000 / per_frame.mean():.2f}"]
        cells += [f"{np.mean(stages[g]):.0f}" if stages[g] else "-" for g in GRAPHS]
        rows.append(cells)
    cols = ["preset", "padded", "frame p50 ms", "frame p99 ms", "fps"] + [f"{g} ms" for g in GRAPHS]
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows])
    text = f"# Torch backend per graph and per frame\n\n{header}\n\n{table}\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        f.write(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
