"""Track objects through a video: give the first frame's mask (an id PNG), get one palette
PNG of object ids per frame (DAVIS layout), optionally an overlay video, and a latency summary.

--input is a video file, a folder of frames or a DAVIS sequence folder; --mask is the first
frame's mask, or a folder of masks named like the frames (each given at its frame: new
objects or corrections, YouTube-VOS style).

Checked before any work, each refused with one line (exit code 2): frames and masks that
cannot be read, two frames with the same name, frames above --max-frame-pixels, masks that
are lossy (JPEG) or look smoothed, a mask of another aspect ratio than the frames (one of
the same aspect ratio but another size is resized, nearest, with a warning), ids outside
1..255, masks without any object, and an --out that is a file, sits in a file, is or holds
or lies in the input or mask folder, or already holds results (unless --overwrite). Image
folders are checked up front from every file's header; what only decoding or writing shows
stops the run mid-clip, with one line: an image whose data is damaged, a full disk. A video
is decoded as it is tracked: one that ends (truncated, or a frame it cannot decode) before
the frame count its container promised is tracked up to there, with a warning.
Results are written to a temporary folder beside --out and moved into place only when the
whole clip succeeded (nothing is written otherwise); --overwrite then replaces the earlier
results as a whole. Temporary folders left by a killed run are removed by the next run into
the same place.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from s3rt.commands import UserError
from s3rt.io import InputError, list_masks, open_frames, write_mask
from s3rt.io.atomic import atomic_write, make_temp_dir, remove_stale_temps
from s3rt.io.errors import OutputError
from s3rt.io.masks import MaskNote, fit_mask, read_mask_noted

MARKER = ".s3rt-run"  # written into every --out folder; --overwrite replaces folders that hold it


# ---- argument types: refused by argparse with one line, for run, parity and the benchmarks
def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"int >= {low}"
    return parse


def _size(text: str) -> int:
    value = _int_at_least(-1)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 is not a size: give the shorter side in pixels, or -1 for native")
    return value


def _chunk(text: str) -> int:
    value = _int_at_least(-1)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("give a number of objects (>= 1), or -1 for all at once")
    return value


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N")
    return text


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, backend and Cutie's inference options; shared by run, parity and the benchmarks."""
    from s3rt.runtime.backends import BACKENDS

    g = parser.add_argument_group("model and backend")
    g.add_argument("--preset", default=None, help="model preset (s3rt info lists them); not needed with --export")
    g.add_argument("--checkpoint", metavar="PTH", help="official S3 / Cutie weights (default: random, seeded)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random weights when no checkpoint is given")
    g.add_argument("--backend", choices=tuple(BACKENDS), default="torch",
                   help="; ".join(f"{e.name}: {e.about}" for e in BACKENDS.values()) + " (default torch)")
    g.add_argument("--export", metavar="DIR",
                   help="a graph set (s3rt export, s3rt calibrate) for --backend onnxruntime; with --backend "
                        "tensorrt, optional: the graph set the engines must have been built from")
    g.add_argument("--engines", metavar="DIR", help="an engine set (s3rt build) for --backend tensorrt")
    g.add_argument("--device", default="cpu", type=_device, help="cpu, cuda or cuda:N (default cpu)")
    g.add_argument("--fp16", action="store_true", help="FP16 autocast (torch backend on CUDA)")
    g.add_argument("--providers", default="CPUExecutionProvider",
                   help="comma-separated ONNX Runtime execution providers, in order of preference")
    g.add_argument("--strict-providers", action="store_true",
                   help="fail instead of warning when ONNX Runtime falls back to another provider")
    t = parser.add_argument_group(
        "inference (Cutie's names and defaults; a graph set (--export) fixes --max-mem-frames, --top-k, --flip-aug "
        "and --long-term: left out, they follow it; given, they must match it)")
    t.add_argument("--size", type=_size, default=480,
                   help="process frames with this shorter side (pixels, >= 1; frames are never enlarged), "
                        "or -1 for the native size (default 480; 0 is refused)")
    t.add_argument("--mem-every", type=_int_at_least(1), default=5, help="write memory every N frames (>= 1)")
    t.add_argument("--max-mem-frames", type=_int_at_least(2), default=None,
                   help="memory frames, the permanent first one included (>= 2; default 5)")
    t.add_argument("--stagger-updates", type=_int_at_least(1), default=5,
                   help="sensory updates between memory frames (>= 1; 0 is refused: it would never update)")
    t.add_argument("--top-k", type=_int_at_least(1), default=None, help="top-k of the memory readout (default 30)")
    t.add_argument("--flip-aug", action="store_true", default=None, help="also run the mirrored frame (default off)")
    t.add_argument("--long-term", action="store_true", default=None,
                   help="long-term memory (Cutie's long_term settings; default off)")
    t.add_argument("--resize-plain", dest="resize_antialias", action="store_false",
                   help="shrink frames with plain bilinear, as Cutie's InferenceCore does (default: antialiased, as "
                        "Cutie's evaluation loader)")
    t.add_argument("--chunk-size", type=_chunk, default=-1, help="objects per fusion pass (>= 1); -1 = all at once")


def check_tracker_arguments(args) -> None:
    """What argparse cannot check alone; every problem is a UserError, before any work."""
    from s3rt.runtime.backends import BACKENDS

    if args.backend == "torch" and args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}, but PyTorch {torch.__version__} sees no CUDA device; "
                            "use --device cpu")
        index = int(args.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {args.device}, but there are {torch.cuda.device_count()} CUDA device(s)")
    needs = BACKENDS[args.backend].needs
    engines = getattr(args, "engines", None)
    if needs == "engines" and not engines:
        raise UserError(f"--backend {args.backend} needs --engines DIR (made by `s3rt build`)")
    if needs == "graphs" and not args.export:
        raise UserError(f"--backend {args.backend} needs --export DIR (made by `s3rt export`)")
    if engines and needs != "engines":
        raise UserError(f"--engines is an engine set, which the {args.backend} backend does not run: drop --engines "
                        "or choose --backend tensorrt")
    if needs != "model":
        if args.checkpoint or args.fp16:
            raise UserError(f"--backend {args.backend} runs the weights inside --export {args.export}; drop "
                            f"{'--checkpoint' if args.checkpoint else '--fp16'}")
    elif args.export:
        raise UserError(f"--export is a graph set, which the {args.backend} backend does not run: drop --export "
                        "or choose a backend that runs one (--backend onnxruntime)")


def make_tracker(args, profile: bool = False):
    """Build the tracker the arguments describe (through the backend registry); every bad
    combination is a UserError."""
    from s3rt.model import CheckpointMismatchError, build_model
    from s3rt.runtime.backends import BACKENDS
    from s3rt.runtime.tracker import Tracker

    options = dict(size=args.size, mem_every=args.mem_every, max_mem_frames=args.max_mem_frames,
                   stagger_updates=args.stagger_updates, top_k=args.top_k, flip_aug=args.flip_aug,
                   use_long_term=args.long_term, chunk_size=args.chunk_size,
                   resize_antialias=getattr(args, "resize_antialias", True), profile=profile)
    try:
        if BACKENDS[args.backend].needs != "model":
            import torch
            torch.set_num_threads(1)  # the graph runtime owns the cores; idle torch threads would compete
            backend_options = {}
            if args.backend == "onnxruntime":
                backend_options = {"providers": args.providers.split(","), "strict_providers": args.strict_providers}
            if BACKENDS[args.backend].needs == "engines":
                backend_options = {"engines": args.engines}
            tracker = Tracker(backend=args.backend, graphs=args.export, device=args.device, **backend_options,
                              **options)
            name = tracker.backend.model_config.name
            if args.preset and args.preset != name:
                raise UserError(f"--preset {args.preset} but {args.export} was exported from {name}")
            return tracker
        if not args.preset:
            raise UserError("--preset is required (s3rt info lists the presets)")
        model = build_model(args.preset, args.checkpoint, seed=args.seed)
        return Tracker(model, backend=args.backend, device=args.device, fp16=args.fp16, **options)
    except (CheckpointMismatchError, FileNotFoundError, ValueError, RuntimeError) as e:
        raise UserError(str(e)) from e


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="VIDEO_OR_DIR", help="video file, frame folder or DAVIS sequence")
    parser.add_argument("--mask", required=True, metavar="PNG_OR_DIR", help="first-frame id mask, or a folder of masks")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the folder the <frame>.png masks go into; it must be new or empty, or hold an "
                             "earlier run's results and --overwrite be given")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run in --out, as a whole")
    parser.add_argument("--overlay", nargs="?", const="video", choices=("video", "png"),
                        help="also write overlay.mp4 (or overlay PNGs with --overlay png)")
    parser.add_argument("--profile", action="store_true", help="time each stage (adds device synchronisation)")
    parser.add_argument("--max-frame-pixels", type=_int_at_least(1), default=None, metavar="N",
                        help="refuse frames with more pixels than this before decoding them (default 40000000, "
                             "8K UHD fits; also S3RT_MAX_FRAME_PIXELS). The tracker needs roughly 1.2 kB (Cutie) "
                             "to 2.2 kB (S3) per processed pixel: at --size -1 every pixel is processed, and a "
                             "warning says so above 4 GiB")
    add_tracker_arguments(parser)


# ---- masks ---------------------------------------------------------------------------------
def _masks_by_frame(mask_arg: str, names: list[str], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The given masks by frame name, checked, at the frame size (warnings say what was changed)."""
    path = Path(mask_arg)
    if path.is_dir():
        wanted = set(names)
        found = {n: p for n, p in list_masks(path).items() if n in wanted}
        if not found:
            raise UserError(f"no mask in {path} is named like a frame of the input (e.g. {names[0]}.png)")
    else:
        found = {names[0]: path}
    masks = {}
    for name, p in found.items():
        arr, note = read_mask_noted(p)
        if note:
            warnings.warn(note, MaskNote)
        arr, note = fit_mask(arr, size, name=f"mask {p.name}")
        if note:
            warnings.warn(note, MaskNote)
        masks[name] = arr
    return masks


def _warn_tiny_objects(masks: dict[str, np.ndarray], size: tuple[int, int], process: int) -> None:
    """An object smaller than one pixel at the processing size can vanish: say so up front."""
    short = min(size)
    if process <= 0 or short <= process:
        return
    scale2 = (process / short) ** 2
    for name, m in masks.items():
        counts = np.bincount(m.ravel(), minlength=256)
        tiny = [int(i) for i in np.nonzero(counts)[0] if i and counts[i] * scale2 < 1]
        if tiny:
            warnings.warn(f"object(s) {tiny} in the mask of frame {name} cover fewer than one pixel at --size "
                          f"{process} (frames shrink {short / process:.1f}x) and may vanish; use a larger --size",
                          MaskNote)


# Peak memory per processed pixel, measured on the CPU with two objects (s3rt 0.x, PyTorch
# 2.13): the slope between 240x432 and 480x864. S3's ViT attention grows faster than this
# at large sizes, so for s3 presets it is a lower bound.
BYTES_PER_PIXEL = {"s3": 2200, "cutie": 1200}
MEMORY_WARNING_BYTES = 4 * 2**30


def memory_estimate(size: tuple[int, int], process: int, preset: str | None) -> tuple[tuple[int, int], int]:
    """The processing size (h, w) for frames of `size` at --size `process`, and roughly the
    memory the tracker needs for it, in bytes."""
    h, w = size
    scale = process / min(h, w) if process > 0 and min(h, w) > process else 1.0
    ph, pw = max(1, int(h * scale)), max(1, int(w * scale))
    family = "s3" if (preset or "").startswith("s3") else "cutie"
    return (ph, pw), ph * pw * BYTES_PER_PIXEL[family]


def _warn_memory(size: tuple[int, int], process: int, preset: str | None) -> None:
    (ph, pw), need = memory_estimate(size, process, preset)
    if need > MEMORY_WARNING_BYTES:
        warnings.warn(f"tracking at {pw}x{ph} (--size {process}) needs roughly {need / 2**30:.0f} GiB of memory "
                      f"(about {need // (ph * pw)} bytes per pixel); --size 480 needs about "
                      f"{memory_estimate(size, 480, preset)[1] / 2**30:.1f} GiB", MaskNote)


# ---- the output folder ---------------------------------------------------------------------
def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_out(out: Path, protected: list[tuple[str, str]], overwrite: bool, names: list[str]) -> None:
    """Refuse, before any work, an --out that cannot take this run's results."""
    if out.name in ("", ".", ".."):
        raise UserError(f"--out {out} is not a folder s3rt can create or replace; name a folder")
    real = Path(os.path.realpath(out))
    cwd = Path(os.path.realpath(os.getcwd()))
    if _inside(cwd, real):
        raise UserError(f"--out {out} is the current folder or holds it; choose a folder for the results only")
    for what, p in protected:
        if not p:
            continue
        rp = Path(os.path.realpath(p))
        if _inside(real, rp) or _inside(rp, real):
            relation = "is" if real == rp else ("lies inside" if _inside(real, rp) else "holds")
            raise UserError(f"--out {out} {relation} the {what} {p}; writing the results there could "
                            "overwrite it: choose another folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder (new, empty, or an earlier run's results)")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"--out {out} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} cannot be created: no permission to write in {ancestor}")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries and not overwrite:
            raise UserError(f"--out {out} already holds {len(entries)} entries (e.g. {entries[0]}); pass --overwrite "
                            "to replace an earlier run's results as a whole, or choose a new folder")
        if entries:
            ours = {f"{n}.png" for n in names} | {"overlay", "overlay.mp4", MARKER}
            foreign = [e for e in entries if e not in ours]
            if foreign and MARKER not in entries:
                raise UserError(f"--out {out} holds files that s3rt run did not write (e.g. {foreign[0]}), and "
                                "--overwrite replaces the whole folder: choose another folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"--out {out}: no permission to write in it")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished results into place; an earlier results folder is replaced as a whole
    (set aside, then removed), so old and new results never mix."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        os.replace(tmp, out)
        return
    old = make_temp_dir(out, "old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if not out.exists():
            os.replace(old, out)  # put the earlier results back
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---- the command ---------------------------------------------------------------------------
def main(args) -> int:
    for flag in ("input", "mask", "out", "checkpoint", "export"):
        value = getattr(args, flag)
        if value is not None and ("\0" in value or not value.strip()):
            raise UserError(f"--{flag} {value!r} is not a usable path")
    check_tracker_arguments(args)
    try:
        source = open_frames(args.input, max_pixels=args.max_frame_pixels)
        source.check()
        names = _frame_names(source)
        masks = _masks_by_frame(args.mask, names, source.size)
    except InputError as e:
        raise UserError(str(e)) from e
    if names[0] not in masks:
        raise UserError(f"no mask for the first frame ({names[0]}): the tracker needs one to start")
    if not any(m.any() for m in masks.values()):
        raise UserError(f"the mask{'s' if len(masks) > 1 else ''} in {args.mask} hold no object (every pixel is 0): "
                        "nothing to track")
    if not masks[names[0]].any():
        warnings.warn("the first frame's mask has no object: frames stay empty until the first mask with one",
                      MaskNote)
    _warn_tiny_objects(masks, source.size, args.size)
    _warn_memory(source.size, args.size, args.preset)

    out = Path(os.path.abspath(args.out))
    protected = [("input", args.input), ("frame folder", str(source.path)), ("mask", args.mask),
                 ("checkpoint", args.checkpoint), ("graph set", args.export)]
    _check_out(out, protected, args.overwrite, names)

    tracker = make_tracker(args, profile=args.profile)
    remove_stale_temps(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(out)
    except OSError as e:
        raise UserError(f"cannot create the results folder beside {out}: {e.strerror or e}") from e
    frame_s, graph_s, results = [], [], []
    try:
        with atomic_write(tmp / MARKER, "w") as f:
            json.dump({"written_by": "s3rt run", "input": str(args.input), "mask": str(args.mask)}, f)
            f.write("\n")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="segmenting without any memory")  # said above
            for name, frame in tqdm(source, total=len(names), desc=f"tracking ({tracker.describe()})", unit="frame",
                                    disable=None):
                t0 = time.perf_counter()
                r = tracker.step(frame, masks.get(name))
                frame_s.append(time.perf_counter() - t0)
                graph_s.append(r.timings)
                write_mask(tmp / f"{name}.png", r.mask)
                if args.overlay:
                    results.append(r.mask)
        if args.overlay:
            _write_overlay(args.overlay, tmp, source, results)
        _replace_dir(tmp, out)
    except ValueError as e:  # a bad frame found mid-clip (a corrupt video frame)
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{e}; nothing was written to {out}") from e
    except OSError as e:  # disk full, permissions changed under us, a video that came out short
        shutil.rmtree(tmp, ignore_errors=True)
        detail = str(e) if isinstance(e, OutputError) else (e.strerror or str(e))
        raise UserError(f"cannot write the results: {detail}; nothing was written to {out}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    from s3rt.runtime.latency import format_summary, summarize
    print(format_summary(summarize(frame_s, graph_s)))
    print(f"wrote {len(frame_s)} masks to {out}" + (" and the overlay" if args.overlay else ""))
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
        write_overlay_pngs(folder / "overlay", (f for _, f in source), masks,
                           names=[n for n, _ in zip(_frame_names(source), masks)])
    else:
        write_overlay_video(folder / "overlay.mp4", (f for _, f in source), masks, fps=source.fps or 24.0)
