"""Training, validation and test clips from disjoint seed ranges.

Every clip is `s3rt.synthetic.make_varied_clip(..., seed=clip_seed)`. The seed ranges:

    train       [0, 1_000_000_000)              clip seed = run_seed * 10_000_000 + step * batch + i
    validation  [1_000_000_000, 1_100_000_000)  clip seed = 1_000_000_000 + i
    test        [2_000_000_000, 2_100_000_000)  clip seed = 2_000_000_000 + i

A training batch depends only on (run seed, step), so a resumed run sees exactly the batches
an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from s3rt.synthetic import make_varied_clip

SEED_RANGES = {
    "train": (0, 1_000_000_000),
    "val": (1_000_000_000, 1_100_000_000),
    "test": (2_000_000_000, 2_100_000_000),
}
RUN_SEED_STRIDE = 10_000_000


def clip_seed(split: str, index: int, run_seed: int = 0) -> int:
    lo, hi = SEED_RANGES[split]
    s = lo + (run_seed * RUN_SEED_STRIDE if split == "train" else 0) + int(index)
    if not lo <= s < hi:
        raise ValueError(f"{split} clip {index} (run seed {run_seed}) falls outside its seed range [{lo}, {hi})")
    return s


@dataclass(frozen=True)
class ClipSpec:
    """How training clips look."""

    num_frames: int = 5
    size: int = 128  # square crops; a multiple of 32 (S3 pads to 32)
    max_objects: int = 3
    object_probs: tuple[float, ...] = (0.2, 0.4, 0.4)  # P(1 object), P(2), P(3)
    speed: tuple[float, float] = (1.0, 5.0)  # motion per frame, uniform range (like Cutie's frame skips)
    leave_prob: float = 0.3


def clip_to_tensors(frames: np.ndarray, masks: np.ndarray, num_objects: int):
    """uint8 frames [T,H,W,3] and id masks [T,H,W] -> float frames [T,3,H,W] in [0,1] and
    one-hot object masks [T,N,H,W]."""
    f = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255)
    ids = torch.from_numpy(masks.astype(np.int64))
    gt = torch.stack([(ids == k + 1) for k in range(num_objects)], dim=1).float()
    return f, gt


def make_clip_for(split: str, index: int, spec: ClipSpec, num_objects: int, run_seed: int = 0,
                  backgrounds=None):
    seed = clip_seed(split, index, run_seed)
    rng = np.random.default_rng([seed, 7])
    speed = float(rng.uniform(*spec.speed))
    frames, masks = make_varied_clip(spec.num_frames, spec.size, spec.size, num_objects, seed, speed=speed,
                                     leave_prob=spec.leave_prob, backgrounds=backgrounds)
    return frames, masks


def batch_objects(run_seed: int, step: int, spec: ClipSpec) -> int:
    rng = np.random.default_rng([run_seed, step, 11])
    p = np.asarray(spec.object_probs[:spec.max_objects], dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum())) + 1


def make_batch(step: int, batch_size: int, spec: ClipSpec, run_seed: int = 0, backgrounds=None):
    """The training batch of one step: frames [B,T,3,H,W], one-hot gt [B,T,N,H,W]. All clips of
    a batch have the same number of objects N (drawn per step)."""
    n = batch_objects(run_seed, step, spec)
    fs, gs = [], []
    for i in range(batch_size):
        frames, masks = make_clip_for("train", step * batch_size + i, spec, n, run_seed, backgrounds)
        f, g = clip_to_tensors(frames, masks, n)
        fs.append(f)
        gs.append(g)
    return torch.stack(fs), torch.stack(gs)


def make_val_batches(count: int, batch_size: int, spec: ClipSpec):
    """Fixed validation batches (2 objects each, clips from the validation range)."""
    out = []
    for j in range(count):
        fs, gs = [], []
        for i in range(batch_size):
            idx = j * batch_size + i
            frames, masks = make_clip_for("val", idx, spec, 1 + idx % spec.max_objects)
            f, g = clip_to_tensors(frames, masks, 1 + idx % spec.max_objects)
            fs.append(f)
            gs.append(g)
        out.append((fs, gs))
    return out
