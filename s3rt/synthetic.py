"""Deterministic synthetic videos with exact ground truth, for tests and demos.

`make_clip(num_frames, height, width, num_objects, seed)` draws textured objects (ellipses
and star-shaped polygons, each with its own colours and pattern) that move, turn and
breathe over a textured, slowly panning background, with sensor noise. Objects are painted
in a random z-order and the id mask is the topmost object at every pixel, so masks and
frames agree exactly (no anti-aliasing at the edges).

Events, for clips of at least 8 frames:
- every object meets the others near the centre halfway through, so they occlude each
  other (partially: every object that is inside the frame keeps part of itself visible);
- object 2 (when num_objects >= 2) appears late: it is outside the frame for the first
  quarter of the clip and then enters from one side;
- object 3 (when num_objects >= 3) leaves: it exits through one side in the third quarter
  and is gone for the rest of the clip;
- every other object is visible in the first frame.
So with num_objects == 2 the first frame holds only object 1, and the DAVIS rule (objects
1..N from the first frame) scores one object; trackers must add object 2 when it appears.

The same arguments give the same clip, bit for bit, on one machine.
"""

from __future__ import annotations

import colorsys
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from s3rt.io.atomic import atomic_write
from s3rt.io.masks import write_mask

LATE_OBJECT = 2
LEAVING_OBJECT = 3


@dataclass
class _Object:
    obj_id: int
    shape: np.ndarray  # local mask, uint8 0/1, square patch
    texture: np.ndarray  # local texture, float32 [P, P, 3]
    radius: float  # largest distance of a shape pixel from the patch centre (before scaling)
    angle0: float
    spin: float  # degrees per frame
    scale_amp: float
    scale_freq: float
    scale_phase: float
    path: "callable"  # t -> (cx, cy) or None when not in the scene


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    g = rng.random((gh, gw), dtype=np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _background(rng, h: int, w: int) -> np.ndarray:
    hue = rng.random()
    c1 = _rgb(hue, rng.uniform(0.1, 0.3), rng.uniform(0.35, 0.55))
    c2 = _rgb(hue + rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3), rng.uniform(0.6, 0.8))
    coarse = _smooth_noise(rng, h, w, min(h, w) / 4)
    medium = _smooth_noise(rng, h, w, min(h, w) / 16)
    fine = rng.random((h, w), dtype=np.float32)
    mix = np.clip(0.6 * coarse + 0.3 * medium + 0.1 * fine, 0, 1)[..., None]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(12, 30)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    bg = c1 * (1 - mix) + c2 * mix
    return bg * (0.85 + 0.15 * stripes[..., None])


def _object_texture(rng, size: int, hue: float) -> np.ndarray:
    c1 = _rgb(hue, rng.uniform(0.6, 0.95), rng.uniform(0.65, 0.95))
    c2 = _rgb(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.5, 0.9), rng.uniform(0.2, 0.45))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(5, 12)
        p = 0.5 + 0.5 * np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    elif kind == 1:  # checker
        cell = rng.uniform(4, 9)
        p = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    else:  # spots
        p = (_smooth_noise(rng, size, size, rng.uniform(3, 7)) > 0.55).astype(np.float32)
    p = np.clip(0.8 * p + 0.2 * rng.random((size, size), dtype=np.float32), 0, 1)[..., None]
    shade = 1.0 - 0.25 * (yy / max(size - 1, 1))[..., None]  # light from above
    return (c1 * (1 - p) + c2 * p) * shade


def _object_shape(rng, radius: float) -> tuple[np.ndarray, float]:
    half = int(math.ceil(radius * 1.35)) + 1
    size = 2 * half + 1
    shape = np.zeros((size, size), np.uint8)
    c = (half, half)
    if rng.random() < 0.5:
        aspect = rng.uniform(0.7, 1.35)
        axes = (max(1, int(round(radius * aspect))), max(1, int(round(radius / aspect))))
        cv2.ellipse(shape, c, axes, rng.uniform(0, 180), 0, 360, 1, thickness=-1)
    else:
        n = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.65, 1.25, n)
        pts = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], 1)
        cv2.fillPoly(shape, [np.round(pts).astype(np.int32)], 1)
    ys, xs = np.nonzero(shape)
    extent = float(np.sqrt(((ys - half) ** 2 + (xs - half) ** 2).max())) + 1.0
    return shape, extent


def _warp(obj: _Object, t: int, h: int, w: int):
    """Place an object at frame t: (mask bool, texture float32, y0, x0) of its ROI, or None."""
    centre = obj.path(t)
    if centre is None:
        return None
    cx, cy = centre
    scale = 1.0 + obj.scale_amp * math.sin(obj.scale_freq * t + obj.scale_phase)
    reach = obj.radius * scale + 2
    x0, x1 = max(int(math.floor(cx - reach)), 0), min(int(math.ceil(cx + reach)) + 1, w)
    y0, y1 = max(int(math.floor(cy - reach)), 0), min(int(math.ceil(cy + reach)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    half = (obj.shape.shape[0] - 1) / 2.0
    m = cv2.getRotationMatrix2D((half, half), obj.angle0 + obj.spin * t, scale)
    m[0, 2] += cx - half - x0
    m[1, 2] += cy - half - y0
    size = (x1 - x0, y1 - y0)
    mask = cv2.warpAffine(obj.shape, m, size, flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    if not mask.any():
        return None
    tex = cv2.warpAffine(obj.texture, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return mask, tex, y0, x0


def _linear_exit(start, direction, speed, t0):
    """Path that sits at `start` at time t0 and moves along `direction` at `speed` px/frame."""
    def f(t):
        return start[0] + direction[0] * speed * (t - t0), start[1] + direction[1] * speed * (t - t0)
    return f


def _sample_objects(rng, t_len: int, h: int, w: int, n: int) -> list[_Object]:
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    t_meet = (t_len - 1) / 2.0
    t_enter = max(1, int(round(0.25 * (t_len - 1))))
    t_exit = min(t_len - 2, int(round(0.75 * (t_len - 1)))) if t_len >= 3 else t_len
    hue0 = rng.random()
    base = min(h, w)
    # Meeting offsets: spread around the centre in different directions, so overlaps are partial.
    offset_angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / max(n, 1)
    objects = []
    for k in range(n):
        obj_id = k + 1
        radius = base * rng.uniform(0.11, 0.17)
        shape, extent = _object_shape(rng, radius)
        texture = _object_texture(rng, shape.shape[0], hue0 + k / max(n, 1) + rng.uniform(-0.05, 0.05))
        scale_amp = rng.uniform(0.0, 0.08)
        reach = extent * (1 + scale_amp) + 2
        off_r = radius * rng.uniform(0.45, 0.75) if n > 1 else 0.0
        meet = (cx + off_r * math.cos(offset_angles[k]), cy + off_r * math.sin(offset_angles[k]))
        # slow wander (within the frame) for the parts of the clip spent on screen
        ax = rng.uniform(0.3, 1.0) * max(w / 2.0 - reach - off_r, 0.0)
        ay = rng.uniform(0.3, 1.0) * max(h / 2.0 - reach - off_r, 0.0)
        wx = 2 * np.pi * rng.uniform(0.3, 0.7) / max(t_len, 1) * rng.choice([-1, 1])
        wy = 2 * np.pi * rng.uniform(0.3, 0.7) / max(t_len, 1) * rng.choice([-1, 1])

        def wander(t, meet=meet, ax=ax, ay=ay, wx=wx, wy=wy):
            return meet[0] + ax * math.sin(wx * (t - t_meet)), meet[1] + ay * math.sin(wy * (t - t_meet))

        path = wander
        side = rng.integers(4)
        direction = [(-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0)][side]
        # distance from the meeting point to fully outside the frame along `direction`
        if direction[0]:
            dist = (meet[0] + reach) if direction[0] < 0 else (w - 1 - meet[0] + reach)
        else:
            dist = (meet[1] + reach) if direction[1] < 0 else (h - 1 - meet[1] + reach)
        if obj_id == LATE_OBJECT and t_len >= 2:
            speed = dist / max(t_meet - t_enter, 0.5)
            come = _linear_exit(meet, direction, -speed, t_meet)  # comes in from `direction`'s side

            def path(t, come=come, wander=wander, speed=speed):
                if t < t_enter:
                    return None
                return come(t) if t <= t_meet else wander(t)

        elif obj_id == LEAVING_OBJECT and t_len >= 3:
            speed = dist / max(t_exit - t_meet, 0.5)
            go = _linear_exit(meet, direction, speed, t_meet)

            def path(t, go=go, wander=wander):
                if t >= t_exit:
                    return None
                return wander(t) if t <= t_meet else go(t)

        objects.append(_Object(
            obj_id=obj_id, shape=shape, texture=texture, radius=extent,
            angle0=rng.uniform(0, 360), spin=rng.uniform(-3, 3),
            scale_amp=scale_amp, scale_freq=2 * np.pi * rng.uniform(0.5, 1.5) / max(t_len, 1),
            scale_phase=rng.uniform(0, 2 * np.pi), path=path,
        ))
    return objects


def _render_ids(objects, order, t, h, w, layers=None):
    ids = np.zeros((h, w), np.uint8)
    placed = []
    for k in order:
        p = _warp(objects[k], t, h, w)
        if p is None:
            continue
        mask, tex, y0, x0 = p
        mh, mw = mask.shape
        ids[y0:y0 + mh, x0:x0 + mw][mask] = objects[k].obj_id
        if layers is not None:
            layers[k, y0:y0 + mh, x0:x0 + mw] = mask
        placed.append((k, p))
    return ids, placed


def _acceptable(objects, order, t_len, h, w) -> bool:
    """Every object in the frame keeps >= 20% of itself visible, objects other than the late
    one are visible in frame 0, and at least one frame has a real occlusion (when n >= 2)."""
    n = len(objects)
    occluded = n < 2
    for t in range(t_len):
        ids, placed = _render_ids(objects, order, t, h, w)
        for k, (mask, _tex, _y0, _x0) in placed:
            full = int(mask.sum())
            vis = int(np.count_nonzero(ids == objects[k].obj_id))
            if vis < 0.2 * full:
                return False
            if full - vis > 0.05 * full:
                occluded = True
        if t == 0:
            present = {objects[k].obj_id for k, _ in placed}
            for o in objects:
                if o.obj_id != LATE_OBJECT and o.obj_id not in present:
                    return False
    return occluded


def make_clip(
    num_frames: int = 24,
    height: int = 240,
    width: int = 432,
    num_objects: int = 3,
    seed: int = 0,
    *,
    return_layers: bool = False,
):
    """A synthetic clip: (frames uint8 [T, H, W, 3], masks uint8 [T, H, W] with ids 0..N).

    With `return_layers=True` also returns the full (unoccluded) masks of every object,
    bool [T, N, H, W], and the z-order (object indices bottom to top): the id mask is the
    topmost layer at every pixel.
    """
    if num_frames < 1 or height < 16 or width < 16:
        raise ValueError(f"make_clip needs num_frames >= 1 and a frame of at least 16x16, "
                         f"got {num_frames} frames of {width}x{height}")
    if not 0 <= num_objects <= 254:
        raise ValueError(f"num_objects must be in 0..254, got {num_objects}")
    rng = np.random.default_rng(seed)
    t_len, h, w, n = int(num_frames), int(height), int(width), int(num_objects)

    for _attempt in range(40):
        objects = _sample_objects(rng, t_len, h, w, n)
        order = [int(k) for k in rng.permutation(n)]
        if _acceptable(objects, order, t_len, h, w):
            break

    # Background bigger than the frame, panned by a slow drift.
    margin = max(4, int(0.04 * min(h, w)))
    bg = _background(rng, h + 2 * margin, w + 2 * margin)
    pan = rng.uniform(0.3, 1.0, 2) * margin
    pan_w = 2 * np.pi * rng.uniform(0.2, 0.5) / max(t_len, 1)
    noise_rng = np.random.default_rng(rng.integers(2**63))

    frames = np.empty((t_len, h, w, 3), np.uint8)
    masks = np.empty((t_len, h, w), np.uint8)
    layers = np.zeros((t_len, n, h, w), bool) if return_layers else None
    for t in range(t_len):
        dx = int(round(margin + pan[0] * math.sin(pan_w * t)))
        dy = int(round(margin + pan[1] * math.cos(pan_w * t + 0.5)))
        img = bg[dy:dy + h, dx:dx + w].copy()
        ids, placed = _render_ids(objects, order, t, h, w, None if layers is None else layers[t])
        for _k, (mask, tex, y0, x0) in placed:  # in z-order: later ones cover earlier ones
            mh, mw = mask.shape
            region = img[y0:y0 + mh, x0:x0 + mw]
            region[mask] = tex[mask]
        img *= 1.0 + 0.03 * math.sin(0.7 * t)  # slight illumination flicker
        img += noise_rng.normal(0.0, 2.0, img.shape).astype(np.float32)
        frames[t] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        masks[t] = ids
    if return_layers:
        return frames, masks, layers, order
    return frames, masks


def write_clip(
    directory: str | os.PathLike,
    frames: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    names: Sequence[str] | None = None,
    jpeg_quality: int = 95,
) -> list[str]:
    """Write a clip in the DAVIS sequence layout: `<dir>/JPEGImages/<name>.jpg` and
    `<dir>/Annotations/<name>.png` (palette PNGs), every file atomically. Returns the names
    (00000, 00001, ... by default)."""
    directory = Path(directory)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_clip: frames must be uint8 [T, H, W, 3], got {frames.shape} {frames.dtype}")
    t_len = frames.shape[0]
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != frames.shape[:3]:
            raise ValueError(f"write_clip: masks {masks.shape} do not match frames {frames.shape[:3]}")
    names = list(names) if names is not None else [f"{i:05d}" for i in range(t_len)]
    if len(names) != t_len:
        raise ValueError(f"write_clip: {len(names)} names for {t_len} frames")
    (directory / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for name, frame in zip(names, frames):
        with atomic_write(directory / "JPEGImages" / f"{name}.jpg") as tmp:
            Image.fromarray(frame).save(tmp, format="JPEG", quality=jpeg_quality)
    if masks is not None:
        for name, ids in zip(names, masks):
            write_mask(directory / "Annotations" / f"{name}.png", ids)
    return names


def later_objects(masks) -> dict[int, tuple[np.ndarray, list[int]]]:
    """Objects that enter after frame 0, as the tracker wants them: {frame: (that frame's id
    mask, [ids first seen there])}; pass each to `Tracker.step(frame, mask, objects=ids)`."""
    seen, extra = set(np.unique(masks[0])) - {0}, {}
    for i in range(1, len(masks)):
        new = sorted(set(np.unique(masks[i])) - {0} - seen)
        if new:
            extra[i] = (masks[i], [int(o) for o in new])
            seen |= set(new)
    return extra


# ---------------------------------------------------------------------------------------------
# Varied clips (training / validation / test data for `s3rt train`).
#
# `make_varied_clip` draws clips with more variety than `make_clip`: free motion with bounces
# (and, for some objects, leaving the frame and coming back), camera pan and zoom, rotation,
# scale changes, non-rigid deformation, occlusion in a random z-order, unlabelled distractor
# objects, lighting changes (global gain, colour cast, a moving light gradient), sensor noise,
# optional user-given background images, and objects that appear mid-clip.
# The same arguments give the same clip, bit for bit, on one machine.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Mover:
    obj_id: int  # 0 for an unlabelled distractor
    shape: np.ndarray
    texture: np.ndarray
    radius: float
    start: np.ndarray  # centre at t = 0
    vel: np.ndarray  # px per time unit
    wob_amp: np.ndarray
    wob_freq: np.ndarray
    wob_phase: np.ndarray
    box: tuple[float, float, float, float]  # x0, x1, y0, y1 the centre bounces inside
    angle0: float
    spin: float
    scale0: float
    zoom: float  # scale trend per time unit (multiplicative, log)
    breathe: float
    breathe_freq: float
    aniso: float  # deformation: anisotropic scale amplitude
    shear: float
    deform_amp: float  # non-rigid wobble amplitude (px in the local patch)
    deform_freq: float
    deform_period: float
    t_appear: int = 0


def _fold(x: float, lo: float, hi: float) -> float:
    """Bounce x back and forth inside [lo, hi] (triangle wave)."""
    if hi <= lo:
        return (lo + hi) / 2
    span = hi - lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


def _mover_pose(m: _Mover, tt: float):
    x = m.start + m.vel * tt + m.wob_amp * np.sin(m.wob_freq * tt + m.wob_phase)
    cx, cy = _fold(float(x[0]), m.box[0], m.box[1]), _fold(float(x[1]), m.box[2], m.box[3])
    scale = m.scale0 * math.exp(m.zoom * tt) * (1 + m.breathe * math.sin(m.breathe_freq * tt))
    return cx, cy, scale


def _mover_warp(m: _Mover, t: int, tt: float, h: int, w: int):
    """(mask bool, texture, y0, x0) of the mover's ROI at frame t, or None when out of view."""
    if t < m.t_appear:
        return None
    cx, cy, scale = _mover_pose(m, tt)
    sx = scale * (1 + m.aniso * math.sin(0.7 * m.breathe_freq * tt + 1.0))
    sy = scale * (1 - m.aniso * math.sin(0.7 * m.breathe_freq * tt + 1.0))
    reach = m.radius * max(sx, sy) * (1 + abs(m.shear)) + 2 + m.deform_amp * max(sx, sy)
    x0, x1 = max(int(math.floor(cx - reach)), 0), min(int(math.ceil(cx + reach)) + 1, w)
    y0, y1 = max(int(math.floor(cy - reach)), 0), min(int(math.ceil(cy + reach)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    shape, tex = m.shape, m.texture
    p = shape.shape[0]
    half = (p - 1) / 2.0
    if m.deform_amp > 0:  # non-rigid: a travelling sine displacement of the local patch
        yy, xx = np.mgrid[0:p, 0:p].astype(np.float32)
        ph = m.deform_freq * tt
        amp, period = float(m.deform_amp), float(m.deform_period)
        map_x = (xx + amp * np.sin(2 * np.pi * yy / period + ph)).astype(np.float32)
        map_y = (yy + amp * np.sin(2 * np.pi * xx / period + 1.3 * ph)).astype(np.float32)
        shape = cv2.remap(shape, map_x, map_y, cv2.INTER_NEAREST, borderValue=0)
        tex = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    a = math.radians(m.angle0 + m.spin * tt)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lin = rot @ np.array([[sx, m.shear * sx], [0.0, sy]])
    off = np.array([cx - x0, cy - y0]) - lin @ np.array([half, half])
    mat = np.concatenate([lin, off[:, None]], 1).astype(np.float64)
    size = (x1 - x0, y1 - y0)
    mask = cv2.warpAffine(shape, mat, size, flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    if not mask.any():
        return None
    tex = cv2.warpAffine(tex, mat, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return mask, tex, y0, x0


def _load_background(rng, source, h: int, w: int) -> np.ndarray:
    """A float32 [h, w, 3] background from a user image (path or uint8 array), randomly cropped."""
    img = source
    if not isinstance(img, np.ndarray):
        img = np.asarray(Image.open(img).convert("RGB"))
    ih, iw = img.shape[:2]
    s = max(h / ih, w / iw) * rng.uniform(1.0, 1.5)
    img = cv2.resize(img, (max(w, int(math.ceil(iw * s))), max(h, int(math.ceil(ih * s)))),
                     interpolation=cv2.INTER_AREA)
    y = int(rng.integers(0, img.shape[0] - h + 1))
    x = int(rng.integers(0, img.shape[1] - w + 1))
    return img[y:y + h, x:x + w].astype(np.float32)


def list_background_frames(folders: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files (jpg/jpeg/png) in the given folders, recursively, sorted: pass the list as
    `backgrounds=` to `make_varied_clip`."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"background folder {folder} does not exist")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files


def make_varied_clip(
    num_frames: int = 5,
    height: int = 128,
    width: int = 128,
    num_objects: int = 2,
    seed: int = 0,
    *,
    speed: float = 1.0,
    late_objects: int = 0,
    late_ids: Sequence[int] | None = None,
    leave_prob: float = 0.3,
    distractors: int | None = None,
    radius_range: tuple[float, float] = (0.10, 0.22),
    backgrounds: Sequence | None = None,
    return_info: bool = False,
):
    """A varied synthetic clip: (frames uint8 [T,H,W,3], masks uint8 [T,H,W] with ids 0..N).

    speed scales all motion (a larger value is like skipping frames); `late_objects` of the
    N objects (the highest ids, or the ids in `late_ids`) pop into view at a random frame in
    the middle of the clip (pass a late id below N so the DAVIS rule, which scores objects
    1..max id of frame 0, scores it);
    each other object leaves the frame and comes back with probability `leave_prob` (on long
    enough clips); `distractors` unlabelled objects are painted too (None: 0-2 at random);
    object radii are drawn from `radius_range` times the shorter side; `backgrounds` is a list
    of image paths or uint8 arrays to draw the background from (None: procedural textures).
    Every labelled object that is not late is at least partly visible in frame 0.

    With `return_info=True` also returns a dict of what happened: 'late' {id: first frame},
    'left' [ids that were out of view after frame 0 and before a later visible frame, i.e.
    left and came back, or left for good], 'occluded' [ids partly hidden by another object].
    """
    if num_frames < 1 or height < 16 or width < 16:
        raise ValueError(f"make_varied_clip needs num_frames >= 1 and a frame of at least 16x16, "
                         f"got {num_frames} frames of {width}x{height}")
    if not 0 <= num_objects <= 254 or not 0 <= late_objects <= num_objects:
        raise ValueError(f"need 0 <= late_objects <= num_objects <= 254, got {late_objects}, {num_objects}")
    rng = np.random.default_rng(seed)
    t_len, h, w, n = int(num_frames), int(height), int(width), int(num_objects)
    n_dis = int(rng.integers(0, 3)) if distractors is None else int(distractors)
    base = min(h, w)
    tts = np.arange(t_len, dtype=np.float64) * speed * base / 128.0  # time in motion units

    def new_mover(obj_id, hue, t_appear, may_leave):
        radius = base * rng.uniform(*radius_range)
        shape, extent = _object_shape(rng, radius)
        texture = _object_texture(rng, shape.shape[0], hue)
        if rng.random() < 0.5:  # a second pattern layer, so textures are less uniform
            texture = 0.5 * texture + 0.5 * _object_texture(rng, shape.shape[0], hue + rng.uniform(-0.1, 0.1))
        leaves = may_leave and rng.random() < leave_prob
        margin = -0.5 * extent if not leaves else 1.6 * extent  # centre box: inside / well outside
        box = (-margin, w - 1 + margin, -margin, h - 1 + margin)
        if box[0] > box[1]:
            box = (w / 2, w / 2, box[2], box[3])
        if box[2] > box[3]:
            box = (box[0], box[1], h / 2, h / 2)
        start = np.array([rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)])
        ang = rng.uniform(0, 2 * np.pi)
        spd = rng.uniform(0.3, 2.5) * (2.0 if leaves else 1.0)
        return _Mover(
            obj_id=obj_id, shape=shape, texture=texture.astype(np.float32), radius=extent,
            start=start, vel=spd * np.array([math.cos(ang), math.sin(ang)]),
            wob_amp=rng.uniform(0, 0.08, 2) * base, wob_freq=rng.uniform(0.05, 0.3, 2),
            wob_phase=rng.uniform(0, 2 * np.pi, 2), box=box,
            angle0=rng.uniform(0, 360), spin=rng.uniform(-4, 4),
            scale0=rng.uniform(0.85, 1.15), zoom=rng.uniform(-0.006, 0.006),
            breathe=rng.uniform(0, 0.12), breathe_freq=rng.uniform(0.05, 0.4),
            aniso=rng.uniform(0, 0.15), shear=rng.uniform(-0.15, 0.15),
            deform_amp=rng.uniform(0, 0.12) * radius if rng.random() < 0.6 else 0.0,
            deform_freq=rng.uniform(0.05, 0.5), deform_period=rng.uniform(0.8, 2.0) * radius,
            t_appear=t_appear,
        )

    hue0 = rng.random()
    if late_ids is None:
        late_ids = set(range(n - late_objects + 1, n + 1))
    else:
        late_ids = {int(i) for i in late_ids}
        if len(late_ids) != late_objects or not late_ids <= set(range(1, n + 1)):
            raise ValueError(f"late_ids {sorted(late_ids)} must be {late_objects} distinct ids in 1..{n}")
    for _attempt in range(60):
        movers = []
        for k in range(n):
            obj_id = k + 1
            t_appear = int(rng.integers(max(1, t_len // 4), max(2, (3 * t_len) // 5) + 1)) if obj_id in late_ids else 0
            movers.append(new_mover(obj_id, hue0 + k / max(n, 1) + rng.uniform(-0.05, 0.05), t_appear,
                                    obj_id not in late_ids and t_len >= 3))
        for _ in range(n_dis):  # distractors: sometimes with a labelled object's hue
            hue = hue0 + (rng.integers(n) / max(n, 1) if n and rng.random() < 0.5 else rng.random())
            movers.append(new_mover(0, hue + rng.uniform(-0.1, 0.1), 0, True))
        order = [int(k) for k in rng.permutation(len(movers))]
        ids0, vis0 = _render_varied_ids(movers, order, 0, tts[0], h, w)
        ok = all(vis0.get(m.obj_id, (0, 1))[0] >= 0.3 * max(vis0.get(m.obj_id, (0, 1))[1], 1)
                 and vis0.get(m.obj_id, (0, 0))[0] >= 0.002 * h * w
                 for m in movers if m.obj_id and m.t_appear == 0)
        if ok and late_ids:  # a late object is clearly visible when it appears
            for m in movers:
                if m.obj_id in late_ids:
                    _ids, vis = _render_varied_ids(movers, order, m.t_appear, tts[m.t_appear], h, w)
                    vis_px, full = vis.get(m.obj_id, (0, 0))
                    ok = ok and vis_px >= 0.5 * max(full, 1) and vis_px >= 0.004 * h * w
        if ok:
            break

    # background and camera
    margin = max(4, int(0.08 * base))
    bh, bw = h + 2 * margin, w + 2 * margin
    if backgrounds:
        bg = _load_background(rng, backgrounds[int(rng.integers(len(backgrounds)))], bh, bw)
    else:
        bg = _background(rng, bh, bw).astype(np.float32)
    cam_v = rng.uniform(-0.5, 0.5, 2)
    cam_amp = rng.uniform(0.2, 0.9, 2) * margin
    cam_w = rng.uniform(0.02, 0.15, 2)
    cam_zoom = rng.uniform(-0.003, 0.003)
    # lighting
    gain_amp, gain_w, gain_ph = rng.uniform(0, 0.3), rng.uniform(0.02, 0.2), rng.uniform(0, 2 * np.pi)
    cast = rng.uniform(-0.08, 0.08, 3)
    cast_w = rng.uniform(0.01, 0.1)
    grad_dir = rng.uniform(0, 2 * np.pi)
    grad_amp = rng.uniform(0, 0.35)
    grad_w = rng.uniform(-0.05, 0.05)
    noise_sigma = rng.uniform(0.5, 4.0)
    noise_rng = np.random.default_rng(rng.integers(2**63))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = ((xx - w / 2) * math.cos(grad_dir) + (yy - h / 2) * math.sin(grad_dir)) / max(h, w)

    frames = np.empty((t_len, h, w, 3), np.uint8)
    masks = np.zeros((t_len, h, w), np.uint8)
    seen_out = {m.obj_id: False for m in movers if m.obj_id}
    left, occluded = set(), set()
    for t in range(t_len):
        tt = float(tts[t])
        dx = margin + cam_v[0] * tt + cam_amp[0] * math.sin(cam_w[0] * tt)
        dy = margin + cam_v[1] * tt + cam_amp[1] * math.sin(cam_w[1] * tt + 0.5)
        dx, dy = _fold(dx, 0, 2 * margin), _fold(dy, 0, 2 * margin)
        z = math.exp(cam_zoom * tt)
        cam = np.array([[z, 0, dx - (z - 1) * w / 2], [0, z, dy - (z - 1) * h / 2]])
        img = cv2.warpAffine(bg, cam, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        ids = np.zeros((h, w), np.uint8)
        full_area = {}
        for k in order:
            m = movers[k]
            p = _mover_warp(m, t, tt, h, w)
            if p is None:
                continue
            mask, tex, y0, x0 = p
            mh, mw = mask.shape
            img[y0:y0 + mh, x0:x0 + mw][mask] = tex[mask]
            ids[y0:y0 + mh, x0:x0 + mw][mask] = m.obj_id  # a distractor (0) hides what it covers
            if m.obj_id:
                full_area[m.obj_id] = int(mask.sum())
        for obj_id, full in full_area.items():
            if int(np.count_nonzero(ids == obj_id)) < full - max(2, 0.02 * full):
                occluded.add(obj_id)
        for m in movers:
            if not m.obj_id or t < m.t_appear:
                continue
            visible = m.obj_id in full_area
            if not visible and t > m.t_appear:
                seen_out[m.obj_id] = True
                left.add(m.obj_id)
        gain = 1 + gain_amp * math.sin(gain_w * tt + gain_ph)
        light = gain * (1 + cast * math.sin(cast_w * tt))[None, None, :] * (1 + grad_amp * (u + grad_w * tt))[..., None]
        img = img * light + noise_rng.normal(0.0, noise_sigma, img.shape).astype(np.float32)
        frames[t] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        masks[t] = ids
    if return_info:
        info = {"late": {m.obj_id: m.t_appear for m in movers if m.obj_id in late_ids},
                "left": sorted(left), "occluded": sorted(occluded), "distractors": n_dis}
        return frames, masks, info
    return frames, masks


def _render_varied_ids(movers, order, t, tt, h, w):
    """Id mask at frame t and {id: (visible px, full px)} for the labelled movers."""
    ids = np.zeros((h, w), np.uint8)
    full = {}
    for k in order:
        p = _mover_warp(movers[k], t, tt, h, w)
        if p is None:
            continue
        mask, _tex, y0, x0 = p
        mh, mw = mask.shape
        ids[y0:y0 + mh, x0:x0 + mw][mask] = movers[k].obj_id
        if movers[k].obj_id:
            full[movers[k].obj_id] = int(mask.sum())
    return ids, {i: (int(np.count_nonzero(ids == i)), f) for i, f in full.items()}
