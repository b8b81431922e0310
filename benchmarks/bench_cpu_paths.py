"""The tracking paths a user can pick on a CPU, side by side in one run: the torch backend (reading
only the filled memory, the default), the torch backend over the whole fixed-capacity memory (what
it did before, and what graphs must do), ONNX Runtime on the FP32 graph set, and ONNX Runtime on
reduced-precision graph sets given with --graphs (e.g. an INT8 set from `s3rt calibrate`).

Per path: per-frame and per-graph latency (p50 / p90), split into frames while the memory is
still filling and frames once it is full; and the readout's cost against the number of filled
memory tokens (torch paths). Paths run alternately, --repeats times, each keeping its fastest run
(the machine may be shared), with the same weights, clip and tracker options.

    python benchmarks/bench_cpu_paths.py                                    # cutie-base, DAVIS 480p
    python benchmarks/bench_cpu_paths.py --preset cutie-test --size 96x160 --frames 12
    python benchmarks/bench_cpu_paths.py --graphs int8=/path/to/int8-set
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from s3rt import __version__
from s3rt.graphs import GRAPHS, padded_size, parse_size
from s3rt.io import atomic_write
from s3rt.runtime.latency import latency_stats
from s3rt.runtime.tracker import Tracker
from s3rt.synthetic import make_clip

from bench_backends import cpu_name  # same folder: scripts run with it on sys.path

HERE = Path(__file__).resolve().parent


def run_path(make_tracker, frames, first_mask):
    """One pass over the clip: per frame, its wall time, graph times, memory fill and state."""
    tracker = make_tracker()
    rows = []
    for i, frame in enumerate(frames):
        filled = int(tracker.banks[0].valid[0].sum()) if tracker.banks else 0  # what this frame reads
        t0 = time.perf_counter()
        r = tracker.step(frame, first_mask if i == 0 else None)
        dt = time.perf_counter() - t0
        bank = tracker.banks[0]
        rows.append({"frame": i, "ms": dt * 1e3, "graphs": {k: v * 1e3 for k, v in r.timings.items()},
                     "filled": filled, "full": bool(bank.valid.all())})
    return rows


def summarize(rows, warmup):
    rows = rows[warmup:]
    out = {}
    for phase, sel in (("filling", [r for r in rows if not r["full"]]), ("full", [r for r in rows if r["full"]]),
                       ("all", rows)):
        out[phase] = {"frame": latency_stats(r["ms"] for r in sel),
                      **{g: latency_stats(r["graphs"][g] for r in sel if g in r["graphs"]) for g in GRAPHS}}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cutie-base")
    p.add_argument("--checkpoint", help="weights (default: random, seed 0; 'bundled' where one ships)")
    p.add_argument("--size", default="480x854", help="HxW of the synthetic frames (default 480x854, DAVIS 480p)")
    p.add_argument("--frames", type=int, default=24, help="frames per pass (default 24: the memory fills at 21)")
    p.add_argument("--warmup", type=int, default=1, help="first frames left out of the statistics (default 1)")
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="passes per path, alternating; the fastest is kept")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--graphs", action="append", default=[], metavar="NAME=DIR",
                   help="another graph set to run in ONNX Runtime (repeatable), e.g. int8=DIR")
    p.add_argument("--no-onnxruntime", action="store_true", help="only the torch paths")
    p.add_argument("--exports", default=str(Path(tempfile.gettempdir()) / "s3rt-bench-exports"))
    p.add_argument("--out", default=str(HERE / "results" / "cpu_paths.md"))
    args = p.parse_args(argv)

    from s3rt.model import build_model, get_config

    cfg = get_config(args.preset)
    h, w = parse_size(args.size)
    padded = padded_size(h, w, -1, cfg.pad_multiple)
    # make_clip's object 2 enters later: ask for one more so that the first frame holds --objects.
    n_clip = args.objects + 1 if args.objects >= 2 else args.objects
    frames, masks = make_clip(args.frames, h, w, num_objects=n_clip, seed=0)
    model = build_model(args.preset, args.checkpoint, seed=0)
    paths = {
        "torch": lambda: Tracker(model, size=-1, profile=True),
        "torch, whole capacity": lambda: Tracker(model, size=-1, profile=True, filled_prefix=False),
    }
    if not args.no_onnxruntime:
        from s3rt.export import export_graphs

        export_dir = Path(args.exports) / f"{args.preset}-{padded[0]}x{padded[1]}-k{args.objects}"
        export_graphs(args.preset, export_dir, size=padded, max_objects=args.objects, checkpoint=None
                      if args.checkpoint in (None, "bundled") else args.checkpoint, reuse=True, progress=True)
        graph_sets = {"onnxruntime fp32": str(export_dir)}
        graph_sets.update({f"onnxruntime {k}": v for k, v in (g.split("=", 1) for g in args.graphs)})
        for name, d in graph_sets.items():
            paths[name] = (lambda d=d: Tracker(backend="onnxruntime", graphs=d, size=-1, profile=True))

    runs = defaultdict(list)
    for rep in range(args.repeats):
        for name, make in paths.items():
            print(f"{name}: pass {rep + 1}/{args.repeats}", flush=True)
            # ONNX Runtime owns the cores; the tracker's light torch work between its calls gets one thread
            torch.set_num_threads(1 if name.startswith("onnxruntime") else args.threads)
            runs[name].append(run_path(make, frames, masks[0]))
    torch.set_num_threads(args.threads)
    best = {k: min(v, key=lambda rows: float(np.median([r["ms"] for r in rows[args.warmup:]])))
            for k, v in runs.items()}
    stats = {k: summarize(v, args.warmup) for k, v in best.items()}

    lines = ["# CPU paths: per frame and per graph, while the memory fills and once it is full", "",
             f"- {cpu_name()} ({os.cpu_count()} logical cores), {args.threads} threads; torch {torch.__version__}, "
             f"s3rt {__version__}, Python {platform.python_version()}",
             f"- {args.preset} ({args.checkpoint or 'random weights, seed 0'}), synthetic clip {h}x{w} padded to "
             f"{padded[0]}x{padded[1]}, {args.objects} objects, {args.frames} frames ({args.warmup} left out), "
             f"Cutie's defaults (mem_every 5, 5 memory frames, top-k 30); {args.repeats} alternating passes per "
             "path, fastest kept", ""]
    names = list(stats)
    base = stats["torch, whole capacity"]
    for phase in ("filling", "full", "all"):
        count = stats["torch"][phase]["frame"]["count"]
        lines += [f"## {phase} ({count} frames)", "",
                  "| path | frame p50 ms | frame p90 ms | vs torch whole capacity (p50) | "
                  + " | ".join(f"{g} p50" for g in GRAPHS) + " |",
                  "|---|---|---|---|" + "---|" * len(GRAPHS)]
        for n in names:
            s = stats[n][phase]
            f = s["frame"]
            if not f["count"]:
                continue
            ratio = base[phase]["frame"]["p50"] / f["p50"] if base[phase]["frame"]["p50"] else float("nan")
            cells = [f"{s[g]['p50']:.1f}" if s[g]["count"] else "-" for g in GRAPHS]
            lines.append(f"| {n} | {f['p50']:.1f} | {f['p90']:.1f} | {ratio:.2f}x | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## readout against filled memory tokens (ms per frame, torch paths)", "",
              "| frame | filled tokens | torch | torch, whole capacity |", "|---|---|---|---|"]
    for a, b in zip(best["torch"][args.warmup:], best["torch, whole capacity"][args.warmup:]):
        ra, rb = a["graphs"].get("readout"), b["graphs"].get("readout")
        if ra is not None and rb is not None:
            lines.append(f"| {a['frame']} | {a['filled']} | {ra:.1f} | {rb:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with atomic_write(Path(args.out), "w") as f:
        f.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
