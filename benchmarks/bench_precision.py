"""FP32 / FP16 / INT8 graph sets on this CPU with ONNX Runtime: accuracy, long-run finiteness, speed.

    python benchmarks/bench_precision.py accuracy --preset cutie-test [--checkpoint bundled]
    python benchmarks/bench_precision.py finite --preset cutie-test --frames 2000
    python benchmarks/bench_precision.py speed --export cutie-base=DIR --export s3-base=DIR

accuracy: export the preset (FP32) at the padded size of the DAVIS 480p frames processed at
--size, make FP16 and INT8 sets with s3rt.calibration (calibration clips: synthetic seeds 101,
102 and DAVIS car-shadow), then track held-out clips (DAVIS blackswan, synthetic seeds 201,
202; car-shadow too, marked as seen in calibration) with each set in the tracker. Per frame:
mask IoU of FP16 / INT8 against FP32; per clip: J&F against the ground truth and against the
FP32 masks. Writes precision_accuracy_<preset>.{json,md} and a PNG of per-frame IoU.
With random weights (no --checkpoint) the masks mean nothing and neither do J&F values: the
numbers then show only how far the reduced-precision graphs move the FP32 ones.

finite: an FP16 set with long-term memory, run for --frames frames on a synthetic clip: every
output of every graph call is checked for NaN / Inf.

speed: per frame and per stage, torch eager FP32 against ONNX Runtime FP32, FP16 and INT8 on the
same clip, in one process, alternating the configurations round by round (the best round's
median is kept). INT8 sets are made here from the given FP32 sets (the rest FP32): encoder
and mask encoder INT8 in TensorRT's format (symmetric int8 activations, Q/DQ on inputs) and in
ONNX Runtime's CPU format (--int8-target cpu: uint8 activations), and in the CPU format
encoder, decoder and mask encoder ("3 graphs") or all four graphs with weights ("4 graphs": the
fusion too, which loses accuracy; see the README). Also measures
this CPU's FP32 GEMM rate (torch) and int8 GEMM rate (ONNX Runtime MatMulInteger).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("S3RT_SHARED") or next(
    (p for p in (REPO.parent / "shared", Path("/work/shared")) if p.exists()), REPO.parent / "shared"))
DAVIS = SHARED / "data" / "davis"
sys.path.insert(0, str(HERE))


def ort_dist() -> str:
    from importlib import metadata

    import onnxruntime

    names = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(name)
            names.append(name)
        except metadata.PackageNotFoundError:
            pass
    where = Path(onnxruntime.__file__).parent
    return f"onnxruntime {onnxruntime.__version__} from {where} (installed distributions: {', '.join(names) or '?'})"


def machine() -> dict:
    from bench_backends import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load_avg": os.getloadavg(), "torch": torch.__version__,
            "onnxruntime": ort_dist(), "python": platform.python_version()}


# ------------------------------------------------------------------------------ clips
def davis_clip(name, size):
    from s3rt.io import list_masks, open_frames, read_mask

    d = DAVIS / name
    names, frames = open_frames(d / "JPEGImages").read_all()
    masks = list_masks(d / "Annotations")
    gt = [np.where(read_mask(masks[n]) > 0, 1, 0).astype(np.uint8) for n in names]
    return {"name": name, "frames": frames, "gt": gt}


def synthetic(seed, frames, hw):
    from s3rt.synthetic import make_clip

    f, m = make_clip(frames, hw[0], hw[1], num_objects=2, seed=seed)
    first_ids = [i for i in np.unique(m[0]) if i]
    gt = [np.where(np.isin(x, first_ids), x, 0).astype(np.uint8) for x in m]  # objects of the first frame only
    return {"name": f"synthetic-{seed}", "frames": f, "gt": gt}


def track(export_dir, frames, first_mask, size, check_finite=False):
    from s3rt import Tracker

    t = Tracker(backend="onnxruntime", graphs=export_dir, size=size)
    masks, probs_finite = [], True
    for i, f in enumerate(frames):
        r = t.step(f, first_mask if i == 0 else None)
        masks.append(r.mask)
        probs_finite &= bool(torch.isfinite(r.prob).all())
    return masks, probs_finite


def jf(pred, gt):
    from s3rt.metrics.davis import evaluate_sequence, summarize

    s = summarize(evaluate_sequence(pred, gt, skip_first_last=True))
    return {"J&F": s["J&F-Mean"], "J": s["J-Mean"], "F": s["F-Mean"]}


def plot_iou(series: dict, path: Path, title: str) -> None:
    """A line plot of per-frame IoU (PIL only: the package has no plotting dependency)."""
    from PIL import Image, ImageDraw

    W, H, L, R, T, B = 900, 420, 70, 150, 40, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    lo = min(min(v) for v in series.values())
    lo = min(0.9, np.floor(lo * 20) / 20)
    n = max(len(v) for v in series.values())
    x = lambda i: L + (W - L - R) * i / max(1, n - 1)  # noqa: E731
    y = lambda v: T + (H - T - B) * (1.0 - (v - lo) / (1.0 - lo))  # noqa: E731
    d.rectangle([L, T, W - R, H - B], outline="black")
    for k in range(6):
        v = lo + (1.0 - lo) * k / 5
        d.line([L - 4, y(v), L, y(v)], fill="black")
        d.text((5, y(v) - 6), f"{v:.3f}", fill="black")
    for i in range(0, n, max(1, n // 10)):
        d.text((x(i) - 6, H - B + 6), str(i), fill="black")
    d.text((L, 10), title, fill="black")
    d.text(((W - R + L) // 2 - 20, H - 20), "frame", fill="black")
    colors = {"fp32": (0, 0, 0), "fp16": (0, 90, 200), "int8": (210, 60, 0)}
    for j, (name, vals) in enumerate(series.items()):
        c = colors.get(name, (0, 150, 0))
        pts = [(x(i), y(v)) for i, v in enumerate(vals)]
        d.line(pts, fill=c, width=2)
        d.line([W - R + 15, T + 20 + 20 * j, W - R + 40, T + 20 + 20 * j], fill=c, width=3)
        d.text((W - R + 45, T + 13 + 20 * j), f"{name} vs fp32", fill=c)
    img.save(path)


def accuracy(args) -> None:
    from s3rt.calibration import CalibrationOptions, calibrate
    from s3rt.export import export_graphs
    from s3rt.graphs import padded_size, processing_size
    from s3rt.model import get_config
    from s3rt.parity.compare import mask_iou

    cfg = get_config(args.preset)
    proc = processing_size(480, 854, args.size)
    padded = padded_size(480, 854, args.size, cfg.pad_multiple)
    work = Path(args.work) / f"{args.preset}-{padded[0]}x{padded[1]}-{args.checkpoint or 'random'}"
    ckpt = None
    if args.checkpoint == "bundled":
        from s3rt.model.bundled import require_bundled
        ckpt = require_bundled(args.preset)
    elif args.checkpoint:
        ckpt = args.checkpoint
    t0 = time.perf_counter()
    export_graphs(args.preset, work / "fp32", size=padded, max_objects=2, checkpoint=ckpt, progress=False, reuse=True)
    calib = [synthetic(101, 30, proc), synthetic(102, 30, proc)]
    from s3rt.calibration import CalibrationClip
    calib_clips = [CalibrationClip(c["name"], c["frames"], c["gt"][0], "synthetic") for c in calib]
    if (DAVIS / "car-shadow").is_dir():
        calib_clips.append(str(DAVIS / "car-shadow"))
    sets = {"fp32": work / "fp32"}
    made = {}
    for precision in ("fp16", "int8"):
        t1 = time.perf_counter()
        m = calibrate(work / "fp32", work / precision, CalibrationOptions(precision=precision, size=args.size,
                                                                        method=args.method),
                      clips=calib_clips, progress=False, overwrite=True, log=lambda *a: None)
        made[precision] = {"seconds": time.perf_counter() - t1,
                           "graphs": {g: {"precision": e.precision, "accuracy": e.accuracy,
                                          "kept_fp32": {k: len(v) for k, v in (e.kept_fp32 or {}).items()},
                                          "quantized": e.quantized,
                                          "bytes": sum((m.directory / f).stat().st_size for f in (e.file, e.data_file)
                                                       if f)}
                                      for g, e in m.graphs.items()}}
        sets[precision] = work / precision
    evals = []
    if (DAVIS / "blackswan").is_dir():
        evals.append(davis_clip("blackswan", proc))
    evals += [synthetic(201, 40, proc), synthetic(202, 40, proc)]
    if (DAVIS / "car-shadow").is_dir():
        c = davis_clip("car-shadow", proc)
        c["name"] += " (in the calibration set)"
        evals.append(c)
    clips = {}
    plot_series = None
    for c in evals:
        masks, finite = {}, {}
        for p, d in sets.items():
            masks[p], finite[p] = track(d, c["frames"], c["gt"][0], args.size)
        ids = [int(i) for i in np.unique(c["gt"][0]) if i]
        row = {"frames": len(c["frames"]), "finite": finite, "jf_gt": {p: jf(masks[p], c["gt"]) for p in sets}}
        for p in ("fp16", "int8"):
            ious = [mask_iou(a, b, ids) for a, b in zip(masks["fp32"], masks[p])]
            row[p] = {"iou_vs_fp32_mean": float(np.mean(ious)), "iou_vs_fp32_min": float(np.min(ious)),
                      "per_frame_iou": ious, "jf_vs_fp32": jf(masks[p], masks["fp32"]),
                      "jf_drop_points": 100 * (row["jf_gt"]["fp32"]["J&F"] - row["jf_gt"][p]["J&F"])}
        clips[c["name"]] = row
        if plot_series is None:
            plot_series = (c["name"], {p: row[p]["per_frame_iou"] for p in ("fp16", "int8")})
            plot_series[1]["fp32"] = [1.0] * len(c["frames"])
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.preset}{'' if not args.checkpoint else '-' + Path(str(args.checkpoint)).stem}"
    report = {"preset": args.preset, "checkpoint": str(ckpt) if ckpt else "random weights, seed 0",
              "padded_size": list(padded), "processing_size": args.size, "method": args.method,
              "machine": machine(), "sets": made, "clips": clips, "seconds": time.perf_counter() - t0}
    (out / f"precision_accuracy_{tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    png = out / f"precision_iou_{tag}.png"
    plot_iou({k: plot_series[1][k] for k in ("fp32", "fp16", "int8")}, png,
             f"{args.preset} ({report['checkpoint']}): per-frame mask IoU vs FP32, {plot_series[0]}")
    lines = [f"# FP16 / INT8 accuracy: {args.preset}, {report['checkpoint']}", "",
             f"Padded size {padded[0]}x{padded[1]} (DAVIS 480p at processing size {args.size}); INT8 calibration "
             f"{args.method}; calibration clips synthetic-101, synthetic-102, car-shadow. "
             f"Machine: {report['machine']['cpu']}, {report['machine']['onnxruntime']}.", ""]
    if not ckpt:
        lines += ["**Random weights**: the masks are meaningless, so J&F values mean little; IoU against FP32 shows "
                  "only how far reduced precision moves the same network.", ""]
    lines += ["| clip | frames | J&F fp32 | J&F fp16 | J&F int8 | IoU fp16 vs fp32 mean / min | IoU int8 vs fp32 "
              "mean / min | J&F int8 vs fp32 masks | INT8 J&F drop (points) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in clips.items():
        lines.append(f"| {name} | {r['frames']} | {r['jf_gt']['fp32']['J&F']:.4f} | {r['jf_gt']['fp16']['J&F']:.4f} | "
                     f"{r['jf_gt']['int8']['J&F']:.4f} | {r['fp16']['iou_vs_fp32_mean']:.4f} / "
                     f"{r['fp16']['iou_vs_fp32_min']:.4f} | {r['int8']['iou_vs_fp32_mean']:.4f} / "
                     f"{r['int8']['iou_vs_fp32_min']:.4f} | {r['int8']['jf_vs_fp32']['J&F']:.4f} | "
                     f"{r['int8']['jf_drop_points']:+.2f} |")
    lines += ["", "Per graph, on the recorded calibration inputs (max |Δ| / max |FP32| over outputs, relative L2):", "",
              "| set | graph | precision | size MiB | max rel | rel L2 | kept FP32 |", "|---|---|---|---|---|---|---|"]
    for p, s in made.items():
        for g, e in s["graphs"].items():
            mr = max(a["max_rel"] for a in e["accuracy"].values()) if e["accuracy"] else 0.0
            l2 = max(a["rel_l2"] for a in e["accuracy"].values()) if e["accuracy"] else 0.0
            kept = ", ".join(f"{k} {v}" for k, v in e["kept_fp32"].items() if k != "not_int8_op")
            lines.append(f"| {p} | {g} | {e['precision']} | {e['bytes'] / 2**20:.1f} | {mr:.1e} | {l2:.1e} | {kept} |")
    lines += ["", f"Plot: `{png.name}`.", ""]
    (out / f"precision_accuracy_{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


# ------------------------------------------------------------------------------ finite
def finite(args) -> None:
    from s3rt import Tracker
    from s3rt.calibration import CalibrationOptions, calibrate
    from s3rt.export import export_graphs
    from s3rt.runtime.backends import Backend, create_backend
    from s3rt.synthetic import make_clip

    H, W = 64, 96
    work = Path(args.work) / f"{args.preset}-{H}x{W}-longterm"
    export_graphs(args.preset, work / "fp32", size=(H, W), max_objects=2, max_mem_frames=10,
                  long_term_tokens=args.long_term_tokens, progress=False, reuse=True)
    calibrate(work / "fp32", work / "fp16", CalibrationOptions(precision="fp16", size=-1),
              clips=["synthetic:1:60"], progress=False, overwrite=True, log=lambda *a: None)

    class Checking(Backend):
        def __init__(self, inner):
            super().__init__(inner.device, inner.model_config, spec=inner.spec, source=inner.source)
            self.inner, self.name, self.bad, self.calls = inner, inner.name, [], 0

        def _run(self, graph, inputs):
            out = self.inner.run(graph, inputs)
            self.calls += 1
            for k, v in out.items():
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    self.bad.append((graph, k))
            return out

        def check_stream(self, **kw):
            self.inner.check_stream(**kw)

    backend = Checking(create_backend("onnxruntime", graphs=work / "fp16", verify=False))
    tracker = Tracker(backend=backend, size=-1)
    frames, masks = make_clip(args.frames, H, W, num_objects=2, seed=5)
    t0 = time.perf_counter()
    fill = []
    for i, f in enumerate(frames):
        tracker.step(f, masks[0] if i == 0 else None)
    report = {"preset": args.preset, "size": [H, W], "frames": args.frames, "graph_calls": backend.calls,
              "non_finite": backend.bad[:20], "non_finite_count": len(backend.bad), "long_term_tokens":
              args.long_term_tokens, "max_mem_frames": 10, "seconds": time.perf_counter() - t0,
              "machine": machine()}
    del fill
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"precision_fp16_finite_{args.preset}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}))


# ------------------------------------------------------------------------------- speed
def int8_gemm_rate(n: int = 1024, repeats: int = 5, threads: int = 2) -> float:
    """int8 GEMM rate (GOP/s) of ONNX Runtime's MatMulInteger on this CPU: uint8 x int8, the operand
    types of its x86 int8 kernels (what the CPU-format Q/DQ graphs run)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
                           helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
                          [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = np.random.randint(0, 255, (n, n), dtype=np.uint8)
    b = np.random.randint(-128, 127, (n, n), dtype=np.int8)
    s.run(None, {"a": a, "b": b})
    best = 1e9
    for _ in range(repeats):
        t0 = time.perf_counter()
        s.run(None, {"a": a, "b": b})
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def speed(args) -> None:
    from bench_backends import gemm_rate, graph_gflops

    from s3rt import Tracker
    from s3rt.calibration import CalibrationOptions, calibrate
    from s3rt.graphs import load_manifest
    from s3rt.model import build_model
    from s3rt.runtime.backends import create_backend
    from s3rt.synthetic import make_clip

    torch.set_num_threads(args.threads)
    rates = {"fp32_gemm_gflops_torch": gemm_rate(args.threads), "int8_gemm_gops_ort": int8_gemm_rate(threads=args.threads)}
    results = {}
    for item in args.export:
        preset, d = item.split("=", 1)
        d = Path(d)
        m = load_manifest(d)
        H, W = m.spec.padded_size
        sets = {"ort fp32": d}
        convolutional = ("encoder", "fusion", "decoder", "mask_encoder")  # the readout has no weight to quantize
        for name, extra in (("ort int8 (tensorrt format)", {}), ("ort int8 (cpu format)", {"int8_target": "cpu"}),
                            ("ort int8 (cpu format, 3 graphs)", {"int8_target": "cpu", "int8_graphs": (
                                "encoder", "decoder", "mask_encoder")}),  # fusion stays FP32: see the README
                            ("ort int8 (cpu format, 4 graphs)", {"int8_target": "cpu", "int8_graphs": convolutional}),
                            ("ort fp16", None)):
            target = Path(args.work) / f"{d.name}-{name.replace(' ', '_').replace(',', '').replace('(', '').replace(')', '')}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not (target / "manifest.json").is_file() or args.remake:
                opts = (CalibrationOptions(precision="fp16", size=-1, max_samples=4) if extra is None else
                        CalibrationOptions(precision="int8", other_precision="fp32", method="minmax", size=-1,
                                           max_samples=args.calib_samples, **extra))
                calibrate(d, target, opts, clips=["synthetic:1:22"], progress=False, overwrite=True,
                          log=lambda *a: None)
            sets[name] = target
        if args.skip_fp16:
            sets.pop("ort fp16")
        frames, masks = make_clip(args.frames + args.warmup, H, W, num_objects=2, seed=0)
        trackers = {}
        model = build_model(preset, seed=m.seed or 0)
        trackers["torch fp32"] = lambda: Tracker(model, backend="torch", size=-1, max_mem_frames=m.spec.max_mem_frames,
                                                 profile=True)
        for name, path in sets.items():
            backend = create_backend("onnxruntime", graphs=path, verify=False, threads=args.threads)
            trackers[name] = (lambda b=backend: Tracker(backend=b, size=-1, profile=True))
        best: dict = {}
        for r in range(args.rounds):
            for name, make in trackers.items():
                torch.set_num_threads(args.threads if name.startswith("torch") else 1)
                t = make()
                per, stages = [], defaultdict(list)
                with torch.inference_mode():
                    for i, f in enumerate(frames):
                        t0 = time.perf_counter()
                        res = t.step(f, masks[0] if i == 0 else None)
                        dt = time.perf_counter() - t0
                        if i >= args.warmup:
                            per.append(dt * 1e3)
                            for k, v in res.timings.items():
                                stages[k].append(v * 1e3)
                run = {"frame_ms": float(np.median(per)), "stages_ms": {k: float(np.median(v)) for k, v in stages.items()}}
                if name not in best or run["frame_ms"] < best[name]["frame_ms"]:
                    best[name] = run
                print(f"[{preset}] round {r} {name}: {run['frame_ms']:.0f} ms/frame", flush=True)
        del trackers, model
        gc.collect()  # before the next preset's calibration, which needs the memory
        gflops = graph_gflops(preset, (H, W), 2, m.spec.memory_tokens, m.spec.top_k)
        results[preset] = {"export": str(d), "padded": [H, W], "frames": args.frames, "best": best, "gflop": gflops}
    report = {"machine": machine(), "threads": args.threads, "rates": rates, "results": results,
              "rounds": args.rounds}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or "cpu"
    (out / f"precision_speed_{tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# CPU speed by precision ({tag})", "",
             f"{report['machine']['cpu']}, {report['machine']['cores']} cores, load average at start "
             f"{tuple(round(x, 1) for x in report['machine']['load_avg'])}; {report['machine']['onnxruntime']}; "
             f"torch {torch.__version__}, {args.threads} threads. Median ms per frame (and per stage) of the best of "
             f"{args.rounds} alternating rounds, {args.frames} frames after {args.warmup} warm-up, 2 objects, random "
             "weights. Stage columns: ms per frame (sum over the stage's calls), and GFLOP/s reached "
             "(FP32-equivalent work).", "",
             f"This CPU: FP32 GEMM {rates['fp32_gemm_gflops_torch']:.0f} GFLOP/s (torch), int8 GEMM "
             f"{rates['int8_gemm_gops_ort']:.0f} GOP/s (ONNX Runtime MatMulInteger).", ""]
    for preset, r in results.items():
        stages = sorted({k for b in r["best"].values() for k in b["stages_ms"]})
        lines += [f"## {preset} {r['padded'][0]}x{r['padded'][1]}", "",
                  "| config | ms/frame | vs torch | " + " | ".join(stages) + " |",
                  "|---|---|---|" + "---|" * len(stages)]
        base = r["best"]["torch fp32"]["frame_ms"]
        for name, b in r["best"].items():
            cells = []
            for s in stages:
                ms = b["stages_ms"].get(s)
                g = r["gflop"].get(s)
                cells.append("-" if ms is None else f"{ms:.0f}" + (f" ({g / ms * 1e3:.0f})" if g and ms else ""))
            lines.append(f"| {name} | {b['frame_ms']:.0f} | {base / b['frame_ms']:.2f}x | " + " | ".join(cells) + " |")
        lines.append("")
    (out / f"precision_speed_{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--preset", default="cutie-test")
    a.add_argument("--checkpoint", help="'bundled', a .pth, or none (random weights)")
    a.add_argument("--size", type=int, default=240, help="processing size for the DAVIS 480p clips (default 240)")
    a.add_argument("--method", default="entropy")
    f = sub.add_parser("finite")
    f.add_argument("--preset", default="cutie-test")
    f.add_argument("--frames", type=int, default=2000)
    f.add_argument("--long-term-tokens", type=int, default=10000)
    s = sub.add_parser("speed")
    s.add_argument("--export", action="append", required=True, metavar="PRESET=DIR", help="FP32 graph sets")
    s.add_argument("--frames", type=int, default=8)
    s.add_argument("--warmup", type=int, default=2)
    s.add_argument("--rounds", type=int, default=2)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--remake", action="store_true")
    # ONNX Runtime's calibrator keeps every intermediate tensor of every sample (its
    # CalibMaxIntermediateOutputs option drops them instead of merging their ranges, 1.32): s3-base at
    # 480x864 ran out of 24 GB with 8 samples. Random weights: the calibration's quality does not matter here.
    s.add_argument("--calib-samples", type=int, default=3, help="recorded calls per graph to calibrate on (default 3)")
    s.add_argument("--skip-fp16", action="store_true")
    s.add_argument("--tag")
    for p in (a, f, s):
        p.add_argument("--work", default="/tmp/s3rt-bench-precision", help="where graph sets are made")
        p.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args()
    {"accuracy": accuracy, "finite": finite, "speed": speed}[args.what](args)


if __name__ == "__main__":
    main()
