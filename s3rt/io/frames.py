"""Frames in: a video file, a folder of images, or a sequence of a DAVIS-style dataset.

`open_frames(path)` returns a `FrameSource`: iterate it for `(name, frame)` pairs, where
`frame` is an RGB uint8 array of shape (H, W, 3) and `name` is the frame's name (the image
file's stem, or the zero-padded index `00000`, `00001`, ... for a video). Sources can be
iterated more than once; nothing is decoded until you iterate.

Accepted paths
- a video file (anything OpenCV's VideoCapture opens: .mp4, .avi, .mov, .mkv, ...);
- a folder of .jpg / .jpeg / .png images, in natural order (`2.jpg` before `10.jpg`);
- a single image file (a one-frame source);
- a sequence folder in the layout `<root>/<seq>/JPEGImages/` (DAVIS's own layout);
- a dataset root with `sequence=` given: `<root>/JPEGImages/480p/<seq>` (DAVIS),
  `<root>/JPEGImages/<seq>` (YouTube-VOS) or `<root>/<seq>/JPEGImages`.

Frames are checked where they can be before decoding: an image folder holding two files
with the same name stem (`00001.jpg` and `00001.png`) is refused, and so is a frame with
more than `max_pixels` pixels (default `MAX_FRAME_PIXELS`, 40 million, enough for 8K UHD;
the environment variable `S3RT_MAX_FRAME_PIXELS` changes the default), from its header,
before any memory is spent on it. 16-bit PNGs are scaled to 8 bits (value / 257), not
clipped. A video's frames can only be checked as they are decoded: one that ends before
the frame count its container promised gives a warning when it ends.

`size` is (height, width), like the arrays. `fps` is the video's frame rate, or None for
images (unless given to `open_frames`). `len()` works when the number of frames is known:
always for images; for videos it is the container's frame count, which some containers
only estimate, and `len()` raises TypeError when the container does not say.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

# FFmpeg (inside OpenCV) prints its own complaints ("moov atom not found") straight to the
# terminal, above s3rt's one-line message. It reads this once, when it first opens a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from s3rt.io.errors import InputError, InputNotFoundError  # noqa: E402
from s3rt.io.masks import natural_key  # noqa: E402

MAX_FRAME_PIXELS = 40_000_000


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native code writes to file descriptor 2 meanwhile: OpenCV's own AVI
    reader prints "Unexpected element..." with fprintf, which no setting turns off, above
    the one line s3rt says about the same file. Python-level stderr is untouched."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def max_frame_pixels() -> int:
    """The default limit on pixels per frame: `S3RT_MAX_FRAME_PIXELS`, else `MAX_FRAME_PIXELS`."""
    env = os.environ.get("S3RT_MAX_FRAME_PIXELS")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise InputError(f"S3RT_MAX_FRAME_PIXELS must be a whole number of pixels, got {env!r}") from None
        if value > 0:
            return value
    return MAX_FRAME_PIXELS


def check_frame_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a frame above the pixel limit, before it is decoded."""
    limit = max_frame_pixels() if max_pixels is None else max_pixels
    if width <= 0 or height <= 0:
        raise InputError(f"frame {path} is {width}x{height}: no pixels")
    if width * height > limit:
        raise InputError(
            f"frame {path} is {width}x{height} ({width * height / 1e6:.1f} megapixels, "
            f"{width * height * 3 / 2**20:.0f} MiB decoded), above the limit of {limit:,} pixels per frame; "
            "shrink the frames, or raise the limit (s3rt run --max-frame-pixels, or S3RT_MAX_FRAME_PIXELS)")

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

    def check(self) -> None:
        """Check what can be checked without decoding every frame (image folders: every
        file's header opens, and gives the first frame's size within the pixel limit);
        raises InputError. Videos can only be checked while they are decoded."""

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

    def __init__(self, files: list[Path], path: Path, fps: float | None = None, max_pixels: int | None = None):
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        self.files = list(files)
        seen: dict[str, Path] = {}
        for p in self.files:
            if p.stem in seen:
                raise InputError(f"{seen[p.stem].name} and {p.name} in {p.parent} have the same frame name "
                                 f"{p.stem!r}, so their results would overwrite each other; keep one")
            seen[p.stem] = p
        self.path = path
        self.fps = fps
        self.num_frames = len(self.files)
        self.max_pixels = max_pixels
        with _open_image(self.files[0], max_pixels) as im:
            w, h = im.size
        self.size = (h, w)

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.files]

    def check(self) -> None:
        for p in self.files[1:]:
            with _open_image(p, self.max_pixels) as im:
                w, h = im.size
            if (h, w) != self.size:
                raise InputError(
                    f"frame {p} is {w}x{h} but the first frame {self.files[0].name} is "
                    f"{self.size[1]}x{self.size[0]}; all frames of a sequence must have the same size")

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for p in self.files:
            frame = _read_image_rgb(p, expect=self.size, first=self.files[0], max_pixels=self.max_pixels)
            yield p.stem, frame


def _open_image(p: Path, max_pixels: int | None = None) -> Image.Image:
    """Image.open with one-line errors, and s3rt's pixel limit in place of PIL's
    decompression-bomb limit (which is also checked from the header, before decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(p)
            except Image.DecompressionBombError:
                # Above PIL's own limit: read the header with that check off (only here), then
                # apply ours, which names the size and how to raise the limit.
                old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    im = Image.open(p)
                finally:
                    Image.MAX_IMAGE_PIXELS = old
        w, h = im.size
        try:
            check_frame_pixels(p, w, h, max_pixels)
        except InputError:
            im.close()
            raise
        return im
    except FileNotFoundError as e:
        raise InputNotFoundError(f"image not found: {p}") from e
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read image {p}: {' '.join(str(e).split())}") from e


def _read_image_rgb(p: Path, expect: tuple[int, int] | None = None, first: Path | None = None,
                    max_pixels: int | None = None) -> np.ndarray:
    """Decode an image as RGB uint8. `expect` = (h, w): refuse another size before decoding."""
    with _open_image(p, max_pixels) as im:
        w, h = im.size
        if expect is not None and (h, w) != tuple(expect):
            raise InputError(
                f"frame {p} is {w}x{h} but the first frame {first.name if first else ''} is "
                f"{expect[1]}x{expect[0]}; all frames of a sequence must have the same size")
        try:
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # 16-bit grey (PNG) opens as I;16 or I: scale 0..65535 to 0..255; convert("RGB")
                # would clip everything above 255 to white.
                grey = np.asarray(im, dtype=np.float64)
                grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
                return np.repeat(grey[:, :, None], 3, axis=2)
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"cannot read image {p}: {' '.join(str(e).split())}") from e


class VideoFileSource(FrameSource):
    """Frames decoded by OpenCV's VideoCapture, converted from BGR to RGB."""

    def __init__(self, path: Path, fps: float | None = None, max_pixels: int | None = None):
        self.path = path
        with quiet_native_stderr():
            cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise InputError(
                    f"cannot open video {path}: not a video file, or this OpenCV build has no "
                    "decoder for it (try converting it to .mp4 / .avi, or extract the frames into a folder)"
                )
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if w > 0 and h > 0:
                check_frame_pixels(path, w, h, max_pixels)
            with quiet_native_stderr():
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
        with quiet_native_stderr():
            cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InputError(f"cannot open video {self.path}")
        try:
            i = 0
            while True:
                with quiet_native_stderr():
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
            if self.num_frames is not None and i < self.num_frames:
                warnings.warn(f"video {self.path} ended after {i} frames, but its container says "
                              f"{self.num_frames}: the file may be truncated or damaged", stacklevel=2)
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
    path: str | os.PathLike, *, sequence: str | None = None, fps: float | None = None,
    max_pixels: int | None = None,
) -> FrameSource:
    """Open a video file, image folder or DAVIS-style sequence (see the module docstring).

    `fps` overrides the frame rate (a video's own rate otherwise; None for images).
    `max_pixels` refuses larger frames before decoding them (default: `max_frame_pixels()`).
    """
    try:
        return _open_frames(Path(path), sequence, fps, max_pixels)
    except InputError:
        raise
    except (OSError, ValueError) as e:  # no permission, a name too long, a NUL byte in the path
        raise InputError(f"cannot open frames {path}: {' '.join(str(e).split())}") from e


def _open_frames(path: Path, sequence, fps, max_pixels) -> FrameSource:
    if not path.exists():
        raise InputNotFoundError(f"frames not found: {path} does not exist")
    if sequence is not None:
        if not path.is_dir():
            raise InputError(f"sequence={sequence!r} needs a dataset folder, but {path} is a file")
        folder = find_sequence_dir(path, "JPEGImages", sequence)
        return ImageFolderSource(list_images(folder), folder, fps, max_pixels)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageFolderSource([path], path, fps, max_pixels)
        return VideoFileSource(path, fps, max_pixels)
    images = list_images(path)
    if images:
        return ImageFolderSource(images, path, fps, max_pixels)
    jpeg = path / "JPEGImages"
    if jpeg.is_dir():
        images = list_images(jpeg)
        if images:  # <root>/<seq>/JPEGImages
            return ImageFolderSource(images, jpeg, fps, max_pixels)
        seq_root = jpeg / "480p" if (jpeg / "480p").is_dir() else jpeg
        seqs = _subdirs(seq_root)
        if seqs:
            shown = ", ".join(seqs[:8]) + (", ..." if len(seqs) > 8 else "")
            raise InputError(
                f"{path} is a dataset root with {len(seqs)} sequences ({shown}); "
                "choose one (sequence=NAME) or pass the sequence folder itself"
            )
    raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
