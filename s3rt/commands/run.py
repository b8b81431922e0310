"""Track objects through a video: give the first frame's mask (an id PNG), get one palette
PNG of object ids per frame (DAVIS layout), optionally an overlay video, and a latency summary.

--input is a video file, a folder of frames or a DAVIS sequence folder; --mask is the first
frame's mask, or a folder of masks named like the frames (each given at its frame: new
objects or corrections, YouTube-VOS style). Results are written to a temporary folder and
moved into --out only when the whole clip succeeded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from s3rt.cli import UserError
from s3rt.io import InputError, list_masks, open_frames, read_mask, write_mask
from s3rt.runtime.tracker import STAGES


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, backend and Cutie's inference options; shared by run, parity and the benchmarks."""
    g = parser.add_argument_group("model and backend")
    g.add_argument("--preset", default=None, help="model preset (s3rt info lists them); not needed with --export")
    g.add_argument("--checkpoint", metavar="PTH", help="official S3 / Cutie weights (default: random, seeded)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random weights when no checkpoint is given")
    g.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    g.add_argument("--export", metavar="DIR", help="exported graphs (s3rt export) for --backend onnxruntime")
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N] (torch backend)")
    g.add_argument("--fp16", action="store_true", help="FP16 autocast (torch backend on CUDA)")
    g.add_argument("--providers", default="CPUExecutionProvider",
                   help="comma-separated ONNX Runtime execution providers, in order of preference")
    g.add_argument("--strict-providers", action="store_true",
                   help="fail instead of warning when ONNX Runtime falls back to another provider")
    t = parser.add_argument_group("inference (Cutie's names and defaults)")
    t.add_argument("--size", type=int, default=480, help="shorter side to process at; -1 = native (default 480)")
    t.add_argument("--mem-every", type=int, default=5)
    t.add_argument("--max-mem-frames", type=int, default=5)
    t.add_argument("--stagger-updates", type=int, default=5)
    t.add_argument("--top-k", type=int, default=30)
    t.add_argument("--flip-aug", action="store_true")
    t.add_argument("--long-term", action="store_true", help="long-term memory (Cutie's long_term settings)")
    t.add_argument("--chunk-size", type=int, default=-1, help="objects per fusion pass; -1 = all at once")


def make_tracker(args, profile: bool = False):
    """Build the tracker the arguments describe; every bad combination is a UserError."""
    from s3rt.model import CheckpointMismatchError, build_model
    from s3rt.runtime.tracker import Tracker

    options = dict(size=args.size, mem_every=args.mem_every, max_mem_frames=args.max_mem_frames,
                   stagger_updates=args.stagger_updates, top_k=args.top_k, flip_aug=args.flip_aug,
                   use_long_term=args.long_term, chunk_size=args.chunk_size, profile=profile)
    try:
        if args.backend == "onnxruntime":
            if not args.export:
                raise UserError("--backend onnxruntime needs --export DIR (made by `s3rt export`)")
            import torch

            from s3rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
            # ONNX Runtime owns the cores; torch's idle threads between graph calls slow it down.
            torch.set_num_threads(1)
            backend = OnnxRuntimeBackend(args.export, providers=args.providers.split(","),
                                         strict_providers=args.strict_providers, device=args.device)
            if args.preset and args.preset != backend.model_config.name:
                raise UserError(f"--preset {args.preset} but {args.export} was exported from "
                                f"{backend.model_config.name}")
            return Tracker(backend=backend, **options)
        if not args.preset:
            raise UserError("--preset is required (s3rt info lists the presets)")
        if args.device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                raise UserError("--device cuda, but PyTorch sees no CUDA device; use --device cpu")
        model = build_model(args.preset, args.checkpoint, seed=args.seed)
        return Tracker(model, device=args.device, fp16=args.fp16, **options)
    except (CheckpointMismatchError, FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="VIDEO_OR_DIR", help="video file, frame folder or DAVIS sequence")
    parser.add_argument("--mask", required=True, metavar="PNG_OR_DIR", help="first-frame id mask, or a folder of masks")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the <frame>.png masks go")
    parser.add_argument("--overlay", nargs="?", const="video", choices=("video", "png"),
                        help="also write overlay.mp4 (or overlay PNGs with --overlay png)")
    parser.add_argument("--profile", action="store_true", help="time each stage (adds device synchronisation)")
    add_tracker_arguments(parser)


def _masks_by_frame(mask_arg: str, names: list[str]) -> dict[str, np.ndarray]:
    path = Path(mask_arg)
    if path.is_dir():
        found = list_masks(path)
        masks = {Path(n).stem: read_mask(p) for n, p in found.items() if Path(n).stem in set(names)}
        if not masks:
            raise UserError(f"no mask in {path} is named like a frame of the input (e.g. {names[0]}.png)")
        return masks
    return {names[0]: read_mask(path)}


def latency_summary(per_frame_ms: list[float], stage_ms: dict[str, list[float]]) -> str:
    arr = np.asarray(per_frame_ms)
    lines = [f"per frame: p50 {np.percentile(arr, 50):.1f} ms, p99 {np.percentile(arr, 99):.1f} ms, "
             f"mean {arr.mean():.1f} ms ({1000 / arr.mean():.2f} fps) over {len(arr)} frames"]
    for stage in STAGES:
        if stage_ms.get(stage):
            s = np.asarray(stage_ms[stage])
            lines.append(f"  {stage:<12} mean {s.mean():8.1f} ms  p99 {np.percentile(s, 99):8.1f} ms  ({len(s)} calls)")
    return "\n".join(lines)


def main(args) -> int:
    import time

    try:
        source = open_frames(args.input)
        names = _frame_names(source)
        masks = _masks_by_frame(args.mask, names)
    except InputError as e:
        raise UserError(str(e)) from e
    first = next(iter(source))[1]
    for name, m in masks.items():
        ids = np.unique(m)
        if ids.max() > 255:
            raise UserError(f"mask for frame {name} has object ids {ids[ids > 255][:5].tolist()}; ids must be in 1..255")
        if m.shape != first.shape[:2]:
            raise UserError(f"mask for frame {name} is {m.shape[1]}x{m.shape[0]} but the frames are "
                            f"{first.shape[1]}x{first.shape[0]}; masks must have the frame's size")
    if names[0] not in masks:
        raise UserError(f"no mask for the first frame ({names[0]}): the tracker needs one to start")
    tracker = make_tracker(args, profile=args.profile)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    per_frame, stages, results = [], {}, []
    try:
        for name, frame in tqdm(source, total=len(names), desc=f"tracking ({tracker.describe()})", unit="frame"):
            t0 = time.perf_counter()
            r = tracker.step(frame, masks.get(name))
            per_frame.append((time.perf_counter() - t0) * 1000)
            for k, v in r.timings.items():
                stages.setdefault(k, []).append(v * 1000)
            write_mask(tmp / f"{name}.png", r.mask)
            if args.overlay:
                results.append(r.mask)
        if args.overlay:
            _write_overlay(args.overlay, tmp, source, results)
    except ValueError as e:  # a bad frame or mask found mid-clip
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(str(e)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _move_into(tmp, out)
    print(latency_summary(per_frame[1:] or per_frame, stages))
    print(f"wrote {len(per_frame)} masks to {out}" + (" and the overlay" if args.overlay else ""))
    return 0


def _frame_names(source) -> list[str]:
    """Frame names without decoding: file stems for image folders, 00000... for videos."""
    names = getattr(source, "names", None)
    if names is not None:
        return list(names)
    if source.num_frames is not None:
        return [f"{i:05d}" for i in range(source.num_frames)]
    return [n for n, _ in source]  # a container without a frame count: decode once to count


def _write_overlay(kind, folder: Path, source, masks):
    from s3rt.io import write_overlay_pngs, write_overlay_video
    if kind == "png":
        write_overlay_pngs(folder / "overlay", (f for _, f in source), masks, names=_frame_names(source))
    else:
        write_overlay_video(folder / "overlay.mp4", (f for _, f in source), masks, fps=source.fps or 24.0)


def _move_into(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    for p in tmp.iterdir():
        target = out / p.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(p, target)
    tmp.rmdir()
