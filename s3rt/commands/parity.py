"""Check exported graphs against the PyTorch reference, per graph (on inputs recorded from the
stream) and per stream (per-frame max / mean |Δ probability|, mask IoU between the backends,
J&F of each with --gt). The reference is built from the manifest's preset and its checkpoint
(--checkpoint, required when the graphs were exported from one) or its random seed.

Prints a table, writes the full report as JSON with --json, and exits with 1 when a tolerance
is exceeded (2 on bad input).
"""

from __future__ import annotations

import argparse
import json
import sys

from s3rt.commands import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", required=True, metavar="DIR", help="graphs written by s3rt export")
    parser.add_argument("--input", required=True, metavar="CLIP", help="video file, folder of frames or DAVIS sequence")
    parser.add_argument("--mask", required=True, metavar="PNG", help="the first frame's id mask")
    parser.add_argument("--gt", metavar="DIR", help="ground-truth id masks (PNGs named like the frames) for J&F")
    parser.add_argument("--backend", choices=graph_backends(), default="onnxruntime",
                        help="the backend to check (one that runs a graph set); default onnxruntime")
    parser.add_argument("--engines", metavar="DIR",
                        help="with --backend tensorrt: the engine set (s3rt build) built from --export")
    parser.add_argument("--providers", default="CPUExecutionProvider",
                        help="comma-separated ONNX Runtime execution providers (default: CPUExecutionProvider)")
    parser.add_argument("--strict-providers", action="store_true",
                        help="fail instead of warning when ONNX Runtime falls back to another provider")
    parser.add_argument("--checkpoint", metavar="PTH", help="the weights the graphs were exported from")
    parser.add_argument("--frames", type=int, metavar="N", help="use only the first N frames")
    parser.add_argument("--size", type=int, default=480,
                        help="the tracker's processing size (shorter side; -1 = native; default 480)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max |Δ probability| per frame (and atol = rtol per graph output); default 1e-4")
    parser.add_argument("--graph-tolerance", type=float, help="atol = rtol for the graph outputs (default: --tolerance)")
    reduced = parser.add_argument_group(
        "reduced-precision sets (s3rt calibrate)",
        "FP16 and INT8 sets are judged by relative error and mask agreement, not by --tolerance (which then applies "
        "only to their graphs kept in FP32). Defaults: FP16 rel L2 2e-2 and mean IoU 0.99; INT8 rel L2 1e-1, mean "
        "IoU 0.90 and a J&F drop of at most 1 point with --gt")
    reduced.add_argument("--max-rel-l2", type=float, metavar="X",
                         help="per reduced graph, ||Δ|| / ||FP32|| at most X")
    reduced.add_argument("--min-mean-iou", type=float, metavar="X",
                         help="the stream's mean mask IoU against the FP32 reference at least X")
    reduced.add_argument("--max-jf-drop", type=float, metavar="POINTS",
                         help="with --gt: J&F at most POINTS (0-100) below the reference's")
    parser.add_argument("--capture-frames", type=int, default=3,
                        help="frames whose graph inputs are recorded for the per-graph check (default 3)")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def graph_backends() -> tuple[str, ...]:
    from s3rt.runtime.backends import BACKENDS

    return tuple(name for name, e in BACKENDS.items() if e.needs != "model")


def read_gt(gt_dir, names, count):
    """Ground-truth masks for the frames, matched by name (else by order)."""
    from s3rt.io import list_masks, read_mask

    masks = list_masks(gt_dir)
    if not masks:
        raise UserError(f"no PNG masks in --gt {gt_dir}")
    if count is None:  # a video whose length is unknown before reading it: take every mask, in order
        count = len(masks)
    if names is not None and all(n in masks for n in names[:count]):
        return [read_mask(masks[n]) for n in names[:count]]
    ordered = list(masks.values())
    if len(ordered) < count:
        raise UserError(f"--gt {gt_dir} has {len(ordered)} masks for {count} frames, and their names do not match "
                        "the frames'")
    return [read_mask(p) for p in ordered[:count]]


def reduced_criteria(export, args):
    """The reduced-precision criteria with the user's overrides (None: the defaults, or an FP32 set)."""
    import dataclasses

    from s3rt.graphs import ManifestError, load_manifest
    from s3rt.parity import REDUCED_CRITERIA, lowest_precision

    given = {k: v for k, v in (("graph_rel_l2", args.max_rel_l2), ("mean_mask_iou", args.min_mean_iou),
                               ("jf_drop", args.max_jf_drop)) if v is not None}
    if not given:
        return None
    for key, v in given.items():
        if v < 0 or (key == "mean_mask_iou" and v > 1):
            raise UserError(f"--{key.replace('_', '-')}: {v} is out of range")
    try:
        precision = lowest_precision(load_manifest(export, verify=False).precisions)
    except (ManifestError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    if precision == "fp32":
        raise UserError(f"--max-rel-l2, --min-mean-iou and --max-jf-drop are for reduced-precision sets; {export} is "
                        "FP32 (use --tolerance)")
    return dataclasses.replace(REDUCED_CRITERIA[precision], **given)


def main(args: argparse.Namespace) -> int:
    from s3rt.io import InputError, open_frames, read_mask
    from s3rt.io.atomic import atomic_write
    from s3rt.parity import ParityOptions, format_report, run_parity

    if args.tolerance <= 0 or (args.graph_tolerance is not None and args.graph_tolerance <= 0):
        raise UserError("tolerances must be positive")
    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if args.json:
        from pathlib import Path

        target = Path(args.json)
        if target.is_dir():
            raise UserError(f"--json {target} is a folder; give a file name, e.g. {target / 'parity.json'}")
        if not target.parent.is_dir():
            raise UserError(f"--json {target}: the folder {target.parent} does not exist")
    try:
        source = open_frames(args.input)
        mask = read_mask(args.mask)
        count = source.num_frames if args.frames is None else min(args.frames, source.num_frames or args.frames)
        # (None for a video that does not say its length)
        gt = read_gt(args.gt, getattr(source, "names", None), count) if args.gt else None
        options = ParityOptions(max_frames=args.frames, tolerance=args.tolerance,
                                graph_tolerance=args.graph_tolerance, capture_frames=args.capture_frames,
                                size=args.size, progress=not args.quiet and sys.stderr.isatty(),
                                reduced=reduced_criteria(args.export, args))
        if args.backend == "tensorrt":
            if not args.engines:
                raise UserError("--backend tensorrt needs --engines DIR (made by `s3rt build --graphs EXPORT`)")
            backend_options = {"engines": args.engines}
        else:
            backend_options = {"providers": args.providers.split(","), "strict_providers": args.strict_providers}
        report = run_parity(args.export, source, mask, gt_masks=gt, checkpoint=args.checkpoint, backend=args.backend,
                            backend_options=backend_options, options=options)
    except (InputError, ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    except RuntimeError as e:  # a provider fallback with --strict-providers
        raise UserError(str(e)) from e
    print(format_report(report))
    if args.json:
        try:
            with atomic_write(args.json, "w") as f:
                json.dump(report, f, indent=2)
                f.write("\n")
        except OSError as e:
            raise UserError(f"cannot write --json {args.json}: {e.strerror or e}") from e
        print(f"wrote {args.json}")
    return 0 if report["passed"] else 1
