"""The calibration set: clips (frames and a first-frame mask) that the FP32 tracker runs over.

A clip is a DAVIS-style sequence folder (`JPEGImages/` frames and `Annotations/` masks; the
first frame's mask starts the tracker), or `synthetic[:SEED[:FRAMES]]`: a clip from
`s3rt.synthetic.make_clip` at the size the graph set is made for. The set is recorded in the
manifest by its clip names, frame count and a sha256 over every frame and first mask.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s3rt.graphs import padded_size


class CalibrationError(ValueError):
    """Bad calibration input (printed as one line by the command)."""


@dataclass
class CalibrationClip:
    name: str
    frames: np.ndarray  # [T, H, W, 3] uint8
    first_mask: np.ndarray  # [H, W] object ids
    source: str  # a folder, or 'synthetic seed S'

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:3])


DEFAULT_SYNTHETIC = ("synthetic:1", "synthetic:2")
SYNTHETIC_FRAMES = 30


def synthetic_clip(seed: int, frames: int, size: tuple[int, int], objects: int) -> CalibrationClip:
    from s3rt.synthetic import make_clip

    f, m = make_clip(frames, size[0], size[1], num_objects=max(1, objects), seed=seed)
    return CalibrationClip(f"synthetic-{seed}", f, m[0], f"synthetic seed {seed}, {frames} frames")


def load_clip(spec: str, *, size: tuple[int, int], max_objects: int, frames: int | None = None) -> CalibrationClip:
    """One clip from a --calib argument (a DAVIS-style folder or synthetic[:SEED[:FRAMES]]);
    `size` is the frame size for synthetic clips; `frames` keeps only the first N frames."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        parts = spec.split(":")[1:]
        try:
            seed = int(parts[0]) if parts and parts[0] else 0
            count = int(parts[1]) if len(parts) > 1 else (frames or SYNTHETIC_FRAMES)
        except ValueError:
            raise CalibrationError(f"--calib {spec}: write synthetic, synthetic:SEED or synthetic:SEED:FRAMES") from None
        if count < 1:
            raise CalibrationError(f"--calib {spec}: a synthetic clip needs at least one frame")
        return synthetic_clip(seed, count, size, min(max_objects, 2))
    from s3rt.io import InputError, list_masks, open_frames, read_mask

    path = Path(spec)
    if not path.is_dir():
        raise CalibrationError(f"--calib {spec}: not a folder (give a DAVIS-style sequence folder with JPEGImages/ and "
                               "Annotations/, or synthetic[:SEED[:FRAMES]])")
    images = path / "JPEGImages" if (path / "JPEGImages").is_dir() else path
    annotations = path / "Annotations"
    if not annotations.is_dir():
        raise CalibrationError(f"--calib {spec}: no Annotations/ folder with the first frame's mask")
    from s3rt.io.frames import list_images

    if not list_images(images):
        raise CalibrationError(f"--calib {spec}: the clip has no frames (no images in {images})")
    try:
        source = open_frames(images)
        names, arr = source.read_all()
        masks = list_masks(annotations)
        if not masks:
            raise CalibrationError(f"--calib {spec}: Annotations/ holds no PNG mask")
        first = masks.get(names[0]) if names else None
        first_mask = read_mask(first if first is not None else next(iter(masks.values())))
    except InputError as e:
        raise CalibrationError(f"--calib {spec}: {e}") from e
    if frames is not None:
        arr = arr[:frames]
    if len(arr) == 0:
        raise CalibrationError(f"--calib {spec}: the clip has no frames")
    if first_mask.shape != arr.shape[1:3]:
        raise CalibrationError(f"--calib {spec}: the first mask is {first_mask.shape[1]}x{first_mask.shape[0]} but the "
                               f"frames are {arr.shape[2]}x{arr.shape[1]}")
    ids = [int(i) for i in np.unique(first_mask) if i != 0]
    if not ids:
        raise CalibrationError(f"--calib {spec}: the first frame's mask has no object")
    if len(ids) > max_objects:  # keep the first max_objects ids: the graphs take no more
        first_mask = np.where(np.isin(first_mask, ids[:max_objects]), first_mask, 0).astype(first_mask.dtype)
    return CalibrationClip(path.name, arr, first_mask, str(path))


def min_frames(max_mem_frames: int, mem_every: int) -> int:
    """Frames one clip needs so that the memory fills up (the permanent frame and
    max_mem_frames - 1 working frames, one every mem_every) and at least one later frame reads
    the full memory."""
    return mem_every * (max_mem_frames - 1) + 2


def check_clips(clips: list[CalibrationClip], spec, size: int, mem_every: int) -> None:
    """Refuse a calibration set that cannot calibrate graphs of `spec` (one line each)."""
    if not clips:
        raise CalibrationError("the calibration set is empty: give clips with --calib (DAVIS-style folders or "
                               "synthetic[:SEED[:FRAMES]])")
    for c in clips:
        padded = padded_size(*c.size, size, spec.pad_multiple)
        if padded != spec.padded_size:
            H, W = spec.padded_size
            raise CalibrationError(
                f"calibration clip {c.name} has {c.size[1]}x{c.size[0]} frames, which pad to {padded[0]}x{padded[1]} "
                f"(processing size {size}), but the graph set was exported for {H}x{W}: give clips that pad to "
                f"{H}x{W}, another --size, or export for {padded[0]}x{padded[1]}")
    need = min_frames(spec.max_mem_frames, mem_every)
    longest = max(len(c.frames) for c in clips)
    if longest < need:
        raise CalibrationError(
            f"the calibration set is too short: its longest clip has {longest} frames, but the memory of these graphs "
            f"({spec.max_mem_frames} frames, one every {mem_every}) is full only from frame {need - 1}: give at least "
            f"one clip of {need} frames or more, so that later frames with a full memory are calibrated too")


def clip_set_record(clips: list[CalibrationClip]) -> dict:
    """Names, frame counts and a sha256 over every frame and first mask (for the manifest)."""
    h = hashlib.sha256()
    for c in clips:
        h.update(c.name.encode())
        h.update(np.ascontiguousarray(c.first_mask).tobytes())
        h.update(np.ascontiguousarray(c.frames).tobytes())
    return {"clips": [{"name": c.name, "source": c.source, "frames": int(len(c.frames)),
                       "size": [int(c.size[0]), int(c.size[1])]} for c in clips],
            "frames": int(sum(len(c.frames) for c in clips)), "sha256": h.hexdigest()}
