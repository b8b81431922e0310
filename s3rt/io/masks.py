"""Object-id masks on disk: palette PNGs as DAVIS and YouTube-VOS store them.

A mask is a 2-D integer array: 0 = background, 1..N = objects, 255 = void in DAVIS ground
truth. On disk it is a palette ('P') PNG whose pixel values are the ids and whose palette is
the DAVIS / PASCAL-VOC colormap, exactly what the official DAVIS tools write and read.

Reading accepts:
- 'P' (palette): the indices are the ids; the palette is ignored.
- 'L' (grey): the values are the ids, except the DAVIS-2016 convention: a grey mask whose
  only values are 0 and 255 is one object, returned as 0/1 (`grey_255_as_object=True`,
  the default). Without this the DAVIS-2017 rules would read 255 as void and find no object.
  Pass `grey_255_as_object=False` to keep 255 (for example a void-only 'L' mask).
- '1' (bilevel): 0/1.
- 'I;16' / 'I' (16-bit grey): the values are ids, returned as int32 when above 255.
RGB / RGBA masks are rejected: colours are not ids, and guessing a colour -> id map would
silently renumber objects. Convert them to palette PNGs first.
Lossy files (JPEG, WebP, JPEG 2000) are rejected whatever their mode: compression turns a
0/255 edge into dozens of false ids. So is a grey mask whose values look like a smoothed
(anti-aliased) or compressed edge rather than ids (`looks_smoothed`).

Never read masks with OpenCV (it expands the palette into colours) and never resize them
with anything but nearest-neighbour (new ids would appear).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import cv2
from PIL import Image

from s3rt.io.atomic import atomic_write
from s3rt.io.errors import InputError, InputNotFoundError

MASK_EXTENSIONS = (".png",)


def davis_palette(num_colors: int = 256) -> np.ndarray:
    """The DAVIS / PASCAL-VOC colormap, [num_colors, 3] uint8.

    Colour of index i: the bits of i are dealt out three at a time (bit 0 -> red, bit 1 ->
    green, bit 2 -> blue), each triple filling the next-lower bit of the channel starting at
    bit 7. So 1 = (128, 0, 0), 2 = (0, 128, 0), 3 = (128, 128, 0), 4 = (0, 0, 128), ...
    """
    idx = np.arange(num_colors, dtype=np.int64)
    cmap = np.zeros((num_colors, 3), dtype=np.int64)
    for j in range(8):
        shift = 7 - j
        for ch in range(3):
            cmap[:, ch] |= ((idx >> (3 * j + ch)) & 1) << shift
    return cmap.astype(np.uint8)


_PALETTE = davis_palette()


# Formats whose compression changes pixel values: never ids.
LOSSY_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "JPEG2000": "JPEG 2000", "WEBP": "WebP"}


class MaskNote(UserWarning):
    """How a mask was read when that is not obvious (a grey 0/255 mask read as one object,
    a mask resized to the frame)."""


def read_mask(path: str | os.PathLike, *, grey_255_as_object: bool = True) -> np.ndarray:
    """Read one id mask (HxW, uint8, or int32 for 16-bit masks with ids above 255).

    See the module docstring for the accepted modes and the DAVIS-2016 0/255 rule
    (`grey_255_as_object`, on by default, applies to 'L' images only). Lossy files and grey
    masks that look smoothed are refused with an `InputError`.
    """
    return read_mask_noted(path, grey_255_as_object=grey_255_as_object)[0]


def read_mask_noted(path: str | os.PathLike, *, grey_255_as_object: bool = True) -> tuple[np.ndarray, str | None]:
    """`read_mask`, and a note saying how the mask was read when that is not obvious (today:
    a grey 0/255 mask read as one object), else None."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"mask not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.format in LOSSY_FORMATS:
                raise InputError(
                    f"mask {path} is a {LOSSY_FORMATS[im.format]} file: lossy compression turns object "
                    "edges into false ids. Save masks as PNG (palette or grey, one id per object)")
            im.load()
            mode = im.mode
            if mode in ("P", "L", "1"):
                arr = np.array(im)
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.array(im).astype(np.int64)
            elif mode == "PA":
                arr = np.array(im.getchannel(0))
            else:
                raise InputError(
                    f"mask {path} is an {mode} image: masks must be palette ('P') or grey ('L') "
                    "PNGs whose pixel values are object ids (0 = background). Convert the colours "
                    "to ids first, for example with s3rt.io.masks.write_mask."
                )
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read mask {path}: {_one_line(e)}") from e
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"mask {path} is empty ({'x'.join(map(str, arr.shape[::-1]))})")
    if mode == "1":
        return arr.astype(np.uint8), None
    if mode.startswith("I"):
        if arr.min(initial=0) < 0:
            raise InputError(f"mask {path} has negative values; ids must be >= 0")
        arr = arr.astype(np.uint8 if arr.max(initial=0) <= 255 else np.int32)
    if mode == "L" or mode.startswith("I"):
        if grey_255_as_object and mode == "L" and _only_0_255(arr):
            return (arr == 255).astype(np.uint8), (
                f"mask {path.name} is grey with only 0 and 255: read as one object (id 1)")
        smoothed = looks_smoothed(arr)
        if smoothed:
            raise InputError(
                f"mask {path} looks like a smoothed (anti-aliased or compressed) grey image, not an id "
                f"mask: {smoothed}. Masks hold one id per object (0 = background, 1, 2, ...); save it "
                "without smoothing (for one object, only 0 and 255), or as a palette PNG")
    return arr, None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _only_0_255(arr: np.ndarray) -> bool:
    return not np.any((arr != 0) & (arr != 255))


def looks_smoothed(ids: np.ndarray, *, min_ids: int = 3) -> str | None:
    """Whether a grey array looks like a smoothed edge rather than object ids.

    A pixel of a smoothed (anti-aliased, blurred, JPEG-compressed) mask takes a value
    strictly between the values around it; an id pixel almost never does. When at least
    `min_ids` ids, and at least half of all ids, have most of their pixels strictly between
    the smallest and the largest value of their 3x3 neighbourhood, returns a short
    description of the evidence; otherwise None.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.size == 0 or ids.dtype != np.uint8:
        return None
    values, counts = np.unique(ids, return_counts=True)
    values, counts = values[values != 0], counts[values != 0]
    if len(values) < min_ids:
        return None
    kernel = np.ones((3, 3), np.uint8)
    lo = cv2.erode(ids, kernel, borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(ids, kernel, borderType=cv2.BORDER_REPLICATE)
    between = (lo < ids) & (ids < hi)
    per_id = np.bincount(ids[between], minlength=256)[values]
    edge_like = values[per_id * 2 > counts]
    if len(edge_like) >= min_ids and len(edge_like) * 2 >= len(values):
        shown = ", ".join(str(int(v)) for v in edge_like[:: max(1, len(edge_like) // 5)][:5])
        return (f"{len(edge_like)} of its {len(values)} values (e.g. {shown}) lie mostly between "
                "their neighbours' values, as edge blending does")
    return None


def check_mask_array(mask, size: tuple[int, int] | None = None, *, name: str = "mask") -> np.ndarray:
    """Validate and normalise an in-memory id mask: a C-contiguous HxW uint8 array of ids.

    Accepts any 2-D integer or bool array (numpy, or anything `np.asarray` takes, such as a
    CPU tensor), negative strides and non-contiguous views included. Raises `InputError`
    for float masks, values outside 0..255, an empty array, or a size other than `size`
    ((height, width)) when given.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InputError(f"{name} must be an HxW array of object ids; got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty ({arr.shape[1]}x{arr.shape[0]})")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} must hold integer object ids (0 = background); got dtype {arr.dtype}")
    elif arr.dtype != np.uint8:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            bad = np.unique(arr[(arr < 0) | (arr > 255)])[:5].tolist()
            raise InputError(f"{name} has ids {bad}; object ids must be in 1..255 (0 = background)")
        arr = arr.astype(np.uint8)
    if size is not None and tuple(arr.shape) != tuple(size):
        raise InputError(f"{name} is {arr.shape[1]}x{arr.shape[0]} but the frame is {size[1]}x{size[0]}")
    return np.ascontiguousarray(arr)


def same_aspect(mask_size: tuple[int, int], size: tuple[int, int], *, tolerance: float = 0.005,
                max_scale: float = 4.0) -> bool:
    """Whether an image of `mask_size` (h, w) is one of `size` (h, w) scaled by a factor
    between 1/max_scale and max_scale: for the scale of its height or of its width, both
    sides agree within one pixel of rounding (or `tolerance` of the side, when that is more)."""
    mh, mw = mask_size
    h, w = size
    slack = max(1.0, tolerance * max(mh, mw))
    return any(1 / max_scale <= s <= max_scale and abs(mh - h * s) <= slack and abs(mw - w * s) <= slack
               for s in (mh / h, mw / w))


def fit_mask(mask: np.ndarray, size: tuple[int, int], *, name: str = "mask") -> tuple[np.ndarray, str | None]:
    """Bring an id mask to the frame size `(height, width)`, as Cutie does.

    A mask of the frame's size comes back unchanged, with no note. A mask of the same aspect
    ratio (`same_aspect`: within a pixel of rounding, at most 4x larger or smaller) but another
    size (Cutie's judo example has an 853x480 mask for 854x480 frames) is resized with
    nearest-neighbour, so no new ids appear, and a note says so. Any other shape is an
    `InputError`.
    """
    mask = check_mask_array(mask, name=name)
    h, w = size
    mh, mw = mask.shape
    if (mh, mw) == (h, w):
        return mask, None
    if not same_aspect((mh, mw), (h, w)):
        raise InputError(f"{name} is {mw}x{mh} but the frames are {w}x{h}: not these frames scaled (another "
                         "aspect ratio, or over 4x off), so it cannot belong to them; masks must have the frame's size")
    resized = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return resized, f"{name} is {mw}x{mh} but the frames are {w}x{h}: resized to the frames (nearest)"


def write_mask(path: str | os.PathLike, ids: np.ndarray, *, palette: np.ndarray | None = None) -> Path:
    """Write an id mask as a palette PNG (DAVIS colormap by default), atomically.

    `ids`: HxW array of integers in 0..255 (or bool). Returns the path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"write_mask: masks are written as .png, got {path.name}")
    arr = np.asarray(ids)
    if arr.ndim != 2:
        raise ValueError(f"write_mask: expected an HxW id array, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"write_mask: ids must be integers (or bool), got dtype {arr.dtype}")
    elif arr.dtype != np.uint8:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(f"write_mask: ids must be in 0..255 for a palette PNG, got {lo}..{hi}")
        arr = arr.astype(np.uint8)
    pal = _PALETTE if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
    im.putpalette(pal.reshape(-1).tolist())
    with atomic_write(path) as tmp:
        im.save(tmp, format="PNG")
    return path


_NUM = re.compile(r"(\d+)")


def natural_key(name: str):
    """Sort key that orders embedded numbers numerically ('2.png' < '10.png')."""
    return [int(t) if t.isdigit() else t.lower() for t in _NUM.split(name)]


def list_masks(folder: str | os.PathLike) -> dict[str, Path]:
    """The PNG masks in `folder`, as {frame name (stem): path}, in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFoundError(f"mask folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.suffix.lower() in MASK_EXTENSIONS and p.is_file()
             and not p.name.startswith(".")]
    files.sort(key=lambda p: natural_key(p.name))
    found: dict[str, Path] = {}
    for p in files:
        if p.stem in found:
            raise InputError(f"masks {found[p.stem].name} and {p.name} in {folder} are for the same frame "
                             f"{p.stem!r}; keep one")
        found[p.stem] = p
    return found
