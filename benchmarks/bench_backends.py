"""ONNX Runtime backend against the torch backend on this CPU: same preset, same synthetic clip,
same tracker settings, one run. Per stage (encode / readout / fusion / decode / mask_encode,
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
from s3rt.runtime.tracker import STAGES, Tracker
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
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort")
    return so


def ort_op_profile(export_dir, args, frames, first_mask, tracker_opts) -> dict:
    """Per graph, the operator types where ONNX Runtime spends its time (ms per call, share)."""
    from s3rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    with tempfile.TemporaryDirectory() as d:
        backend = OnnxRuntimeBackend(export_dir, session_options=ort_session_options(args, d), verify=False)
        tracker = Tracker(backend=backend, size=-1, **tracker_opts)
        for i, frame in enumerate(frames):
            tracker.step(frame, first_mask if i == 0 else None)
        out = {}
        for graph, sess in backend.sessions.items():
            path = sess.end_profiling()
            events = json.load(open(path))
            runs = sum(1 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
            per_op = defaultdict(float)
            for e in events:
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    per_op[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0) / 1e3
            total = sum(per_op.values())
            if runs and total:
                out[graph] = {"runs": runs, "ms_per_run": total / runs,
                              "ops": sorted(((op, ms / runs, ms / total) for op, ms in per_op.items()),
                                            key=lambda x: -x[1])[:6]}
        return out


def bench(preset, args):
    from s3rt.export import export_graphs
    from s3rt.model import build_model, get_config
    from s3rt.parity import padded_geometry
    from s3rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    cfg = get_config(preset)
    h, w = (int(x) for x in args.size.lower().split("x"))
    padded = padded_geometry(h, w, -1, cfg.pad_multiple)
    export_dir = Path(args.exports) / f"{preset}-{padded[0]}x{padded[1]}-k{args.objects}"
    print(f"[{preset}] export at {padded[0]}x{padded[1]} -> {export_dir}", flush=True)
    t0 = time.perf_counter()
    manifest = export_graphs(preset, export_dir, size=padded, max_objects=args.objects, progress=True, reuse=True)
    export_s = time.perf_counter() - t0
    # make_clip's object 2 enters later: ask for one more so that the first frame holds --objects.
    n_clip = args.objects + 1 if args.objects >= 2 else args.objects
    frames, masks = make_clip(args.frames + args.warmup, h, w, num_objects=n_clip, seed=0)
    first = masks[0]
    opts = manifest.tracker_options()

    torch.set_num_threads(args.threads)
    model = build_model(preset, seed=0)
    print(f"[{preset}] torch: {len(frames)} frames", flush=True)
    t_torch = Tracker(model, size=-1, profile=True, **opts)
    torch_frame, torch_stages = run_clip(t_torch, frames, first, args.warmup)
    del t_torch

    print(f"[{preset}] onnxruntime: {len(frames)} frames", flush=True)
    backend = OnnxRuntimeBackend(export_dir, session_options=ort_session_options(args), verify=False)
    t_ort = Tracker(backend=backend, size=-1, profile=True, **opts)
    ort_frame, ort_stages = run_clip(t_ort, frames, first, args.warmup)
    objects = len(t_ort.object_ids)
    del t_ort, backend

    ops = {}
    if args.profile_frames:
        print(f"[{preset}] onnxruntime profile over {args.profile_frames} frames", flush=True)
        ops = ort_op_profile(export_dir, args, frames[:args.profile_frames], first, opts)
    return {"preset": preset, "padded": padded, "objects": objects, "export_s": export_s,
            "torch": (torch_frame, torch_stages), "onnxruntime": (ort_frame, ort_stages), "ops": ops,
            "memory_tokens": manifest.memory_tokens}


def fmt(x):
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def stage_stats(vals):
    return (float(np.percentile(vals, 50)), float(np.percentile(vals, 99)), float(np.mean(vals))) if vals else None


def render(results, args) -> str:
    import onnxruntime as ort

    lines = ["# ONNX Runtime backend vs torch backend on CPU", "",
             f"- CPU: {cpu_name()} ({os.cpu_count()} logical cores), threads: torch {args.threads}, "
             f"ONNX Runtime intra-op {args.threads}",
             f"- torch {torch.__version__}, onnxruntime {ort.__version__} (CPUExecutionProvider), s3rt {__version__}, "
             f"Python {platform.python_version()}",
             f"- ONNX Runtime session: graph optimization {args.ort_opt.upper()}, execution mode {args.ort_mode}, "
             "I/O binding into preallocated torch tensors",
             f"- synthetic clip {args.size} (padded by the tracker), {args.frames} timed frames after {args.warmup} "
             "warm-up, FP32, random weights (seed 0), tracker defaults (mem_every 5, 5 memory frames, top-k 30); the "
             "two backends run one after the other in one process",
             ""]
    for r in results:
        tf, ts = r["torch"]
        of, os_ = r["onnxruntime"]
        lines.append(f"## {r['preset']} at {r['padded'][0]}x{r['padded'][1]}, {r['objects']} objects, "
                     f"{r['memory_tokens']} memory tokens")
        lines.append("")
        lines.append("| stage | torch p50 ms | torch p99 ms | ORT p50 ms | ORT p99 ms | torch / ORT (p50) |")
        lines.append("|---|---|---|---|---|---|")
        rows = [("frame", list(tf), list(of))] + [(s, ts.get(s, []), os_.get(s, [])) for s in STAGES]
        for name, a, b in rows:
            sa, sb = stage_stats(a), stage_stats(b)
            if sa is None and sb is None:
                continue
            ratio = f"{sa[0] / sb[0]:.2f}x" if sa and sb and sb[0] > 0 else "-"
            lines.append(f"| {name} | {fmt(sa and sa[0])} | {fmt(sa and sa[1])} | {fmt(sb and sb[0])} | "
                         f"{fmt(sb and sb[1])} | {ratio} |")
        fps_t, fps_o = 1e3 / np.median(tf), 1e3 / np.median(of)
        lines.append(f"| fps (p50) | {fps_t:.2f} | | {fps_o:.2f} | | {fps_o / fps_t:.2f}x |")
        lines.append("")
        if r["ops"]:
            lines.append("Where ONNX Runtime spends its time (profiler, ms per graph call; top operator types):")
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
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both backends (default: all)")
    p.add_argument("--ort-opt", choices=("all", "extended", "basic", "none"), default="all")
    p.add_argument("--ort-mode", choices=("sequential", "parallel"), default="sequential")
    p.add_argument("--profile-frames", type=int, default=3,
                   help="frames run again with the ONNX Runtime profiler for the per-operator table (0: skip)")
    p.add_argument("--exports", default=str(Path(tempfile.gettempdir()) / "s3rt-bench-exports"),
                   help="where the exported graphs are cached (default: a folder in the system temp)")
    p.add_argument("--out", default=str(HERE / "results" / "backends_cpu.md"))
    args = p.parse_args(argv)
    presets = args.preset or ["cutie-base", "s3-base"]
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
