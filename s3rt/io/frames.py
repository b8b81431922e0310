"""Frames in: a video file, a folder of images, or a sequence of a DAVIS-style dataset.

`open_frames(path)` returns a `FrameSource`: iterate it for `(name, frame)` pairs, where
`frame` is an RGB uint8 array of shape (H, W, 3) and `name` is the frame's name (the image
file's stem, or the zero-padded index `00000`, `00001`, ... for a video). Sources can be
iterated more than once; nothing is decoded until you iterate.

Accepted paths
- a video file (anything OpenCV's VideoCapture opens: .mp4, .avi, .mov, .mkv, ...);
- a folder of .jpg / .jpeg / .png images, in natural order (`2.jpg` before `10.jpg`);
- a single image file (a one-frame source);
- a sequence folder in the layout `<root>/<seq>/JPEGImages/` (as in `shared/data/davis/`);
- a dataset root with `sequence=` given: `<root>/JPEGImages/480p/<seq>` (DAVIS),
  `<root>/JPEGImages/<seq>` (YouTube-VOS) or `<root>/<seq>/JPEGImages`.

`size` is (height, width), like the arrays. `fps` is the video's frame rate, or None for
images (unless given to `open_frames`). `len()` works when the number of frames is known:
always for images; for videos it is the container's frame count, which some containers
only estimate, and `len()` raises TypeError when the container does not say.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

from s3rt.io.errors import InputError, InputNotFoundError
from s3rt.io.masks import natural_key

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Extensions tried as images first; anything else that is a file goes to VideoCapture.


class FrameSource:
    """A re-iterable stream of `(name, RGB uint8 HxWx3 frame)` pairs."""

    path: Path
    fps: float | None
    size: tuple[int, int]  # (height, width)
    num_frames: int | None

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(f"the number of frames of {self.path} is not known before reading it")
        return self.num_frames

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_all(self) -> tuple[list[str], np.ndarray]:
        """Decode every frame: (names, frames [T, H, W, 3] uint8)."""
        names, frames = [], []
        for name, frame in self:
            names.append(name)
            frames.append(frame)
        if not frames:
            return names, np.zeros((0, *self.size, 3), np.uint8)
        return names, np.stack(frames)

    def __repr__(self) -> str:
        n = "?" if self.num_frames is None else self.num_frames
        return f"{type(self).__name__}({str(self.path)!r}, frames={n}, size={self.size}, fps={self.fps})"


class ImageFolderSource(FrameSource):
    """Frames from image files (all must have the same size)."""

    def __init__(self, files: list[Path], path: Path, fps: float | None = None):
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        self.files = list(files)
        self.path = path
        self.fps = fps
        self.num_frames = len(self.files)
        try:
            with Image.open(self.files[0]) as im:
                w, h = im.size
        except (OSError, SyntaxError) as e:
            raise InputError(f"cannot read image {self.files[0]}: {e}") from e
        self.size = (h, w)

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.files]

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for p in self.files:
            frame = _read_image_rgb(p)
            if frame.shape[:2] != self.size:
                raise InputError(
                    f"frame {p} is {frame.shape[1]}x{frame.shape[0]} but the first frame "
                    f"{self.files[0].name} is {self.size[1]}x{self.size[0]}; all frames of a "
                    "sequence must have the same size"
                )
            yield p.stem, frame


def _read_image_rgb(p: Path) -> np.ndarray:
    try:
        with Image.open(p) as im:
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError as e:
        raise InputNotFoundError(f"image not found: {p}") from e
    except (OSError, SyntaxError) as e:
        raise InputError(f"cannot read image {p}: {e}") from e


class VideoFileSource(FrameSource):
    """Frames decoded by OpenCV's VideoCapture, converted from BGR to RGB."""

    def __init__(self, path: Path, fps: float | None = None):
        self.path = path
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise InputError(
                    f"cannot open video {path}: not a video file, or this OpenCV build has no "
                    "decoder for it (try converting it to .mp4 / .avi, or extract the frames into a folder)"
                )
            ok, frame = cap.read()
            if not ok or frame is None:
                raise InputError(f"video {path} has no readable frames (empty or corrupt file)")
            self.size = (int(frame.shape[0]), int(frame.shape[1]))
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self.num_frames = int(count) if count and np.isfinite(count) and count > 0 else None
            video_fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps is not None else (
                float(video_fps) if video_fps and np.isfinite(video_fps) and video_fps > 0 else None
            )
        finally:
            cap.release()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InputError(f"cannot open video {self.path}")
        try:
            i = 0
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                if frame.ndim == 2:
                    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
                else:
                    frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                yield f"{i:05d}", frame
                i += 1
            if i == 0:
                raise InputError(f"video {self.path} has no readable frames")
        finally:
            cap.release()


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (hidden files skipped), in natural order."""
    files = [
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    files.sort(key=lambda p: natural_key(p.name))
    return files


def _subdirs(folder: Path) -> list[str]:
    return sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=natural_key)


def find_sequence_dir(root: str | os.PathLike, kind: str, sequence: str) -> Path:
    """The folder of one sequence in a dataset root, for `kind` 'JPEGImages' or 'Annotations'.

    Tried in order: `<root>/<kind>/480p/<seq>`, `<root>/<kind>/<seq>`, `<root>/<seq>/<kind>`.
    """
    root = Path(root)
    candidates = [root / kind / "480p" / sequence, root / kind / sequence, root / sequence / kind]
    for c in candidates:
        if c.is_dir():
            return c
    raise InputNotFoundError(
        f"sequence {sequence!r} not found under {root}; looked for "
        + ", ".join(str(c) for c in candidates)
    )


def open_frames(
    path: str | os.PathLike, *, sequence: str | None = None, fps: float | None = None
) -> FrameSource:
    """Open a video file, image folder or DAVIS-style sequence (see the module docstring).

    `fps` overrides the frame rate (a video's own rate otherwise; None for images).
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"frames not found: {path} does not exist")
    if sequence is not None:
        if not path.is_dir():
            raise InputError(f"sequence={sequence!r} needs a dataset folder, but {path} is a file")
        folder = find_sequence_dir(path, "JPEGImages", sequence)
        return ImageFolderSource(list_images(folder), folder, fps)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageFolderSource([path], path, fps)
        return VideoFileSource(path, fps)
    images = list_images(path)
    if images:
        return ImageFolderSource(images, path, fps)
    jpeg = path / "JPEGImages"
    if jpeg.is_dir():
        images = list_images(jpeg)
        if images:  # <root>/<seq>/JPEGImages
            return ImageFolderSource(images, jpeg, fps)
        seq_root = jpeg / "480p" if (jpeg / "480p").is_dir() else jpeg
        seqs = _subdirs(seq_root)
        if seqs:
            shown = ", ".join(seqs[:8]) + (", ..." if len(seqs) > 8 else "")
            raise InputError(
                f"{path} is a dataset root with {len(seqs)} sequences ({shown}); "
                "choose one (sequence=NAME) or pass the sequence folder itself"
            )
    raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
