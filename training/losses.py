"""Cutie's loss, as its training code computes it: Mask2Former-style point supervision.

For every (sample, frame) the logits [N+1, H, W] (background + objects) are sampled at
`num_points` points: `importance_ratio` of them the most uncertain among
`oversample * num_points` random candidates (uncertainty = -(top1 - top2) of the logits), the
rest uniformly at random. Cross-entropy against the (soft) one-hot ground truth at those
points, summed over time and averaged over points; plus Dice on the softmax of the sampled
logits (objects only, +1 smoothing), summed over time and averaged over objects. Both are
averaged over the batch. Auxiliary logits at a lower resolution are sampled at the same
normalised coordinates (no upsampling needed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """x [B,C,H,W], coords [B,P,2] in [0,1] (x, y) -> [B,C,P] (bilinear, align_corners=False)."""
    return F.grid_sample(x, 2.0 * coords.unsqueeze(2) - 1.0, mode="bilinear", align_corners=False).squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """[B,C,P] -> [B,1,P]: minus the gap between the two largest logits (0 = most uncertain)."""
    top2 = torch.topk(logits, k=2, dim=1)[0]
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


@torch.no_grad()
def uncertain_point_coords(logits: torch.Tensor, num_points: int, oversample: float, importance_ratio: float,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """[B,C,H,W] logits -> [B,num_points,2] coordinates in [0,1]."""
    b = logits.shape[0]
    n_sampled = int(num_points * oversample)
    cand = torch.rand(b, n_sampled, 2, generator=generator, device="cpu").to(logits.device)
    unc = uncertainty(point_sample(logits, cand))[:, 0]  # [B, n_sampled]
    n_unc = int(importance_ratio * num_points)
    n_rand = num_points - n_unc
    idx = torch.topk(unc, k=n_unc, dim=1)[1]
    picked = torch.gather(cand, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    if n_rand > 0:
        rand = torch.rand(b, n_rand, 2, generator=generator, device="cpu").to(logits.device)
        picked = torch.cat([picked, rand], dim=1)
    return picked


def point_mask_loss(logits: torch.Tensor, soft_gt: torch.Tensor, *, num_points: int, oversample: float = 3.0,
                    importance_ratio: float = 0.75, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B,T,C,h,w] (C = 1 + objects, any resolution), soft_gt [B,T,C,H,W] in [0,1]
    -> (cross-entropy, dice), each summed over T and averaged over points / objects and batch."""
    b, t, c = logits.shape[:3]
    flat = logits.flatten(0, 1).float()
    coords = uncertain_point_coords(flat, num_points, oversample, importance_ratio, generator)
    with torch.no_grad():
        labels = point_sample(soft_gt.flatten(0, 1).float(), coords)  # [BT, C, P]
    point_logits = point_sample(flat, coords)  # [BT, C, P]
    ce = F.cross_entropy(point_logits, labels, reduction="none")  # [BT, P]
    ce = ce.view(b, t, -1).sum(1).mean()
    prob = point_logits.softmax(dim=1)[:, 1:]
    gt = labels[:, 1:]
    dice = 1 - (2 * (prob * gt).sum(-1) + 1) / (prob.sum(-1) + gt.sum(-1) + 1)  # [BT, C-1]
    dice = dice.view(b, t, -1).sum(1).mean()
    return ce, dice
