"""The frozen DepthAnything ViT-B inside S3's pixel encoder (official S3 code, `s3/model/backbones`).

A DINOv2-style vision transformer with the official key names (`patch_embed.proj`, `cls_token`,
`pos_embed`, `mask_token`, `blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,
ls2.gamma}`, `norm`). S3 builds it with a 16x16 patch conv (the DepthAnything 14x14 kernel
bilinearly resized, see `convert_depthanything_vit`) and a position-embedding table for a
592 / 16 = 37 x 37 grid, which is bicubically resized to the token grid of each frame.

What S3 uses: `prepare_tokens` (patch embedding + CLS + interpolated position embedding) and the
blocks, stage by stage, on pre-norm tokens. `norm` and `mask_token` exist for key parity only.

Position embeddings. The official `interpolate_pos_encoding` (DINOv2's first release) calls
`F.interpolate(grid, scale_factor=((gh + 0.1) / G, (gw + 0.1) / G), mode="bicubic")` with no
antialias and align_corners False, in FP32, and returns the table untouched when the frame is
exactly the pretraining size. Because a scale factor is given, PyTorch maps output pixel i to the
source coordinate (i + 0.5) * G / (g + 0.1) - 0.5, *not* (i + 0.5) * G / g - 0.5: passing
`size=(gh, gw)` instead would give different numbers. `interpolate_pos_embed(..., mode="explicit")`
reproduces the official numbers with an explicit output size, as two small interpolation
matrices built from Python integers (two MatMuls in an exported graph, no Resize node).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-6  # the ViT's norm_layer, also used by the adapter's extractors
_CUBIC_A = -0.75  # PyTorch's bicubic kernel parameter


# ----------------------------------------------------------------------------------------------
# position-embedding interpolation


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution weights (A = -0.75) of the 4 taps at offsets -1, 0, 1, 2 for a
    fractional position t in [0, 1); returns [..., 4]."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(in_size: int, out_size: int, scale: float | None = None) -> np.ndarray:
    """[out_size, in_size] FP64 matrix M such that M @ v is PyTorch's 1-D bicubic resize of v
    (align_corners False, no antialias, border-clamped taps).

    `scale` is the source step per output pixel; None means in_size / out_size (what
    `F.interpolate(size=...)` uses). For `F.interpolate(scale_factor=s)` pass 1 / s. The source
    coordinate follows PyTorch's CPU kernel: the step is rounded to FP32 and
    step * (i + 0.5) - 0.5 is rounded once to FP32 (a fused multiply-add); the cubic weights of
    that coordinate are then exact. The result agrees with F.interpolate to about 1e-6 relative
    (the kernel's own FP32 weight and accumulation rounding), not bit for bit. Built with NumPy
    from Python numbers, so it is a constant in a traced or exported graph."""
    step = in_size / out_size if scale is None else scale
    step32 = float(np.float32(step))
    dst = np.arange(out_size, dtype=np.float64)
    src = (step32 * (dst + 0.5) - 0.5).astype(np.float32).astype(np.float64)
    base = np.floor(src)
    w = _cubic_weights(src - base)  # [out, 4]
    taps = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_size), 4), taps.reshape(-1)), w.reshape(-1))
    return mat


def pos_embed_scale_factors(grid_hw: tuple[int, int], pretrain_grid: int) -> tuple[float, float]:
    """DINOv2's "+0.1" scale factors, (gh + 0.1) / G and (gw + 0.1) / G, computed as the
    official code does (G = sqrt(number of patch positions))."""
    g = math.sqrt(pretrain_grid * pretrain_grid)
    return (grid_hw[0] + 0.1) / g, (grid_hw[1] + 0.1) / g


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_hw: tuple[int, int], mode: str = "scale_factor") -> torch.Tensor:
    """Resize a [1, 1 + G*G, D] position-embedding table (CLS first) to a (gh, gw) token grid.

    mode "scale_factor": the official computation (F.interpolate with the "+0.1" scale factors).
    mode "explicit": the same numbers (to FP32 rounding, about 1e-6 relative) from an explicit
    output size, as separable bicubic matrices; use it for export. Both return the table
    unchanged at (G, G), as the official code does, compute in FP32 and return the table's dtype.
    Output [1, 1 + gh*gw, D]."""
    if mode not in ("scale_factor", "explicit"):
        raise ValueError(f"unknown position-embedding interpolation mode {mode!r}; use 'scale_factor' or 'explicit'")
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    n = pos_embed.shape[1] - 1
    g = int(math.sqrt(n))
    if g * g != n:
        raise ValueError(f"pos_embed has {n} patch positions, which is not a square grid")
    if gh == g and gw == g:
        return pos_embed
    dtype = pos_embed.dtype
    table = pos_embed.float()
    cls_pe, patch_pe = table[:, :1], table[:, 1:]
    dim = table.shape[-1]
    grid = patch_pe.reshape(1, g, g, dim)
    sh, sw = pos_embed_scale_factors((gh, gw), g)
    if mode == "scale_factor":
        out = F.interpolate(grid.permute(0, 3, 1, 2), scale_factor=(sh, sw), mode="bicubic")
        if out.shape[-2:] != (gh, gw):  # the official code asserts the same
            raise RuntimeError(f"bicubic resize gave a {tuple(out.shape[-2:])} grid, expected {(gh, gw)}")
        out = out.permute(0, 2, 3, 1)
    else:
        mh = torch.from_numpy(bicubic_matrix(g, gh, 1.0 / sh)).to(device=table.device, dtype=torch.float32)
        mwt = torch.from_numpy(bicubic_matrix(g, gw, 1.0 / sw).T.copy()).to(device=table.device, dtype=torch.float32)
        # rows: [gh, G] @ [G, G*D]; columns: [gh, D, G] @ [G, gw]  (two MatMuls, no Einsum)
        rows = torch.matmul(mh, grid.reshape(g, g * dim)).reshape(gh, g, dim)
        out = torch.matmul(rows.transpose(1, 2), mwt).permute(0, 2, 1)
    out = out.reshape(1, gh * gw, dim)
    return torch.cat([cls_pe, out], dim=1).to(dtype)


# ----------------------------------------------------------------------------------------------
# layers


class PatchEmbed(nn.Module):
    """Non-overlapping patch conv: [B,3,H,W] -> tokens [B, (H/p)*(W/p), D] and the grid (H/p, W/p)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        x = self.proj(x)
        gh, gw = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), gh, gw


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (plain softmax attention)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale (drop-path 0, as in S3's ViT)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, init_values: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with one CLS token, no registers, plain `blocks.{i}` (no chunks).

    `pos_embed_mode` selects how the position embedding is resized per frame: "scale_factor"
    (the official F.interpolate call, default) or "explicit" (same numbers, explicit output
    size; use it for export)."""

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        img_size: int = 592,
        init_values: float = 1e-5,
        in_chans: int = 3,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.pretrain_grid = img_size // patch_size
        self.pos_embed_mode = "scale_factor"
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pretrain_grid**2, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, init_values) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)  # unused by S3; kept for key parity
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused by S3; kept for key parity
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DINOv2's initialisation (the weights are replaced by DepthAnything's in practice)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def pos_embed_for_grid(self, gh: int, gw: int) -> torch.Tensor:
        return interpolate_pos_embed(self.pos_embed, (gh, gw), self.pos_embed_mode)

    def prepare_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Image [B,3,H,W] -> tokens [B, 1 + gh*gw, D] (CLS first) with position embeddings, gh, gw."""
        tokens, gh, gw = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        return tokens + self.pos_embed_for_grid(gh, gw).to(tokens.dtype), gh, gw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-norm tokens after all blocks, [B, 1 + gh*gw, D] (for tests and inspection)."""
        tokens, _, _ = self.prepare_tokens(x)
        for blk in self.blocks:
            tokens = blk(tokens)
        return tokens


_VIT_TOP_LEVEL = ("cls_token", "pos_embed", "mask_token", "patch_embed", "blocks", "norm")


def convert_depthanything_vit(state_dict: Mapping[str, torch.Tensor], patch_size: int = 16) -> dict[str, torch.Tensor]:
    """A DepthAnything (or DINOv2) checkpoint -> the state dict of `DinoVisionTransformer` with a
    `patch_size` patch conv, as the official `load_pretrained_weights` prepares it:

    - take `state_dict["model"]` when present;
    - strip the `pretrained.` prefix (DepthAnything keeps its encoder there);
    - keep the encoder keys only (`cls_token`, `pos_embed`, `mask_token`, `patch_embed.*`,
      `blocks.*`, `norm.*`); the official loader drops the rest (`depth_head.*`) via strict=False;
    - resize `patch_embed.proj.weight` (D,3,14,14) to (D,3,p,p), bilinear with align_corners=True
      and no magnitude rescaling (computed in FP32, returned in the stored dtype).
    """
    if "model" in state_dict and not isinstance(state_dict["model"], torch.Tensor):
        state_dict = state_dict["model"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.replace("pretrained.", "")
        if key.split(".", 1)[0] in _VIT_TOP_LEVEL:
            out[key] = value
    if "patch_embed.proj.weight" not in out:
        raise KeyError("the checkpoint has no patch_embed.proj.weight (with or without the 'pretrained.' prefix); "
                       "is it a DepthAnything / DINOv2 checkpoint?")
    w = out["patch_embed.proj.weight"]
    out["patch_embed.proj.weight"] = F.interpolate(
        w.float(), size=(patch_size, patch_size), mode="bilinear", align_corners=True
    ).to(w.dtype)
    return out
