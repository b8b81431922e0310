"""Many streams on one device: the stream pool (s3rt.serving.StreamPool, graph calls batched across
streams) against one Tracker per stream run one after another, for 1, 2, 4 and 8 streams, in
one run, and a results table.

    python benchmarks/bench_streams.py                                   # cutie-base, 480x864, torch, this CPU
    python benchmarks/bench_streams.py --preset cutie-test --frames 3    # quick
    python benchmarks/bench_streams.py --backend onnxruntime --export DIR   # a graph set made with --max-streams 8

Both modes see the same frames: at every round each of the S streams has one frame waiting (all
arrive at the start of the round). "one after another" steps the S trackers in turn; the pool
steps them in one `StreamPool.step`. Per-frame latency is from the start of the round to that
stream's result (in the pool every stream's result comes at the end of the step; one after
another, stream k waits for the k before it). Throughput is frames of all streams per second.
The per-graph columns (ms per round, summed over streams/calls) say where the gain comes from;
`streams/call` is how many streams a graph call served on average.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from s3rt import __version__
from s3rt.graphs import GRAPHS
from s3rt.io import atomic_write
from s3rt.model import build_model
from s3rt.runtime.tracker import Tracker
from s3rt.serving import StreamFrame, StreamPool
from s3rt.synthetic import make_clip

from bench_backends import cpu_name  # same folder: scripts run with it on sys.path


def make_backend(args, model):
    if args.backend == "torch":
        from s3rt.runtime.backends import create_backend
        return lambda: create_backend("torch", model=model, device=args.device)
    from s3rt.runtime.backends.onnxrt import OnnxRuntimeBackend
    sessions = OnnxRuntimeBackend(args.export).opened
    return lambda: OnnxRuntimeBackend(sessions)


def run_paired(new_backend, clips, warmup):
    """Both modes over the same frames, round by round: each round runs the S trackers one after
    another and one pool step, in alternating order, so both see the same machine load."""
    trackers = [Tracker(backend=new_backend(), size=-1, profile=True) for _ in clips]
    pool = StreamPool(backend=new_backend(), size=-1, profile=True)
    for k in range(len(clips)):
        pool.open(k)
    res = {m: {"lat": [], "rounds": [], "graphs": dict.fromkeys(GRAPHS, 0.0)} for m in MODES}

    def sequential(t, keep):
        t0 = time.perf_counter()
        for tr, (frames, masks) in zip(trackers, clips):
            r = tr.step(frames[t], masks[0] if t == 0 else None)
            if keep:
                res[MODES[0]]["lat"].append(time.perf_counter() - t0)
                for g, s in r.timings.items():
                    res[MODES[0]]["graphs"][g] += s
        if keep:
            res[MODES[0]]["rounds"].append(time.perf_counter() - t0)

    def pooled(t, keep):
        t0 = time.perf_counter()
        pool.step({k: StreamFrame(f[t], m[0] if t == 0 else None) for k, (f, m) in enumerate(clips)})
        dt = time.perf_counter() - t0
        if keep:
            res[MODES[1]]["lat"] += [dt] * len(clips)
            res[MODES[1]]["rounds"].append(dt)
            for g, s in pool.last_timings.items():
                res[MODES[1]]["graphs"][g] += s

    for t in range(len(clips[0][0])):
        if t == warmup:
            pool.calls.clear()
            pool.stream_calls.clear()
        order = (sequential, pooled) if t % 2 == 0 else (pooled, sequential)
        for fn in order:
            fn(t, t >= warmup)
    return res, pool.batching_summary()


MODES = ("one after another", "pool")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cutie-base")
    p.add_argument("--size", default="480x864", help="HxW of the synthetic frames (default 480x864)")
    p.add_argument("--streams", default="1,2,4,8")
    p.add_argument("--frames", type=int, default=3, help="timed frames per stream (after warm-up)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed rounds: the first frame (mask) and the first tracked frame (first calls of each shape)")
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument("--export", help="graph set for --backend onnxruntime (exported with --max-streams >= streams)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "streams_cpu.md"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(x) for x in args.size.lower().split("x"))
    counts = [int(s) for s in args.streams.split(",")]
    model = build_model(args.preset) if args.backend == "torch" else None
    new_backend = make_backend(args, model)
    n = args.frames + args.warmup
    all_clips = [make_clip(n, h, w, args.objects, seed=100 + k) for k in range(max(counts))]
    # memory frames: the first (mask) frame, then every 5th; with few frames most rounds have none

    header = (f"{args.backend} backend, FP32, device {args.device} "
              f"({cpu_name() if args.device == 'cpu' else torch.cuda.get_device_name()}), "
              f"{torch.get_num_threads()} torch threads; torch {torch.__version__}, s3rt {__version__}; preset "
              f"{args.preset}; synthetic {h}x{w} clips, {args.objects} objects each, {args.frames} timed frames per "
              f"stream after {args.warmup} warm-up; both modes step the same rounds in alternating order; mem_every 5")
    rows, graph_rows = [], []
    for s in counts:
        clips = all_clips[:s]
        paired, summary = run_paired(new_backend, clips, args.warmup)
        res = {}
        for mode in MODES:
            got = paired[mode]
            lat, rounds = np.asarray(got["lat"]) * 1000, np.asarray(got["rounds"]) * 1000
            res[mode] = dict(fps=s * len(rounds) / (rounds.sum() / 1000), p50=np.percentile(lat, 50),
                             p99=np.percentile(lat, 99), round=np.median(rounds), rounds=rounds,
                             graphs={g: v * 1000 / len(rounds) for g, v in got["graphs"].items()}, summary=summary)
        ratio = float(np.median(res[MODES[0]]["rounds"] / res[MODES[1]]["rounds"]))
        for mode in MODES:
            print(f"{s} streams, {mode}: {res[mode]['fps']:.2f} frames/s, latency p50 {res[mode]['p50']:.0f} ms "
                  f"p99 {res[mode]['p99']:.0f} ms", flush=True)
        seq, pool = res["one after another"], res["pool"]
        for mode in ("one after another", "pool"):
            r = res[mode]
            rows.append(f"| {s} | {mode} | {r['fps']:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['round']:.0f} | "
                        + (f"{pool['fps'] / seq['fps']:.2f}x ({ratio:.2f}x) |" if mode == "pool" else "1.00x |"))
        spc = pool["summary"] or {}
        graph_rows.append(f"| {s} | " + " | ".join(
            f"{seq['graphs'][g]:.0f} / {pool['graphs'][g]:.0f} ({spc.get(g, {}).get('streams_per_call', 0):.1f})"
            for g in GRAPHS) + " |")
    text = "\n".join([
        "# Many streams: stream pool vs one tracker per stream", "", header, "",
        "Both modes run in the same process over the same rounds, in alternating order within each round, on a "
        "shared machine: compare the ratios within this table, not absolute numbers across runs.", "",
        "| streams | mode | frames/s (all streams) | latency p50 ms | latency p99 ms | round ms (median) | speed-up (median of paired rounds) |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Per graph, ms per round summed over streams: one after another / pool (streams per pool call):", "",
        "| streams | " + " | ".join(GRAPHS) + " |", "|---" * (len(GRAPHS) + 1) + "|", *graph_rows, ""])
    with atomic_write(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
