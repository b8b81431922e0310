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

Never read masks with OpenCV (it expands the palette into colours) and never resize them
with anything but nearest-neighbour (new ids would appear).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
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


def read_mask(path: str | os.PathLike, *, grey_255_as_object: bool = True) -> np.ndarray:
    """Read one id mask (HxW, uint8, or int32 for 16-bit masks with ids above 255).

    See the module docstring for the accepted modes and the DAVIS-2016 0/255 rule
    (`grey_255_as_object`, on by default, applies to 'L' images only).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
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
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read mask {path}: {e}") from e
    if mode == "1":
        return arr.astype(np.uint8)
    if mode.startswith("I"):
        if arr.min(initial=0) < 0:
            raise InputError(f"mask {path} has negative values; ids must be >= 0")
        return arr.astype(np.uint8 if arr.max(initial=0) <= 255 else np.int32)
    if mode == "L" and grey_255_as_object:
        arr = _grey_255_to_object(arr)
    return arr


def _grey_255_to_object(arr: np.ndarray) -> np.ndarray:
    """DAVIS-2016 rule: a grey mask holding only 0 and 255 is one object -> 0/1."""
    # Cheap test first: any value other than 0/255 means the values are ids.
    if not np.any((arr != 0) & (arr != 255)):
        return (arr == 255).astype(np.uint8)
    return arr


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
    return {p.stem: p for p in files}
