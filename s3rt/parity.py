"""Parity of an exported graph set against the PyTorch reference (DESIGN.md, "Parity and speed").

Two levels, both in FP32 against the torch backend built from the manifest's preset (and the
checkpoint it names, or its random seed):

- per graph: the torch backend is wrapped so that it records the inputs and outputs of every
  graph call on the first few frames of the stream; the other backend then runs the same
  graphs on those recorded inputs, and each output is compared (max / mean |Δ|, max relative
  error, and an elementwise |Δ| <= atol + rtol * |ref| test as Polygraphy does);
- per stream: both trackers run the whole clip in lockstep; per frame the max and mean
  |Δ probability|, the mask IoU between the backends, and J&F of each against the ground truth
  when there is one.

`run_parity(...)` returns a report dict (JSON-ready); `format_report` and `format_speed` turn
it into text tables. Bad input (a manifest that does not match its graphs or the expected
checkpoint, a frame that does not pad to the exported size, more objects than the export
takes, mismatched ground truth) raises a ValueError before any work starts.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from s3rt.runtime.backends.base import Backend
from s3rt.runtime.tracker import STAGES, Tracker

DEFAULT_TOLERANCE = 1e-4


class RecordingBackend(Backend):
    """Wraps a backend and keeps copies of graph inputs and outputs: while `recording`, of the
    first `per_graph` calls of each graph (`records`); with `keep_last`, of every call since the
    last `start_frame()` (`last_frame`, to diagnose a frame that fails)."""

    def __init__(self, inner: Backend, per_graph: int = 3, keep_last: bool = True):
        super().__init__(inner.device, inner.dtype)
        self.inner = inner
        self.name = inner.name
        self.per_graph = per_graph
        self.recording = True
        self.keep_last = keep_last
        self.records: list[tuple[str, dict, dict]] = []
        self.last_frame: list[tuple[str, dict, dict]] = []
        self._counts: dict[str, int] = defaultdict(int)
        for attr in ("model", "model_config", "top_k"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))

    def start_frame(self) -> None:
        self.last_frame = []

    def run(self, graph, inputs):
        out = self.inner.run(graph, inputs)
        keep = self.recording and self._counts[graph] < self.per_graph
        if keep or self.keep_last:
            rec = (graph, {k: v.detach().clone() for k, v in inputs.items()},
                   {k: v.detach().clone() for k, v in out.items()})
            if keep:
                self._counts[graph] += 1
                self.records.append(rec)
            if self.keep_last:
                self.last_frame.append(rec)
        return out

    def check_stream(self, **kw):
        self.inner.check_stream(**kw)

    def describe(self):
        return self.inner.describe()

    def synchronize(self):
        self.inner.synchronize()


# ------------------------------------------------------------------------------ metrics
def compare(ref: torch.Tensor, got: torch.Tensor, atol: float, rtol: float) -> dict:
    ref, got = ref.detach().float().cpu(), got.detach().float().cpu()
    if ref.shape != got.shape:
        return {"shape_ref": list(ref.shape), "shape_got": list(got.shape), "max_abs": math.inf,
                "mean_abs": math.inf, "max_rel": math.inf, "pass": False}
    if ref.numel() == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "max_rel": 0.0, "pass": True}
    d = (ref - got).abs()
    finite = bool(torch.isfinite(got).all())
    max_abs = float(d.max()) if finite else math.inf
    scale = float(ref.abs().max())
    return {"max_abs": max_abs, "mean_abs": float(d.mean()) if finite else math.inf,
            "max_rel": max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf),
            "pass": finite and bool((d <= atol + rtol * ref.abs()).all())}


def mask_iou(a: np.ndarray, b: np.ndarray, ids) -> float:
    """Mean IoU over object ids between two id masks (an object absent from both counts 1)."""
    vals = []
    for i in ids:
        x, y = a == i, b == i
        union = np.logical_or(x, y).sum()
        vals.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
    return float(np.mean(vals)) if vals else 1.0


def _percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"p50": None, "p99": None, "mean": None, "count": 0}
    v = np.asarray(values_ms)
    return {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "mean": float(v.mean()),
            "count": int(v.size)}


def speed_summary(frame_s: list[float], stage_s: list[dict], skip: int = 1) -> dict:
    """Per-frame and per-stage latency in ms (p50 / p99 / mean) after `skip` warm-up frames."""
    frames = [t * 1e3 for t in frame_s[skip:]] or [t * 1e3 for t in frame_s]
    stages = stage_s[skip:] or stage_s
    out = {"frame_ms": _percentiles(frames), "stages_ms": {}}
    p50 = out["frame_ms"]["p50"]
    out["fps"] = 1e3 / p50 if p50 else None
    for st in STAGES:
        out["stages_ms"][st] = _percentiles([t[st] * 1e3 for t in stages if st in t])
    return out


def compare_graphs(records, other: Backend, tol: float, reference: Backend | None = None) -> dict:
    """Run `other` on recorded (graph, inputs, reference outputs) and compare every output. With
    `reference`, a graph beyond tolerance is also checked for the reference's own sensitivity on
    its worst call (`reference_jitter`): `explained` says whether the reference itself moves as
    much when its inputs move by 1e-6 relative (a hard threshold near a tie, not an export error)."""
    from s3rt.runtime.graphs import GRAPHS

    graphs: dict[str, dict] = {}
    worst_call: dict[str, tuple[float, dict]] = {}
    for graph, inputs, ref_out in records:
        got = other.run(graph, inputs)
        g = graphs.setdefault(graph, {"calls": 0, "outputs": {}})
        g["calls"] += 1
        for name, ref in ref_out.items():
            c = compare(ref, got[name], tol, tol)
            o = g["outputs"].setdefault(name, {"max_abs": 0.0, "mean_abs": 0.0, "max_rel": 0.0, "pass": True})
            for key in ("max_abs", "mean_abs", "max_rel"):
                o[key] = max(o[key], c[key])
            o["pass"] = o["pass"] and c["pass"]
            if not c["pass"] and c["max_abs"] > worst_call.get(graph, (-1.0, None))[0]:
                worst_call[graph] = (c["max_abs"], inputs)
    for name, g in graphs.items():
        g["max_abs"] = max(o["max_abs"] for o in g["outputs"].values())
        g["max_rel"] = max(o["max_rel"] for o in g["outputs"].values())
        g["pass"] = all(o["pass"] for o in g["outputs"].values())
        if not g["pass"] and reference is not None and name in worst_call:
            g["reference_jitter"] = reference_jitter(reference, name, worst_call[name][1])
            g["explained"] = g["reference_jitter"] >= 0.5 * worst_call[name][0]
    return {k: graphs[k] for k in GRAPHS if k in graphs}


def reference_jitter(reference: Backend, graph: str, inputs: dict, trials: int = 3, rel: float = 1e-6,
                     seed: int = 0) -> float:
    """How much the reference's own outputs move when its float inputs move by `rel` (relative
    to each input's largest magnitude): large where the graph holds a hard threshold near a tie."""
    g = torch.Generator().manual_seed(seed)
    base = reference.run(graph, inputs)
    worst = 0.0
    for _ in range(trials):
        noisy = {}
        for k, v in inputs.items():
            if v.is_floating_point():
                scale = float(v.abs().max()) if v.numel() else 0.0
                noisy[k] = v + rel * scale * torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device)
            else:
                noisy[k] = v
        out = reference.run(graph, noisy)
        worst = max(worst, max(float((base[k] - out[k]).abs().max()) for k in base))
    return worst


def diagnose_frame(frame, records, other: Backend, tol: float, reference: Backend | None = None) -> dict:
    """A frame beyond tolerance: do the graphs agree on that frame's own inputs? And where one
    does not, is the reference itself that sensitive there (a hard threshold near a tie)?"""
    graphs = compare_graphs(records, other, tol, reference)
    out = {"frame": frame, "graphs": {k: {key: g[key] for key in ("max_abs", "max_rel", "pass", "reference_jitter",
                                                                   "explained") if key in g}
                                      for k, g in graphs.items()}}
    bad = [k for k, g in graphs.items() if not g["pass"]]
    if not graphs:
        out["verdict"], out["model_sensitivity"] = "no graph ran on this frame", False
    elif not bad:
        worst = max(graphs.items(), key=lambda kv: kv[1]["max_rel"])
        out["verdict"] = (f"on this frame's own inputs every graph agrees (worst: {worst[0]}, max |Δ| "
                          f"{worst[1]['max_abs']:.1e}): the difference comes from the recurrent state, where tiny "
                          "earlier differences flipped a hard decision on this frame")
        out["model_sensitivity"] = True
    else:
        notes = [f"{k} (max |Δ| {graphs[k]['max_abs']:.1e}"
                 + (f"; the reference alone moves by {graphs[k]['reference_jitter']:.1e} when its inputs move by "
                    "1e-6 relative)" if "reference_jitter" in graphs[k] else ")") for k in bad]
        out["model_sensitivity"] = all(graphs[k].get("explained", False) for k in bad)
        if out["model_sensitivity"]:
            out["verdict"] = ("on this frame's own inputs " + ", ".join(notes) + ": the reference is discontinuous "
                              "here (a hard threshold near a tie: top-k membership, the object transformer's "
                              "foreground mask or S3's argmax query), so this is rounding amplified by the model, "
                              "not an export error")
        else:
            out["verdict"] = ("on this frame's own inputs these graphs disagree while the reference is smooth there: "
                              + ", ".join(notes) + " (an export or runtime error: inspect that graph)")
    return out


# ------------------------------------------------------------------------------- checks
def padded_geometry(height: int, width: int, size: int, pad_multiple: int) -> tuple[int, int]:
    """The padded size the tracker gives a height x width frame (resize to `size`, then pad)."""
    h, w = height, width
    if size > 0 and min(h, w) > size:
        scale = size / min(h, w)
        h, w = int(h * scale), int(w * scale)
    return h + (-h) % pad_multiple, w + (-w) % pad_multiple


def _frames_info(frames):
    """(names or None, number of frames or None, first-frame size) of arrays or a FrameSource."""
    from s3rt.io.frames import FrameSource

    if isinstance(frames, FrameSource):
        names = list(frames.names) if hasattr(frames, "names") else None
        return names, frames.num_frames, tuple(frames.size)
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [T,H,W,3] RGB; got shape {frames.shape}")
        return None, frames.shape[0], tuple(frames.shape[1:3])
    frames = list(frames)
    if not frames:
        raise ValueError("no frames")
    first = frames[0][1] if isinstance(frames[0], tuple) else frames[0]
    return None, len(frames), tuple(np.asarray(first).shape[:2])


def _iter_frames(frames):
    for item in frames:
        yield item[1] if isinstance(item, tuple) else item


def check_inputs(manifest, frame_size, first_mask: np.ndarray, size: int) -> list[int]:
    """Raise ValueError (before any work) when the stream cannot run on these graphs."""
    mask = np.asarray(first_mask)
    if mask.ndim != 2 or tuple(mask.shape) != tuple(frame_size):
        raise ValueError(f"the first mask is {tuple(mask.shape)} but the frames are {tuple(frame_size)}: give the "
                         "first frame's id mask at the frames' resolution")
    ids = sorted(int(i) for i in np.unique(mask) if i != 0)
    if not ids:
        raise ValueError("the first mask has no object (all pixels are 0)")
    if len(ids) > manifest.max_objects:
        raise ValueError(f"the first mask has {len(ids)} objects ({ids}), but the graphs in {manifest.directory} take "
                         f"at most {manifest.max_objects}: export with --max-objects {len(ids)}")
    cfg = manifest.config()
    padded = padded_geometry(*frame_size, size, cfg.pad_multiple)
    if padded != tuple(manifest.padded_size):
        H, W = manifest.padded_size
        raise ValueError(f"frames of {frame_size[0]}x{frame_size[1]} pad to {padded[0]}x{padded[1]} "
                         f"(processing size {size}), but the graphs in {manifest.directory} were exported for "
                         f"{H}x{W}: export with --size {padded[0]}x{padded[1]}, or give frames that pad to {H}x{W}")
    return ids


# ---------------------------------------------------------------------------------- run
def run_parity(export_dir, frames, first_mask, *, gt_masks=None, backend: str | Backend = "onnxruntime",
               checkpoint=None, max_frames: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
               graph_tolerance: float | None = None, capture_frames: int = 3, size: int = 480,
               providers=("CPUExecutionProvider",), strict_providers: bool = False, keep_masks: bool = False,
               extra_masks: dict | None = None, max_diagnoses: int = 3, progress: bool = False) -> dict:
    """Compare `backend` (default: ONNX Runtime on the graphs in `export_dir`) with the torch
    reference on a clip. See the module docstring; returns the report dict.

    frames: [T,H,W,3] uint8, a list of frames, or a FrameSource; first_mask: [H,W] ids;
    gt_masks: optional [T,H,W] ground truth for J&F; max_frames: use only the first N frames;
    tolerance: max |Δ probability| allowed on every frame (and atol = rtol for the graph
    outputs unless graph_tolerance is given); size: the tracker's processing size (shorter
    side, -1 = native); keep_masks: put both backends' id masks (arrays) in report['masks'];
    extra_masks: {frame index: mask or (mask, object ids)} given later in the clip (new objects);
    max_diagnoses: frames beyond tolerance whose graphs are re-checked on their own inputs.
    """
    from s3rt.export.manifest import ManifestError, load_manifest
    from s3rt.model import build_model
    from s3rt.runtime.backends.torch_backend import TorchBackend

    gtol = tolerance if graph_tolerance is None else graph_tolerance
    manifest = load_manifest(export_dir, checkpoint=checkpoint)
    if checkpoint is None and manifest.checkpoint_sha256 is not None:
        raise ManifestError(f"the graphs in {export_dir} were exported from checkpoint "
                            f"{manifest.checkpoint_file or manifest.checkpoint}: pass it (--checkpoint) so the "
                            "reference holds the same weights")
    if manifest.checkpoint_sha256 is None and manifest.seed is None:
        raise ManifestError(f"the graphs in {export_dir} hold weights of unknown origin ({manifest.checkpoint}); "
                            "there is no reference to compare with")
    names, total, frame_size = _frames_info(frames)
    if total is not None and max_frames is not None:
        total = min(total, max_frames)
    ids = check_inputs(manifest, frame_size, first_mask, size)
    extra = {int(k): (v if isinstance(v, tuple) else (v, None)) for k, v in (extra_masks or {}).items()}
    every = set(ids)
    for m_, objs in extra.values():
        every |= {int(o) for o in objs} if objs else {int(o) for o in np.unique(np.asarray(m_)) if o != 0}
    if len(every) > manifest.max_objects:
        raise ValueError(f"the masks give {len(every)} objects ({sorted(every)}), but the graphs in "
                         f"{manifest.directory} take at most {manifest.max_objects}: export with --max-objects "
                         f"{len(every)}")
    if gt_masks is not None:
        if total is not None and len(gt_masks) < total:
            raise ValueError(f"{len(gt_masks)} ground-truth masks for {total} frames")
        gt_masks = list(gt_masks)[:total] if total is not None else list(gt_masks)
        if gt_masks and tuple(np.asarray(gt_masks[0]).shape) != tuple(frame_size):
            raise ValueError(f"ground-truth masks are {np.asarray(gt_masks[0]).shape}, frames {frame_size}")

    # ---- the two backends ---------------------------------------------------------------
    cfg = manifest.config()
    model = build_model(cfg, checkpoint, seed=manifest.seed or 0)
    if cfg.is_s3_encoder:
        model.pixel_encoder.set_export_mode(True)  # the position embedding the graphs were exported with
    reference = RecordingBackend(TorchBackend(model, "cpu", top_k=manifest.top_k, readout="torch"))
    if isinstance(backend, Backend):
        other = backend
    elif backend == "onnxruntime":
        from s3rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
        other = OnnxRuntimeBackend(export_dir, providers=providers, strict_providers=strict_providers,
                                   verify=False, spinning=False)
    else:
        raise ValueError(f"unknown backend {backend!r} (parity compares 'onnxruntime' or a Backend instance)")
    opts = dict(size=size, profile=True, **manifest.tracker_options())
    t_ref = Tracker(model, backend=reference, **opts)
    t_other = Tracker(backend=other, **opts)
    other_name = other.name

    # ---- per stream ---------------------------------------------------------------------
    per_frame, masks_ref, masks_other, diagnoses = [], [], [], []
    times = {"torch": ([], []), other_name: ([], [])}
    iterator = _iter_frames(frames)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=f"parity {other_name} vs torch", unit="frame")
    t_start = time.perf_counter()
    for i, frame in enumerate(iterator):
        if max_frames is not None and i >= max_frames:
            break
        mask, objects = (first_mask, None) if i == 0 else extra.get(i, (None, None))
        reference.recording = i < capture_frames
        reference.start_frame()
        t0 = time.perf_counter()
        a = t_ref.step(frame, mask, objects)
        t1 = time.perf_counter()
        b = t_other.step(frame, mask, objects)
        t2 = time.perf_counter()
        times["torch"][0].append(t1 - t0)
        times["torch"][1].append(a.timings)
        times[other_name][0].append(t2 - t1)
        times[other_name][1].append(b.timings)
        d = (a.prob - b.prob).abs()
        label = i if names is None else names[i]
        per_frame.append({"frame": label, "max_abs_prob": float(d.max()),
                          "mean_abs_prob": float(d.mean()), "mask_iou": mask_iou(a.mask, b.mask, a.object_ids),
                          "memory_frame": bool(a.memory_frame)})
        if per_frame[-1]["max_abs_prob"] > tolerance and len(diagnoses) < max_diagnoses:
            diagnoses.append(diagnose_frame(label, reference.last_frame, other, gtol, reference.inner))
        if gt_masks is not None or keep_masks:
            masks_ref.append(a.mask)
            masks_other.append(b.mask)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"max |Δp| {max(f['max_abs_prob'] for f in per_frame):.1e}")
    if bar is not None:
        bar.close()
    if not per_frame:
        raise ValueError("no frames to compare")
    worst = max(per_frame, key=lambda f: f["max_abs_prob"])
    stream = {
        "frames": len(per_frame),
        "max_abs_prob": worst["max_abs_prob"], "worst_frame": worst["frame"],
        "mean_abs_prob": float(np.mean([f["mean_abs_prob"] for f in per_frame])),
        "min_mask_iou": float(min(f["mask_iou"] for f in per_frame)),
        "mean_mask_iou": float(np.mean([f["mask_iou"] for f in per_frame])),
        "pass": bool(all(f["max_abs_prob"] <= tolerance for f in per_frame)),
        "per_frame": per_frame,
        "diagnoses": diagnoses,
        "seconds": time.perf_counter() - t_start,
    }

    # ---- per graph, on the recorded inputs -------------------------------------------------
    graphs = compare_graphs(reference.records, other, gtol, reference.inner)

    # ---- J&F -------------------------------------------------------------------------------
    jf = None
    if gt_masks is not None:
        from s3rt.metrics.davis import evaluate_sequence, summarize

        skip = len(per_frame) > 2
        gt = gt_masks[:len(per_frame)]
        jf = {}
        for label, pred in (("torch", masks_ref), (other_name, masks_other)):
            s = summarize(evaluate_sequence(pred, gt, skip_first_last=skip))
            jf[label] = {"J&F": s["J&F-Mean"], "J": s["J-Mean"], "F": s["F-Mean"]}

    failures = []
    if not stream["pass"]:
        failures.append(f"stream: max |Δ prob| {stream['max_abs_prob']:.2e} > {tolerance:.0e} (frame "
                        f"{stream['worst_frame']})")
    for name, g in graphs.items():
        if not g["pass"]:
            bad = [o for o, v in g["outputs"].items() if not v["pass"]]
            failures.append(f"graph {name}: {', '.join(bad)} beyond atol = rtol = {gtol:.0e} "
                            f"(max |Δ| {g['max_abs']:.2e})")
    # Every failure explained by the reference's own discontinuity (not an export error)?
    explained = bool(failures) and all(g.get("explained", False) for g in graphs.values() if not g["pass"]) and (
        stream["pass"] or (bool(diagnoses) and all(d["model_sensitivity"] for d in diagnoses)))
    report = {
        "export": str(Path(export_dir)), "preset": manifest.preset, "checkpoint": manifest.checkpoint,
        "padded_size": list(manifest.padded_size), "frame_size": list(frame_size), "objects": ids,
        "reference": reference.describe(), "backend": other_name, "backend_description": other.describe(),
        "providers": list(getattr(other, "providers", [])),
        "tolerance": tolerance, "graph_tolerance": gtol, "capture_frames": capture_frames,
        "graphs": graphs, "stream": stream, "jf": jf,
        "speed": {k: speed_summary(*v) for k, v in times.items()},
        "passed": not failures, "failures": failures, "explained": explained,
    }
    if keep_masks:
        report["masks"] = {"torch": masks_ref, other_name: masks_other}
    return report


# -------------------------------------------------------------------------------- text
def _e(x) -> str:
    return "inf" if x is None or (isinstance(x, float) and math.isinf(x)) else f"{x:.2e}"


def _ms(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _table(header, rows) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_report(report: dict) -> str:
    s = report["stream"]
    lines = [f"parity: {report['backend_description']}",
             f"   vs   {report['reference']}",
             f"{report['preset']} ({report['checkpoint']}), frames {report['frame_size'][0]}x{report['frame_size'][1]} "
             f"padded to {report['padded_size'][0]}x{report['padded_size'][1]}, {s['frames']} frames, objects "
             f"{report['objects']}, tolerance {report['tolerance']:.0e}", ""]
    rows = []
    for name, g in report["graphs"].items():
        for i, (out, v) in enumerate(g["outputs"].items()):
            rows.append([name if i == 0 else "", g["calls"] if i == 0 else "", out, _e(v["max_abs"]),
                         _e(v["mean_abs"]), _e(v["max_rel"]), "ok" if v["pass"] else "FAIL"])
    lines.append(f"per graph, on inputs recorded from the first {report['capture_frames']} frames "
                 f"(|Δ| <= {report['graph_tolerance']:.0e} + {report['graph_tolerance']:.0e} * |ref|):")
    lines.append(_table(["graph", "calls", "output", "max |Δ|", "mean |Δ|", "max rel", ""], rows))
    lines += ["", f"per stream ({s['frames']} frames):",
              _table(["", "value"], [
                  ["max |Δ prob|", f"{_e(s['max_abs_prob'])} (frame {s['worst_frame']})"],
                  ["mean |Δ prob|", _e(s["mean_abs_prob"])],
                  ["mask IoU between backends (min / mean)", f"{s['min_mask_iou']:.4f} / {s['mean_mask_iou']:.4f}"],
              ])]
    if report.get("jf"):
        lines += ["", _table(["J&F vs ground truth", "J&F", "J", "F"],
                             [[k, f"{v['J&F']:.3f}", f"{v['J']:.3f}", f"{v['F']:.3f}"]
                              for k, v in report["jf"].items()])]
    notes = [f"graph {name}: the reference alone moves by {g['reference_jitter']:.1e} when its inputs move by 1e-6 "
             f"relative ({'a discontinuity of the model' if g['explained'] else 'smooth: suspect the export'})"
             for name, g in report["graphs"].items() if "reference_jitter" in g]
    notes += [f"frame {dg['frame']}: {dg['verdict']}" for dg in s.get("diagnoses", [])]
    if notes:
        lines += [""] + notes
    lines.append("")
    lines.append("result: PASS" if report["passed"] else "result: FAIL\n  " + "\n  ".join(report["failures"]))
    if not report["passed"] and report.get("explained"):
        lines.append("  (every failure is explained by the reference's own discontinuity: hard thresholds near ties, "
                     "amplifying FP32 rounding; not an export error)")
    return "\n".join(lines)


def format_speed(speed: dict, title: str = "") -> str:
    """Per-frame and per-stage latency (ms, p50 / p99) for each backend, and the ratio."""
    names = list(speed)
    header = ["stage"] + [f"{n} p50" for n in names] + [f"{n} p99" for n in names]
    rows = []
    for st in ("frame",) + STAGES:
        vals = [speed[n]["frame_ms"] if st == "frame" else speed[n]["stages_ms"][st] for n in names]
        if all(v["count"] == 0 for v in vals):
            continue
        rows.append([st] + [_ms(v["p50"]) for v in vals] + [_ms(v["p99"]) for v in vals])
    rows.append(["fps (p50)"] + [f"{speed[n]['fps']:.1f}" if speed[n]["fps"] else "-" for n in names]
                + [""] * len(names))
    out = (title + "\n" if title else "") + _table(header, rows)
    if len(names) == 2 and speed[names[0]]["frame_ms"]["p50"] and speed[names[1]]["frame_ms"]["p50"]:
        r = speed[names[0]]["frame_ms"]["p50"] / speed[names[1]]["frame_ms"]["p50"]
        out += f"\n{names[1]} is {r:.2f}x the speed of {names[0]} per frame (p50)"
    return out
