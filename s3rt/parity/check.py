"""`run_parity`: a backend against the torch reference on one clip, per stream and per graph.

Both trackers run the whole clip in lockstep; the reference records the inputs and outputs of
its graph calls on the first frames, and the other backend is then run on those recorded
inputs. Bad input (a manifest that does not match its graphs or the expected checkpoint, a
frame that does not pad to the graph set's size, more objects than it takes, mismatched
ground truth) raises a ValueError before any work starts.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s3rt.graphs import ManifestError, load_manifest, padded_size
from s3rt.parity.compare import compare_graphs, diagnose_frame, mask_iou
from s3rt.parity.recording import RecordingBackend
from s3rt.runtime.backends import Backend, create_backend
from s3rt.runtime.latency import summarize
from s3rt.runtime.tracker import Tracker

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ReducedCriteria:
    """What passes for a reduced-precision graph set, where FP32's 1e-4 on probabilities cannot
    hold by design. graph_rel_l2: per reduced graph, ||Δ|| / ||FP32|| of every output on every
    recorded call (graphs kept in FP32 keep FP32's tolerance); mean_mask_iou: the stream's mean
    mask IoU against the FP32 reference; jf_drop: with ground truth, the most J&F may fall below
    the reference's, in points (0-100)."""

    graph_rel_l2: float
    mean_mask_iou: float
    jf_drop: float | None = None


# Defaults, from the accuracy report of the bundled checkpoint (benchmarks/results/precision_accuracy_*):
# there FP16 graphs stay below 1.2e-2 relative L2 and 0.993 mean IoU; INT8 graphs below 3.6e-2, and
# 0.936 mean IoU on a DAVIS clip that the synthetic-only network tracks poorly, for a J&F drop of
# 0.36 points. The targets: FP16 mean IoU >= 0.99, INT8 J&F drop <= 1 point.
REDUCED_CRITERIA = {
    "fp16": ReducedCriteria(graph_rel_l2=2e-2, mean_mask_iou=0.99),
    "int8": ReducedCriteria(graph_rel_l2=1e-1, mean_mask_iou=0.90, jf_drop=1.0),
}
PRECISION_ORDER = ("fp32", "fp16", "int8")  # widest first


def lowest_precision(precisions: dict[str, str]) -> str:
    """The narrowest precision among a graph set's graphs ('fp32' for an FP32 export)."""
    known = [p for p in precisions.values() if p in PRECISION_ORDER]
    return max(known, key=PRECISION_ORDER.index, default="fp32")


@dataclass(frozen=True)
class ParityOptions:
    """tolerance: max |Δ probability| allowed on every frame (and atol = rtol for the graph
    outputs unless graph_tolerance is given); max_frames: use only the first N frames;
    capture_frames: frames whose graph calls are recorded for the per-graph check; size: the
    tracker's processing size (shorter side, -1 = native); keep_masks: put both backends' id
    masks in report['masks']; max_diagnoses: frames beyond tolerance whose graphs are re-checked
    on their own inputs; reduced: the criteria for a reduced-precision set (None: those of
    REDUCED_CRITERIA for its narrowest precision); FP32 sets always use the tolerances."""

    tolerance: float = DEFAULT_TOLERANCE
    graph_tolerance: float | None = None
    max_frames: int | None = None
    capture_frames: int = 3
    size: int = 480
    keep_masks: bool = False
    max_diagnoses: int = 3
    progress: bool = False
    reduced: ReducedCriteria | None = None

    @property
    def gtol(self) -> float:
        return self.tolerance if self.graph_tolerance is None else self.graph_tolerance


def run_parity(export_dir, frames, first_mask, *, gt_masks=None, extra_masks: dict | None = None, checkpoint=None,
               backend: str | Backend = "onnxruntime", backend_options: dict | None = None,
               options: ParityOptions = ParityOptions()) -> dict:
    """Compare `backend` (a registry name, made on the graphs in `export_dir` with
    `backend_options`, or a ready Backend) with the torch reference on a clip; returns the
    report dict (JSON-ready).

    frames: [T,H,W,3] uint8, a list of frames, or a FrameSource; first_mask: [H,W] ids;
    gt_masks: optional [T,H,W] ground truth for J&F; extra_masks: {frame index: mask or (mask,
    object ids)} given later in the clip (new objects); checkpoint: the weights the graphs were
    exported from (required when they were).
    """
    manifest = _load_checked_manifest(export_dir, checkpoint)
    names, total, frame_size = _frames_info(frames)
    if total is not None and options.max_frames is not None:
        total = min(total, options.max_frames)
    ids = check_inputs(manifest, frame_size, first_mask, options.size)
    extra = {int(k): (v if isinstance(v, tuple) else (v, None)) for k, v in (extra_masks or {}).items()}
    _check_object_count(manifest, ids, extra)
    gt_masks = _check_ground_truth(gt_masks, total, frame_size)

    reference, other = _make_backends(manifest, export_dir, checkpoint, backend, backend_options or {})
    t_ref = Tracker(backend=reference, size=options.size, profile=True)
    t_other = Tracker(backend=other, size=options.size, profile=True)
    precision = lowest_precision(manifest.precisions)
    criteria = None if precision == "fp32" else (options.reduced or REDUCED_CRITERIA[precision])
    rel_l2 = {} if criteria is None else {
        g: criteria.graph_rel_l2 for g, p in manifest.precisions.items() if p != "fp32"}
    stream, masks, times = _run_stream(t_ref, t_other, reference, frames, names, total, first_mask, extra, options,
                                       criteria, rel_l2)
    graphs = compare_graphs(reference.records, other, options.gtol, reference.inner, rel_l2)
    jf = _jf(("torch", other.name), masks, gt_masks, stream["frames"]) if gt_masks is not None else None
    # a reduced set: how far its masks are from the FP32 reference's, as J&F (the reference's masks as truth)
    jf_vs_reference = (None if criteria is None else
                       _jf((other.name,), masks[1:], masks[0], stream["frames"])[other.name])

    failures = _failures(stream, graphs, options) if criteria is None else \
        _reduced_failures(stream, graphs, jf, criteria, options)
    # Every failure explained by the reference's own discontinuity (not an export error)?
    # (FP32 sets only: a reduced set's differences are its rounding, by design)
    explained = bool(failures) and criteria is None and all(
        g.get("explained", False) for g in graphs.values() if not g["pass"]) and (
        stream["pass"] or (bool(stream["diagnoses"]) and all(d["model_sensitivity"] for d in stream["diagnoses"])))
    report = {
        "export": str(Path(export_dir)), "preset": manifest.preset, "checkpoint": manifest.checkpoint,
        "padded_size": list(manifest.padded_size), "frame_size": list(frame_size), "objects": ids,
        "reference": reference.describe(), "backend": other.name, "backend_description": other.describe(),
        "providers": list(getattr(other, "providers", [])),
        "tolerance": options.tolerance, "graph_tolerance": options.gtol, "capture_frames": options.capture_frames,
        "precision": precision, "precisions": manifest.precisions,
        "criteria": None if criteria is None else dataclasses.asdict(criteria),
        "graphs": graphs, "stream": stream, "jf": jf, "jf_vs_reference": jf_vs_reference,
        "speed": {name: summarize(*t) for name, t in times.items()},
        "passed": not failures, "failures": failures, "explained": explained,
    }
    if options.keep_masks:
        report["masks"] = {"torch": masks[0], other.name: masks[1]}
    return report


# ---------------------------------------------------------------------------------- checks
def _load_checked_manifest(export_dir, checkpoint):
    manifest = load_manifest(export_dir, checkpoint=checkpoint)
    if checkpoint is None and manifest.checkpoint_sha256 is not None:
        raise ManifestError(f"the graphs in {export_dir} were exported from checkpoint "
                            f"{manifest.checkpoint_file or manifest.checkpoint}: pass it (--checkpoint) so the "
                            "reference holds the same weights")
    if manifest.checkpoint_sha256 is None and manifest.seed is None:
        raise ManifestError(f"the graphs in {export_dir} hold weights of unknown origin ({manifest.checkpoint}); "
                            "there is no reference to compare with")
    return manifest


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


def check_inputs(manifest, frame_size, first_mask: np.ndarray, size: int) -> list[int]:
    """Raise ValueError (before any work) when the stream cannot run on these graphs."""
    mask = np.asarray(first_mask)
    if mask.ndim != 2 or tuple(mask.shape) != tuple(frame_size):
        raise ValueError(f"the first mask is {tuple(mask.shape)} but the frames are {tuple(frame_size)}: give the "
                         "first frame's id mask at the frames' resolution")
    ids = sorted(int(i) for i in np.unique(mask) if i != 0)
    if not ids:
        raise ValueError("the first mask has no object (all pixels are 0)")
    spec = manifest.spec
    if len(ids) > spec.max_objects:
        raise ValueError(f"the first mask has {len(ids)} objects ({ids}), but the graphs in {manifest.directory} take "
                         f"at most {spec.max_objects}: {spec.export_command(max_objects=len(ids))}")
    padded = padded_size(*frame_size, size, spec.pad_multiple)
    if padded != spec.padded_size:
        H, W = spec.padded_size
        raise ValueError(f"frames of {frame_size[0]}x{frame_size[1]} pad to {padded[0]}x{padded[1]} "
                         f"(processing size {size}), but the graphs in {manifest.directory} were exported for "
                         f"{H}x{W}: {spec.export_command(padded_size=padded)}, or give frames that pad to {H}x{W}")
    return ids


def _check_object_count(manifest, ids, extra) -> None:
    every = set(ids)
    for m_, objs in extra.values():
        every |= {int(o) for o in objs} if objs else {int(o) for o in np.unique(np.asarray(m_)) if o != 0}
    if len(every) > manifest.max_objects:
        raise ValueError(f"the masks give {len(every)} objects ({sorted(every)}), but the graphs in "
                         f"{manifest.directory} take at most {manifest.max_objects}: "
                         + manifest.spec.export_command(max_objects=len(every)))


def _check_ground_truth(gt_masks, total, frame_size):
    if gt_masks is None:
        return None
    if total is not None and len(gt_masks) < total:
        raise ValueError(f"{len(gt_masks)} ground-truth masks for {total} frames")
    gt_masks = list(gt_masks)[:total] if total is not None else list(gt_masks)
    if gt_masks and tuple(np.asarray(gt_masks[0]).shape) != tuple(frame_size):
        raise ValueError(f"ground-truth masks are {np.asarray(gt_masks[0]).shape}, frames {frame_size}")
    return gt_masks


# ------------------------------------------------------------------------------------ runs
def _make_backends(manifest, export_dir, checkpoint, backend, backend_options):
    """The torch reference (built from the manifest's preset and weights, recording) and the other."""
    from s3rt.model import build_model

    cfg = manifest.config()
    model = build_model(cfg, checkpoint, seed=manifest.seed or 0)
    if cfg.is_s3_encoder:
        model.pixel_encoder.set_export_mode(True)  # the position embedding the graphs were exported with
    reference = RecordingBackend(create_backend("torch", model=model, top_k=manifest.spec.top_k, readout="reference"))
    reference.spec = manifest.spec  # the reference runs the stream the graphs were made for
    if isinstance(backend, Backend):
        return reference, backend
    options = {"verify": False, **backend_options} if backend == "onnxruntime" else dict(backend_options)
    return reference, create_backend(backend, graphs=export_dir, **options)


def _run_stream(t_ref, t_other, reference, frames, names, total, first_mask, extra, options, criteria, rel_l2):
    """Both trackers over the clip in lockstep; the per-frame differences, masks and timings.
    Frames are diagnosed beyond the tolerance (FP32) or below the criteria's mean mask IoU."""
    other = t_other.backend
    per_frame, masks_ref, masks_other, diagnoses = [], [], [], []
    times = {"torch": ([], []), other.name: ([], [])}
    bar = None
    if options.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=f"parity {other.name} vs torch", unit="frame")
    t_start = time.perf_counter()
    for i, item in enumerate(frames):
        if options.max_frames is not None and i >= options.max_frames:
            break
        frame = item[1] if isinstance(item, tuple) else item
        mask, objects = (first_mask, None) if i == 0 else extra.get(i, (None, None))
        reference.recording = i < options.capture_frames
        reference.start_frame()
        t0 = time.perf_counter()
        a = t_ref.step(frame, mask, objects)
        t1 = time.perf_counter()
        b = t_other.step(frame, mask, objects)
        t2 = time.perf_counter()
        for name, dt, r in (("torch", t1 - t0, a), (other.name, t2 - t1, b)):
            times[name][0].append(dt)
            times[name][1].append(r.timings)
        d = (a.prob - b.prob).abs()
        label = i if names is None else names[i]
        per_frame.append({"frame": label, "max_abs_prob": float(d.max()), "mean_abs_prob": float(d.mean()),
                          "mask_iou": mask_iou(a.mask, b.mask, a.object_ids), "memory_frame": bool(a.memory_frame)})
        off = (per_frame[-1]["max_abs_prob"] > options.tolerance if criteria is None else
               not np.isfinite(per_frame[-1]["max_abs_prob"]) or per_frame[-1]["mask_iou"] < criteria.mean_mask_iou)
        if off and len(diagnoses) < options.max_diagnoses:
            diagnoses.append(diagnose_frame(label, reference.last_frame, other, options.gtol, reference.inner, rel_l2))
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
    finite = bool(all(np.isfinite(f["max_abs_prob"]) for f in per_frame))
    mean_iou = float(np.mean([f["mask_iou"] for f in per_frame]))
    stream = {
        "frames": len(per_frame),
        "max_abs_prob": worst["max_abs_prob"], "worst_frame": worst["frame"],
        "mean_abs_prob": float(np.mean([f["mean_abs_prob"] for f in per_frame])),
        "min_mask_iou": float(min(f["mask_iou"] for f in per_frame)),
        "mean_mask_iou": mean_iou,
        "finite": finite,
        "pass": (bool(all(f["max_abs_prob"] <= options.tolerance for f in per_frame)) if criteria is None else
                 finite and mean_iou >= criteria.mean_mask_iou),
        "per_frame": per_frame,
        "diagnoses": diagnoses,
        "seconds": time.perf_counter() - t_start,
    }
    return stream, (masks_ref, masks_other), times


def _jf(labels, masks, gt_masks, count) -> dict:
    from s3rt.metrics.davis import evaluate_sequence, summarize as summarize_jf

    skip = count > 2
    gt = gt_masks[:count]
    out = {}
    for label, pred in zip(labels, masks):
        s = summarize_jf(evaluate_sequence(pred, gt, skip_first_last=skip))
        out[label] = {"J&F": s["J&F-Mean"], "J": s["J-Mean"], "F": s["F-Mean"]}
    return out


def _failures(stream, graphs, options) -> list[str]:
    failures = []
    if not stream["pass"]:
        failures.append(f"stream: max |Δ prob| {stream['max_abs_prob']:.2e} > {options.tolerance:.0e} (frame "
                        f"{stream['worst_frame']})")
    for name, g in graphs.items():
        if not g["pass"]:
            bad = [o for o, v in g["outputs"].items() if not v["pass"]]
            failures.append(f"graph {name}: {', '.join(bad)} beyond atol = rtol = {options.gtol:.0e} "
                            f"(max |Δ| {g['max_abs']:.2e})")
    return failures


def _reduced_failures(stream, graphs, jf, criteria: ReducedCriteria, options) -> list[str]:
    """A reduced-precision set: its reduced graphs within criteria.graph_rel_l2 (the FP32 ones
    within the tolerance), finite probabilities, the mean mask IoU and, with ground truth, the
    J&F drop."""
    failures = []
    if not stream["finite"]:
        failures.append("stream: a probability is NaN or infinite")
    if stream["mean_mask_iou"] < criteria.mean_mask_iou:
        failures.append(f"stream: mean mask IoU against the FP32 reference {stream['mean_mask_iou']:.4f} < "
                        f"{criteria.mean_mask_iou} (min {stream['min_mask_iou']:.4f})")
    if jf is not None and criteria.jf_drop is not None:
        ref, got = list(jf.values())
        drop = 100 * (ref["J&F"] - got["J&F"])
        if drop > criteria.jf_drop:
            failures.append(f"stream: J&F {100 * got['J&F']:.2f} is {drop:.2f} points below the reference's "
                            f"{100 * ref['J&F']:.2f} (at most {criteria.jf_drop})")
    for name, g in graphs.items():
        if not g["pass"]:
            bad = [o for o, v in g["outputs"].items() if not v["pass"]]
            limit = (f"relative L2 error {g['rel_l2']:.2e} > {g['rel_l2_limit']:.0e}" if "rel_l2_limit" in g else
                     f"beyond atol = rtol = {options.gtol:.0e} (max |Δ| {g['max_abs']:.2e})")
            failures.append(f"graph {name}: {', '.join(bad)} {limit}")
    return failures
