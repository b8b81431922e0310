"""Padding and probability helpers with Cutie's exact semantics."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_amounts(h: int, w: int, multiple: int) -> tuple[int, int, int, int]:
    """Centred padding (left, right, top, bottom) that makes h and w multiples of `multiple`.
    The odd pixel goes to the right / bottom, as in Cutie's `pad_divide_by`."""
    new_h = h + (-h) % multiple
    new_w = w + (-w) % multiple
    top, left = (new_h - h) // 2, (new_w - w) // 2
    return left, new_w - w - left, top, new_h - h - top


def pad_divide_by(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    pad = pad_amounts(x.shape[-2], x.shape[-1], multiple)
    return F.pad(x, pad), pad


def unpad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


def aggregate(prob: torch.Tensor, dim: int) -> torch.Tensor:
    """Soft-aggregate per-object probabilities into logits over [background, objects].
    Always FP32: in FP16 the clamp 1 - 1e-7 rounds to 1 and the logit becomes inf."""
    with torch.autocast(device_type=prob.device.type, enabled=False):
        prob = prob.float()
        bg = torch.prod(1 - prob, dim=dim, keepdim=True)
        new_prob = torch.cat([bg, prob], dim).clamp(1e-7, 1 - 1e-7)
        return torch.log(new_prob / (1 - new_prob))
