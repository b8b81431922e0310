"""ONNX Runtime backend against the torch backend on this CPU: same preset, same synthetic clip,
same tracker settings, one run. Per graph (encoder / readout / fusion / decoder / mask_encoder,
from Tracker(profile=True)) and per frame (p50, p99, fps), the ratio ORT / torch, and where
ONNX Runtime spends its time (per operator type, from its profiler).

    python benchmarks/bench_backends.py                                  # cutie-base and s3-base, 480p
    python benchmarks/bench_backends.py --preset cutie-test --size 96x160 --frames 10

The two backends run one after the other (not interleaved), each with the machine to itself.
Graphs are exported once into --exports (reused when the options match). Frames are a
synthetic clip of --size (H x W, e.g. DAVIS 480p 480x854), padded by the tracker to the
preset's multiple; the export is made for that padded size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from s3rt import __version__
from s3rt.io import atomic_write
from s3rt.graphs import GRAPHS
from s3rt.runtime.backends.onnxrt import OnnxRuntimeBackend
from s3rt.runtime.latency import latency_stats
from s3rt.runtime.tracker import Tracker
from s3rt.synthetic import make_clip

HERE = Path(__file__).resolve().parent


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_clip(tracker, frames, first_mask, warmup):
    per_frame, stages = [], defaultdict(list)
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        r = tracker.step(frame, first_mask if i == 0 else None)
        dt = time.perf_counter() - t0
        if i >= warmup:
            per_frame.append(dt * 1e3)
            for k, v in r.timings.items():
                stages[k].append(v * 1e3)
    return np.asarray(per_frame), stages


def ort_session_options(args, profile_dir: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[args.ort_opt]
    so.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if args.ort_mode == "parallel"
                         else ort.ExecutionMode.ORT_SEQUENTIAL)
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1 if args.ort_mode == "sequential" else args.threads
    so.log_severity_level = 3
    if not args.ort_spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort")
    return so


def ort_op_profile(export_dir, args, frames, first_mask) -> dict:
    """Per graph, the operator types where ONNX Runtime spends its time (ms per call, share)."""
    torch.set_num_threads(args.torch_threads_with_ort)
    with tempfile.TemporaryDirectory() as d:
        backend = OnnxRuntimeBackend(export_dir, options=ort_session_options(args, d), verify=False)
        tracker = Tracker(backend=backend, size=-1)
        for i, frame in enumerate(frames):
            tracker.step(frame, first_mask if i == 0 else None)
        out = {}
        for graph, sess in backend.sessions.items():
            path = sess.end_profiling()
            with open(path) as f:
                events = json.load(f)
            starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
            # The first two runs of a session plan its memory: count the later ones when there are any.
            cutoff = starts[2] if len(starts) > 2 else 0
            runs = sum(1 for t in starts if t >= cutoff)
            per_op = defaultdict(float)
            for e in events:
                if (e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
                        and e.get("ts", 0) >= cutoff):
                    per_op[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0) / 1e3
            total = sum(per_op.values())
            if runs and total:
                out[graph] = {"runs": runs, "ms_per_run": total / runs,
                              "ops": sorted(((op, ms / runs, ms / total) for op, ms in per_op.items()),
                                            key=lambda x: -x[1])[:6]}
    torch.set_num_threads(args.threads)
    return out


def graph_gflops(preset, padded, objects, memory_tokens, top_k=30) -> dict:
    """FP32 GFLOP of one call of each graph (torch.utils.flop_counter on the export wrappers)."""
    from torch.utils.flop_counter import FlopCounterMode

    from s3rt.graphs import example_inputs, graph_io
    from s3rt.graphs.modules import graph_module
    from s3rt.model import build_model

    model = build_model(preset, seed=0)
    if model.cfg.is_s3_encoder:
        model.pixel_encoder.set_export_mode(True)
    io = graph_io(model.cfg, padded, 1, memory_tokens)
    out = {}
    for graph, (inputs, _) in io.items():
        x = example_inputs(inputs, objects)
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            graph_module(graph, model, top_k)(*x.values())
        out[graph] = fc.get_total_flops() / 1e9
    return out


def gemm_rate(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """The best FP32 GEMM rate this CPU reaches (GFLOP/s, torch, n x n x n): the practical peak."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(preset, args):
    from s3rt.export import export_graphs
    from s3rt.model import build_model, get_config
    from s3rt.graphs import padded_size, parse_size

    cfg = get_config(preset)
    h, w = parse_size(args.size)
    padded = padded_size(h, w, -1, cfg.pad_multiple)
    export_dir = Path(args.exports) / f"{preset}-{padded[0]}x{padded[1]}-k{args.objects}"
    print(f"[{preset}] export at {padded[0]}x{padded[1]} -> {export_dir}", flush=True)
    t0 = time.perf_counter()
    manifest = export_graphs(preset, export_dir, size=padded, max_objects=args.objects, progress=True, reuse=True)
    export_s = time.perf_counter() - t0
    # make_clip's object 2 enters later: ask for one more so that the first frame holds --objects.
    n_clip = args.objects + 1 if args.objects >= 2 else args.objects
    frames, masks = make_clip(args.frames + args.warmup, h, w, num_objects=n_clip, seed=0)
    first = masks[0]
    spec = manifest.spec
    opts = dict(max_mem_frames=spec.max_mem_frames, top_k=spec.top_k, flip_aug=spec.flip_aug)  # for torch

    model = build_model(preset, seed=0)
    backend = OnnxRuntimeBackend(export_dir, options=ort_session_options(args), verify=False)
    runs = {"torch": [], "onnxruntime": []}
    for rep in range(args.repeats):
        torch.set_num_threads(args.threads)
        print(f"[{preset}] torch: {len(frames)} frames (repeat {rep + 1}/{args.repeats})", flush=True)
        runs["torch"].append(run_clip(Tracker(model, size=-1, profile=True, **opts), frames, first, args.warmup))
        # ONNX Runtime runs the graphs on --threads threads; the tracker's light torch work between
        # graph calls gets one thread, so that idle OpenMP threads do not compete with ONNX Runtime's.
        torch.set_num_threads(args.torch_threads_with_ort)
        print(f"[{preset}] onnxruntime: {len(frames)} frames (repeat {rep + 1}/{args.repeats})", flush=True)
        t_ort = Tracker(backend=backend, size=-1, profile=True)
        runs["onnxruntime"].append(run_clip(t_ort, frames, first, args.warmup))
        objects = len(t_ort.object_ids)
    torch.set_num_threads(args.threads)
    del backend
    # The machine may be shared: keep each backend's repeat with the lowest median frame time.
    best = {k: min(v, key=lambda r: float(np.median(r[0]))) for k, v in runs.items()}
    torch_frame, torch_stages = best["torch"]
    ort_frame, ort_stages = best["onnxruntime"]
    medians = {k: [float(np.median(r[0])) for r in v] for k, v in runs.items()}

    ops = {}
    if args.profile_frames:
        print(f"[{preset}] onnxruntime profile over {args.profile_frames} frames", flush=True)
        ops = ort_op_profile(export_dir, args, frames[:args.profile_frames], first)
    flops = graph_gflops(preset, padded, objects, manifest.memory_tokens) if args.flops else {}
    return {"preset": preset, "padded": padded, "objects": objects, "export_s": export_s, "gflops": flops,
            "medians": medians,
            "torch": (torch_frame, torch_stages), "onnxruntime": (ort_frame, ort_stages), "ops": ops,
            "memory_tokens": manifest.memory_tokens}


def fmt(x):
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def stage_stats(vals):
    s = latency_stats(vals)
    return (s["p50"], s["p99"], s["mean"]) if s["count"] else None


def render(results, args) -> str:
    import onnxruntime as ort

    lines = ["# ONNX Runtime backend vs torch backend on CPU", "",
             f"- CPU: {cpu_name()} ({os.cpu_count()} logical cores), threads: torch {args.threads}, "
             f"ONNX Runtime intra-op {args.threads}",
             f"- torch {torch.__version__}, onnxruntime {ort.__version__} (CPUExecutionProvider), s3rt {__version__}, "
             f"Python {platform.python_version()}",
             f"- ONNX Runtime session: graph optimization {args.ort_opt.upper()}, execution mode {args.ort_mode}, "
             f"thread spinning {'on' if args.ort_spinning else 'off'}, I/O binding into preallocated torch tensors; "
             f"the tracker's own torch work runs on {args.torch_threads_with_ort} torch thread(s) in the ORT phase",
             f"- synthetic clip {args.size} (padded by the tracker), {args.frames} timed frames after {args.warmup} "
             "warm-up, FP32, random weights (seed 0), tracker defaults (mem_every 5, 5 memory frames, top-k 30); the "
             f"two backends run one after the other in one process, alternating, {args.repeats} times; each "
             "backend's run with the lowest median is shown (the machine may be shared)",
             ""]
    for r in results:
        tf, ts = r["torch"]
        of, os_ = r["onnxruntime"]
        lines.append(f"## {r['preset']} at {r['padded'][0]}x{r['padded'][1]}, {r['objects']} objects, "
                     f"{r['memory_tokens']} memory tokens")
        lines.append("")
        gf = r["gflops"]
        lines.append("| graph | torch p50 ms | torch p99 ms | ORT p50 ms | ORT p99 ms | torch / ORT (p50) | GFLOP "
                     "| torch GFLOP/s | ORT GFLOP/s |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        rows = [("frame", list(tf), list(of))] + [(g, ts.get(g, []), os_.get(g, [])) for g in GRAPHS]
        for name, a, b in rows:
            sa, sb = stage_stats(a), stage_stats(b)
            if sa is None and sb is None:
                continue
            ratio = f"{sa[0] / sb[0]:.2f}x" if sa and sb and sb[0] > 0 else "-"
            g = gf.get(name) if name != "frame" else None
            rates = (f"{g:.1f} | {g / sa[0] * 1e3:.0f} | {g / sb[0] * 1e3:.0f}" if g and sa and sb else " | | ")
            lines.append(f"| {name} | {fmt(sa and sa[0])} | {fmt(sa and sa[1])} | {fmt(sb and sb[0])} | "
                         f"{fmt(sb and sb[1])} | {ratio} | {rates} |")
        fps_t, fps_o = 1e3 / np.median(tf), 1e3 / np.median(of)
        lines.append(f"| fps (p50) | {fps_t:.2f} | | {fps_o:.2f} | | {fps_o / fps_t:.2f}x | | | |")
        lines.append("")
        lines.append("Median frame time of every run (ms): " + "; ".join(
            f"{k} " + ", ".join(f"{x:.0f}" for x in v) for k, v in r["medians"].items()))
        lines.append("")
        if gf and args.gemm_rate:
            frame_gf = sum(gf[g] for g in ("encoder", "readout", "fusion", "decoder"))
            floor_ms = frame_gf / args.gemm_rate * 1e3
            lines.append(f"A frame without a memory write is {frame_gf:.0f} GFLOP (encoder + readout + fusion + "
                         f"decoder). At this CPU's best FP32 GEMM rate ({args.gemm_rate:.0f} GFLOP/s, a 2048^3 "
                         f"torch matmul on {args.threads} threads) it needs at least {floor_ms:.0f} ms: no FP32 backend "
                         f"can be more than {np.median(tf) / floor_ms:.2f}x faster than this torch run "
                         f"({np.median(tf):.0f} ms); ONNX Runtime is {np.median(tf) / np.median(of):.2f}x.")
            lines.append("")
        if r["ops"]:
            lines.append("Where ONNX Runtime spends its time (its profiler, ms per graph call after two warm-up calls, "
                         "top operator types; profiling adds some overhead):")
            lines.append("")
            for graph, p in r["ops"].items():
                top = ", ".join(f"{op} {ms:.1f} ({share:.0%})" for op, ms, share in p["ops"])
                lines.append(f"- {graph}: {p['ms_per_run']:.1f} ms/call over {p['runs']} calls: {top}")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", help="repeatable (default: cutie-base and s3-base)")
    p.add_argument("--size", default="480x854", help="HxW of the synthetic frames (default 480x854, DAVIS 480p)")
    p.add_argument("--frames", type=int, default=5, help="timed frames (default 5)")
    p.add_argument("--warmup", type=int, default=3,
                   help="warm-up frames, not timed (default 3: ONNX Runtime plans its memory on the first two runs "
                        "of each graph, and the readout first runs on frame 1)")
    p.add_argument("--objects", type=int, default=2, help="objects tracked (default 2)")
    p.add_argument("--repeats", type=int, default=2,
                   help="run each backend this many times (alternating) and keep its fastest run (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both backends (default: all)")
    p.add_argument("--ort-opt", choices=("all", "extended", "basic", "none"), default="all")
    p.add_argument("--ort-mode", choices=("sequential", "parallel"), default="sequential")
    p.add_argument("--ort-spinning", action="store_true",
                   help="let ONNX Runtime's threads spin between calls (the backend's default is off)")
    p.add_argument("--torch-threads-with-ort", type=int, default=1,
                   help="torch threads for the tracker's own work while ONNX Runtime runs the graphs (default 1)")
    p.add_argument("--profile-frames", type=int, default=6,
                   help="frames run again with the ONNX Runtime profiler for the per-operator table; each graph's "
                        "first two runs are left out (0: skip; default 6)")
    p.add_argument("--no-flops", dest="flops", action="store_false",
                   help="skip the FLOP count per graph and the GEMM-rate ceiling")
    p.add_argument("--exports", default=str(Path(tempfile.gettempdir()) / "s3rt-bench-exports"),
                   help="where the exported graphs are cached (default: a folder in the system temp)")
    p.add_argument("--out", default=str(HERE / "results" / "backends_cpu.md"))
    args = p.parse_args(argv)
    presets = args.preset or ["cutie-base", "s3-base"]
    args.gemm_rate = gemm_rate(args.threads) if args.flops else None
    results = [bench(preset, args) for preset in presets]
    text = render(results, args)
    print(text)
    out = Path(args.out)
    with atomic_write(out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
