"""Multi-scale deformable attention (Deformable DETR), as S3's extractors use it.

The math is that of the official pure-PyTorch path (`ms_deform_attn_core_pytorch` in the
mask2former ops S3 vendors): each query, head, level and point samples the value map bilinearly
at reference point + offset / (W_l, H_l), through `F.grid_sample` (bilinear, zero padding,
align_corners False, sampling grid = 2 * location - 1), and the samples are averaged with
softmax weights over levels x points. `grid_sample` exports to ONNX GridSample (opset >= 16) and
runs in TensorRT without a plugin.

Spatial shapes are Python integers, not a tensor, so every shape in the graph is static and no
value is read back from the device.

Key parity note: S3's copy of the module accepts ViT-Adapter's `ratio` argument but ignores it, so
`value_proj` and `output_proj` are d_model x d_model (768 x 768 in S3-base, not 384). This module
does the same (`ratio` is accepted and ignored).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def ms_deform_attn_sample(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The sampling core.

    value [N, S, M, Dh] (S = sum of H_l * W_l over levels, M heads of Dh channels);
    sampling_locations [N, Lq, M, L, P, 2] as (x, y) in [0, 1] (pixel centres at (i + 0.5) / size);
    attention_weights [N, Lq, M, L, P] -> output [N, Lq, M * Dh]."""
    n, s, m, dh = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    sizes = [h * w for h, w in spatial_shapes]
    if len(sizes) != n_levels:
        raise ValueError(f"{len(sizes)} spatial shapes for {n_levels} levels of sampling locations")
    if sum(sizes) != s:
        raise ValueError(f"value has {s} tokens but the spatial shapes {list(spatial_shapes)} hold {sum(sizes)}")
    grids = 2 * sampling_locations - 1
    samples = []
    for lvl, (value_l, (h, w)) in enumerate(zip(value.split(sizes, dim=1), spatial_shapes)):
        # [N, HW, M, Dh] -> [N*M, Dh, H, W]
        value_l = value_l.flatten(2).transpose(1, 2).reshape(n * m, dh, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N*M, Dh, Lq, L, P] -> [N*M, Dh, Lq, L*P]
    stacked = torch.stack(samples, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)
    out = (stacked * weights).sum(-1).view(n, m * dh, lq)
    return out.transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable attention over `n_levels` feature maps with `n_heads` heads of `n_points` points.

    Keys: sampling_offsets, attention_weights, value_proj, output_proj (all nn.Linear)."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, ratio: float = 1.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        del ratio  # accepted for signature parity with the official module, ignored as it is there
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: zero offset weights, offset biases on a ring of
        directions (one per head) growing with the point index, uniform attention, Xavier
        projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        dirs = torch.stack([angles.cos(), angles.sin()], -1)
        dirs = dirs / dirs.abs().max(-1, keepdim=True)[0]
        dirs = dirs.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        dirs = dirs * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(dirs.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query [N, Lq, C]; reference_points [N or 1, Lq, n_levels, 2] as (x, y) in [0, 1];
        value [N, S, C] (levels flattened and concatenated); spatial_shapes [(H_l, W_l)] as ints;
        padding_mask [N, S] (True = padding) or None -> [N, Lq, C]."""
        n, lq, _ = query.shape
        s = value.shape[1]
        if reference_points.shape[-1] != 2:
            raise ValueError(f"reference points must be (x, y) pairs, got last dim {reference_points.shape[-1]}")
        if len(spatial_shapes) != self.n_levels:
            raise ValueError(f"{len(spatial_shapes)} spatial shapes given to a {self.n_levels}-level MSDeformAttn")
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        # (W_l, H_l) per level: offsets are in pixels of each level
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=offsets.dtype, device=offsets.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = ms_deform_attn_sample(v, spatial_shapes, locations, weights)
        return self.output_proj(out)
