"""A tour that needs no files and no arguments: load the small S3 network that ships with s3rt
(trained on synthetic clips by `s3rt train`; see training/MODEL_CARD.md), make a synthetic clip,
export the five graphs, track the clip with the torch reference and the ONNX Runtime backend in
lockstep, and write into one folder (default ./s3rt-demo):

    overlay.mp4 (or overlay/*.png)   the ONNX Runtime masks over the frames
    parity.txt, parity.json          per-graph and per-stream parity, J&F of both backends
    speed.txt                        per-frame and per-stage latency (p50 / p99) of each backend
    export/                          the graphs and manifest.json

The J&F table says how well it tracks. `--random-weights` uses seeded random weights instead
(then the masks only show that both backends agree). Random weights leave many probabilities
near the model's hard decisions (top-k membership, the object transformer's foreground masks,
S3's argmax query): on some clips a 1e-7 rounding difference flips one of them and the stream
parity fails; the report then says, per frame, whether the graphs still agree on that frame's
own inputs and whether the reference itself is discontinuous there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from s3rt.commands import UserError
from s3rt.synthetic import later_objects


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="s3rt-demo", metavar="DIR", help="output folder (default ./s3rt-demo)")
    parser.add_argument("--preset", default="s3-test", help="model preset (default s3-test, the small S3)")
    parser.add_argument("--frames", type=int, default=30, help="clip length (default 30)")
    parser.add_argument("--size", default="128x224", metavar="HxW", help="clip size (default 128x224)")
    parser.add_argument("--objects", type=int, default=3,
                        help="objects in the clip (default 3; the synthetic clip's object 2 enters later and is "
                             "given to the tracker on its first frame)")
    parser.add_argument("--random-weights", action="store_true",
                        help="seeded random weights instead of the bundled checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--clip-seed", type=int, default=1, help="seed of the synthetic clip (default 1)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="parity tolerance (default 1e-4)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from s3rt.export import ExportError, export_graphs
    from s3rt.graphs import padded_size, parse_size
    from s3rt.io import write_overlay_pngs, write_overlay_video
    from s3rt.io.atomic import atomic_write
    from s3rt.model import bundled_presets, get_config
    from s3rt.model.bundled import require_bundled
    from s3rt.parity import ParityOptions, format_report, format_speed, run_parity
    from s3rt.synthetic import make_clip

    try:
        cfg = get_config(args.preset)
        h, w = parse_size(args.size)
        if args.frames < 2 or args.objects < 1 or min(h, w) < 32:
            raise ValueError("need --frames >= 2, --objects >= 1 and a clip of at least 32x32")
        frames, masks = make_clip(args.frames, h, w, num_objects=args.objects, seed=args.clip_seed)
        checkpoint = None if args.random_weights else require_bundled(cfg.name)
    except FileNotFoundError as e:
        raise UserError(f"{e}; or pass --random-weights (presets with a bundled checkpoint: "
                        f"{', '.join(bundled_presets()) or 'none'})") from e
    except (ExportError, ValueError) as e:
        raise UserError(str(e)) from e
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file")
    progress = not args.quiet
    padded = padded_size(h, w, -1, cfg.pad_multiple)
    weights = f"random weights, seed {args.seed}" if checkpoint is None else "bundled checkpoint"
    print(f"s3rt demo: {cfg.name} ({weights}), synthetic clip of {args.frames} frames "
          f"{h}x{w} with {args.objects} objects; export at {padded[0]}x{padded[1]}", flush=True)

    export_dir = out / "export"
    try:
        export_graphs(cfg.name, export_dir, checkpoint=checkpoint, seed=args.seed, size=padded,
                      max_objects=args.objects, progress=progress, reuse=True)
    except ExportError as e:
        raise UserError(str(e)) from e
    # Objects that enter later are given on the frame where they first appear (ids of that frame only).
    extra = later_objects(masks)
    report = run_parity(export_dir, frames, masks[0], gt_masks=masks, extra_masks=extra, checkpoint=checkpoint,
                        options=ParityOptions(size=-1, tolerance=args.tolerance, keep_masks=True, progress=progress))
    ort_masks = report.pop("masks")["onnxruntime"]

    written = []
    try:
        written.append(write_overlay_video(out / "overlay.mp4", frames, ort_masks, fps=10))
    except (RuntimeError, ValueError) as e:
        print(f"no video ({e}); writing overlay PNGs", file=sys.stderr)
        write_overlay_pngs(out / "overlay", frames, ort_masks)
        written.append(out / "overlay")
    text = format_report(report)
    speed = format_speed(report["speed"], f"latency per frame and graph, ms ({report['stream']['frames']} frames, "
                                          f"first frame excluded; both backends in one process, in lockstep)")
    for name, content in (("parity.txt", text + "\n"), ("speed.txt", speed + "\n"),
                          ("parity.json", json.dumps(report, indent=2) + "\n")):
        with atomic_write(out / name, "w") as f:
            f.write(content)
        written.append(out / name)
    print()
    print(text)
    print()
    print(speed)
    print()
    print(f"demo results in {out.resolve()}: " + ", ".join(p.name + ("/" if p.is_dir() else "") for p in written)
          + ", export/")
    return 0 if report["passed"] else 1
