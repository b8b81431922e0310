"""Masks drawn over frames, written as PNG images or a video.

Each object id gets its DAVIS palette colour (1 red, 2 green, 3 olive, ...), blended over
the frame with `alpha`, with a solid 1-px outline so that touching objects stay apart.
Writers are atomic: a video is encoded into a temporary file beside the target and renamed
when it is complete, so an interrupted run never leaves a truncated video under the final
name. OpenCV's encoder does not report write errors (a full disk gives a short, unplayable
file), so before the rename the video is re-opened and its frames counted; a video that does
not hold every frame written is a `VideoWriteError` and is not kept.

Video codecs depend on the OpenCV build: `.mp4` uses 'mp4v'; `.avi` uses 'MJPG' (then
'XVID'); `.mkv` uses 'XVID' (then 'MJPG'). `video_codecs()` says which ones work here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from PIL import Image

from s3rt.io.atomic import atomic_write
from s3rt.io.errors import OutputError
from s3rt.io.masks import davis_palette

_PALETTE = davis_palette()

FOURCCS = {
    ".mp4": ("mp4v",),
    ".m4v": ("mp4v",),
    ".mov": ("mp4v",),
    ".avi": ("MJPG", "XVID"),
    ".mkv": ("XVID", "MJPG"),
}


def overlay(
    frame: np.ndarray,
    ids: np.ndarray,
    *,
    alpha: float = 0.5,
    outline: bool = True,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Blend an id mask (HxW) over an RGB frame (HxWx3 uint8); returns a new uint8 frame."""
    frame = np.asarray(frame)
    ids = np.asarray(ids)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"overlay: frame must be HxWx3, got shape {frame.shape}")
    if ids.shape != frame.shape[:2]:
        raise ValueError(f"overlay: mask is {ids.shape} but the frame is {frame.shape[:2]}")
    pal = _PALETTE if palette is None else np.asarray(palette, np.uint8).reshape(-1, 3)
    idx = ids.astype(np.intp) % len(pal)
    colours = pal[idx].astype(np.float32)
    fg = ids > 0
    out = frame.astype(np.float32)
    out[fg] = out[fg] * (1.0 - alpha) + colours[fg] * alpha
    if outline:
        edge = np.zeros(ids.shape, bool)
        dx = ids[:, 1:] != ids[:, :-1]
        dy = ids[1:, :] != ids[:-1, :]
        edge[:, 1:] |= dx
        edge[:, :-1] |= dx
        edge[1:, :] |= dy
        edge[:-1, :] |= dy
        edge &= fg
        out[edge] = colours[edge]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def video_codecs(suffix: str = ".mp4") -> list[str]:
    """The FourCCs that this OpenCV build can encode for a file extension (probed on a temp file)."""
    import tempfile

    ok = []
    with tempfile.TemporaryDirectory() as d:
        for cc in FOURCCS.get(suffix.lower(), ()):
            p = os.path.join(d, f"probe{suffix}")
            w = cv2.VideoWriter(p, cv2.VideoWriter_fourcc(*cc), 10.0, (32, 32))
            if w.isOpened():
                ok.append(cc)
            w.release()
    return ok


class VideoWriteError(OutputError, RuntimeError):
    """A video that could not be encoded or was not written completely."""


def count_video_frames(path: str | os.PathLike) -> int:
    """Frames that OpenCV can decode from `path` (0 if it cannot open it)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


class VideoWriter:
    """Atomic RGB video writer over cv2.VideoWriter.

    The size comes from the first frame; every later frame must match it. Use as a context
    manager: on normal exit the video is finalised and renamed to `path`; on an exception
    the temporary file is deleted.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 24.0, fourcc: str | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if fourcc is None and suffix not in FOURCCS:
            raise ValueError(
                f"unsupported video extension {self.path.suffix!r}; use one of {', '.join(FOURCCS)}"
            )
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.fourccs = (fourcc,) if fourcc else FOURCCS[suffix]
        self.fourcc: str | None = None
        self.size: tuple[int, int] | None = None  # (height, width)
        self.frames_written = 0
        self._cm = None
        self._tmp: Path | None = None
        self._writer = None

    def _open(self, h: int, w: int) -> None:
        self._cm = atomic_write(self.path)
        self._tmp = self._cm.__enter__()
        for cc in self.fourccs:
            writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*cc), self.fps, (w, h))
            if writer.isOpened():
                self._writer, self.fourcc = writer, cc
                break
            writer.release()
        if self._writer is None:
            self._abort()
            raise VideoWriteError(
                f"this OpenCV build cannot encode {self.path.suffix} video (tried "
                f"{', '.join(self.fourccs)}); write .avi (MJPG) or PNG frames instead"
            )
        self.size = (h, w)

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"VideoWriter.write: expected an HxWx3 uint8 RGB frame, got {frame.shape} {frame.dtype}")
        if self._writer is None:
            if self.frames_written:
                raise RuntimeError("VideoWriter is closed")
            self._open(frame.shape[0], frame.shape[1])
        if frame.shape[:2] != self.size:
            raise ValueError(f"VideoWriter.write: frame is {frame.shape[:2]}, the video is {self.size}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> Path:
        """Finalise the video and move it to `path`."""
        if self._writer is None:
            raise RuntimeError(f"no frames were written to {self.path}")
        self._writer.release()
        self._writer = None
        if self._tmp is None or not self._tmp.exists() or self._tmp.stat().st_size == 0:
            self._abort()
            raise VideoWriteError(f"OpenCV wrote nothing for {self.path} (codec {self.fourcc}); is the disk full?")
        got = count_video_frames(self._tmp)
        if got != self.frames_written:
            self._abort()
            raise VideoWriteError(
                f"the video {self.path} came out with {got} of its {self.frames_written} frames, so it was not "
                "kept; is the disk full? Free some space, or write overlay PNGs (--overlay png)")
        cm, self._cm = self._cm, None
        cm.__exit__(None, None, None)
        return self.path

    def _abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._cm is not None:
            cm, self._cm = self._cm, None
            err = RuntimeError("video writing aborted")
            try:
                cm.__exit__(RuntimeError, err, None)
            except RuntimeError as e:
                if e is not err:
                    raise

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def write_overlay_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    masks: Iterable[np.ndarray],
    *,
    fps: float = 24.0,
    alpha: float = 0.5,
    fourcc: str | None = None,
) -> Path:
    """Blend `masks` over `frames` (pairwise, same length) and encode them into `path`.

    `frames` may be arrays or the `(name, frame)` pairs of a `FrameSource`.
    """
    with VideoWriter(path, fps=fps, fourcc=fourcc) as w:
        for frame, ids in _pairs(frames, masks):
            if isinstance(frame, tuple):  # (name, frame) from a FrameSource
                frame = frame[1]
            w.write(overlay(frame, ids, alpha=alpha))
    return Path(path)


def write_overlay_pngs(
    out_dir: str | os.PathLike,
    frames: Iterable[np.ndarray],
    masks: Iterable[np.ndarray],
    names: Iterable[str] | None = None,
    *,
    alpha: float = 0.5,
) -> list[Path]:
    """Write one `<name>.png` overlay per frame into `out_dir`.

    Names come from `names`, else from `(name, frame)` pairs (a `FrameSource`), else 00000, ...
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names_it = iter(names) if names is not None else None
    written = []
    for i, (frame, ids) in enumerate(_pairs(frames, masks)):
        if isinstance(frame, tuple):  # (name, frame) from a FrameSource
            frame_name, frame = frame
        else:
            frame_name = f"{i:05d}"
        name = next(names_it) if names_it is not None else frame_name
        p = out_dir / f"{name}.png"
        with atomic_write(p) as tmp:
            Image.fromarray(overlay(frame, ids, alpha=alpha)).save(tmp, format="PNG")
        written.append(p)
    return written


def _pairs(frames, masks):
    fi, mi = iter(frames), iter(masks)
    sentinel = object()
    i = 0
    while True:
        f, m = next(fi, sentinel), next(mi, sentinel)
        if f is sentinel and m is sentinel:
            return
        if f is sentinel or m is sentinel:
            raise ValueError(f"frames and masks differ in length (one ran out after {i})")
        yield f, m
        i += 1
