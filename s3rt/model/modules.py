"""Cutie's building blocks (shared by S3), with the official key names.

Naming: x is a feature shared by all objects [B,C,H,W]; g is per object [B,N,C,H,W].
FP32 islands (GRU, prediction conv) run with autocast disabled, as in the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from s3rt.model.resnet import ResNetStem


def _no_autocast(t: torch.Tensor):
    return torch.autocast(device_type=t.device.type, enabled=False)


def interpolate_groups(g: torch.Tensor, ratio: float, mode: str, align_corners: bool | None) -> torch.Tensor:
    b, n = g.shape[:2]
    out = F.interpolate(g.flatten(0, 1), scale_factor=ratio, mode=mode, align_corners=align_corners)
    return out.view(b, n, *out.shape[1:])


def upsample_groups(g: torch.Tensor, ratio: float = 2) -> torch.Tensor:
    return interpolate_groups(g, ratio, "bilinear", False)


def downsample_groups(g: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    return interpolate_groups(g, ratio, "area", None)


def others_mask(masks: torch.Tensor) -> torch.Tensor:
    """For each object, the union (clamped sum) of all the other objects' masks. [B,N,H,W]"""
    return (masks.sum(dim=1, keepdim=True) - masks).clamp(0, 1)


class GConv2d(nn.Conv2d):
    """A Conv2d applied to every object of a [B,N,C,H,W] tensor."""

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        b, n = g.shape[:2]
        out = super().forward(g.flatten(0, 1))
        return out.view(b, n, *out.shape[1:])


class GroupResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.downsample = nn.Identity() if cin == cout else GConv2d(cin, cout, kernel_size=1)
        self.conv1 = GConv2d(cin, cout, kernel_size=3, padding=1)
        self.conv2 = GConv2d(cout, cout, kernel_size=3, padding=1)

    def forward(self, g):
        out = self.conv2(F.relu(self.conv1(F.relu(g))))
        return out + self.downsample(g)


class CAResBlock(nn.Module):
    """Residual block with ECA-style channel attention (1-D conv over pooled channels)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, padding=1)
        t = int((abs(math.log2(cout)) + 1) // 2)
        k = t if t % 2 else t + 1
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.downsample = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x):
        r = x
        x = self.conv2(F.relu(self.conv1(F.relu(x))))
        b, c = x.shape[:2]
        w = self.pool(x).view(b, 1, c)
        w = self.conv(w).transpose(-1, -2).unsqueeze(-1).sigmoid()
        return x * w + self.downsample(r)


class MainToGroupDistributor(nn.Module):
    """Broadcasts a shared feature x to every object and combines it with g ('cat' or 'add')."""

    def __init__(self, x_transform: nn.Module | None = None, g_transform: nn.Module | None = None,
                 method: str = "cat"):
        super().__init__()
        self.x_transform = x_transform
        self.g_transform = g_transform
        self.method = method

    def forward(self, x, g):
        if self.x_transform is not None:
            x = self.x_transform(x)
        if self.g_transform is not None:
            g = self.g_transform(g)
        x = x.unsqueeze(1).expand(-1, g.shape[1], -1, -1, -1)
        return torch.cat([x, g], 2) if self.method == "cat" else x + g


class GroupFeatureFusionBlock(nn.Module):
    def __init__(self, x_dim: int, g_dim: int, out_dim: int):
        super().__init__()
        self.distributor = MainToGroupDistributor(
            nn.Conv2d(x_dim, out_dim, kernel_size=1), GConv2d(g_dim, out_dim, kernel_size=1), method="add")
        self.block1 = CAResBlock(out_dim, out_dim)
        self.block2 = CAResBlock(out_dim, out_dim)

    def forward(self, x, g):
        b, n = g.shape[:2]
        g = self.distributor(x, g).flatten(0, 1)
        g = self.block2(self.block1(g))
        return g.view(b, n, *g.shape[1:])


def recurrent_update(h: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Cutie's GRU: forget / update gates and a candidate from 3 chunks of the channels."""
    dim = values.shape[2] // 3
    forget_gate = torch.sigmoid(values[:, :, :dim])
    update_gate = torch.sigmoid(values[:, :, dim:dim * 2])
    new_value = torch.tanh(values[:, :, dim * 2:])
    return forget_gate * h * (1 - update_gate) + update_gate * new_value


class SensoryUpdater(nn.Module):
    """Decoder-side sensory update from the 1/16, 1/8 and 1/4 decoder features (FP32 GRU)."""

    def __init__(self, g_dims: tuple[int, int, int], mid_dim: int, sensory_dim: int):
        super().__init__()
        self.g16_conv = GConv2d(g_dims[0], mid_dim, kernel_size=1)
        self.g8_conv = GConv2d(g_dims[1], mid_dim, kernel_size=1)
        self.g4_conv = GConv2d(g_dims[2], mid_dim, kernel_size=1)
        self.transform = GConv2d(mid_dim + sensory_dim, sensory_dim * 3, kernel_size=3, padding=1)
        nn.init.xavier_normal_(self.transform.weight)

    def forward(self, p16, p8, p4, h):
        g = self.g16_conv(p16) + self.g8_conv(downsample_groups(p8, 1 / 2)) + \
            self.g4_conv(downsample_groups(p4, 1 / 4))
        with _no_autocast(g):
            g, h = g.float(), h.float()
            return recurrent_update(h, self.transform(torch.cat([g, h], dim=2)))


class SensoryDeepUpdater(nn.Module):
    """Mask-encoder-side sensory update from the new memory value (FP32 GRU)."""

    def __init__(self, f_dim: int, sensory_dim: int):
        super().__init__()
        self.transform = GConv2d(f_dim + sensory_dim, sensory_dim * 3, kernel_size=3, padding=1)
        nn.init.xavier_normal_(self.transform.weight)

    def forward(self, g, h):
        with _no_autocast(g):
            g, h = g.float(), h.float()
            return recurrent_update(h, self.transform(torch.cat([g, h], dim=2)))


class KeyProjection(nn.Module):
    """Key, shrinkage (>= 1) and selection (in (0,1)) from the stride-16 feature."""

    def __init__(self, in_dim: int, mid_dim: int, key_dim: int):
        super().__init__()
        self.pix_feat_proj = nn.Conv2d(in_dim, mid_dim, kernel_size=1)
        self.key_proj = nn.Conv2d(mid_dim, key_dim, kernel_size=3, padding=1)
        self.d_proj = nn.Conv2d(mid_dim, 1, kernel_size=3, padding=1)
        self.e_proj = nn.Conv2d(mid_dim, key_dim, kernel_size=3, padding=1)
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)

    def forward(self, f16):
        x = self.pix_feat_proj(f16)
        shrinkage = self.d_proj(x) ** 2 + 1
        selection = torch.sigmoid(self.e_proj(x))
        return self.key_proj(x), shrinkage, selection


class MaskEncoder(ResNetStem):
    """ResNet-18 over [RGB, mask, others] per object, fused with the pixel feature; then the
    deep sensory update. Attributes sit directly on the module (official keys `mask_encoder.conv1`...)."""

    def __init__(self, pixel_dim: int, value_dim: int, sensory_dim: int):
        super().__init__("resnet18", in_channels=5, first_stage_name="layer1", relu_after_pool=True)
        self.fuser = GroupFeatureFusionBlock(pixel_dim, self.out_channels[0], value_dim)
        self.sensory_update = SensoryDeepUpdater(value_dim, sensory_dim)

    def forward(self, image, pix_feat, sensory, masks, others, deep_update: bool = True):
        b, n = masks.shape[:2]
        g = torch.stack([masks, others], dim=2)
        g = torch.cat([image.unsqueeze(1).expand(-1, n, -1, -1, -1), g], 2).flatten(0, 1)
        f16 = super().forward(g)[0]
        value = self.fuser(pix_feat, f16.view(b, n, *f16.shape[1:]))
        new_sensory = self.sensory_update(value, sensory) if deep_update else sensory
        return value, new_sensory


class PixelFeatureFuser(nn.Module):
    """Memory readout + compressed sensory memory and last mask, fused with the pixel feature."""

    def __init__(self, pixel_dim: int, value_dim: int, sensory_dim: int, embed_dim: int):
        super().__init__()
        self.fuser = GroupFeatureFusionBlock(pixel_dim, value_dim, embed_dim)
        self.sensory_compress = GConv2d(sensory_dim + 2, value_dim, kernel_size=1)

    def forward(self, pix_feat, readout, sensory, last_mask, last_others):
        masks = torch.stack([last_mask, last_others], dim=2)
        p16 = readout + self.sensory_compress(torch.cat([sensory, masks], 2))
        return self.fuser(pix_feat, p16)


class MaskUpsampleBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.distributor = MainToGroupDistributor(method="add")
        self.out_conv = GroupResBlock(cin, cout)

    def forward(self, g, skip):
        return self.out_conv(self.distributor(skip, upsample_groups(g, 2)))


class DecoderFeatureProcessor(nn.Module):
    def __init__(self, in_dims, out_dims):
        super().__init__()
        self.transforms = nn.ModuleList(nn.Conv2d(i, o, kernel_size=1) for i, o in zip(in_dims, out_dims))

    def forward(self, feats):
        return [t(f) for f, t in zip(feats, self.transforms)]


class MaskDecoder(nn.Module):
    """Upsamples the per-object readout with skip connections from f8 / f4 to stride-4 logits,
    and (optionally) updates the sensory memory. The `pred` conv runs in FP32."""

    def __init__(self, ms_dims, up_dims, sensory_dim: int):
        super().__init__()
        self.sensory_update = SensoryUpdater((up_dims[0], up_dims[1], up_dims[2] + 1), sensory_dim, sensory_dim)
        self.decoder_feat_proc = DecoderFeatureProcessor(ms_dims[1:], up_dims[:-1])
        self.up_16_8 = MaskUpsampleBlock(up_dims[0], up_dims[1])
        self.up_8_4 = MaskUpsampleBlock(up_dims[1], up_dims[2])
        self.pred = nn.Conv2d(up_dims[-1], 1, kernel_size=3, padding=1)

    def forward(self, f8, f4, p16, sensory, update_sensory: bool = True):
        b, n = p16.shape[:2]
        f8, f4 = self.decoder_feat_proc([f8, f4])
        p8 = self.up_16_8(p16, f8)
        p4 = self.up_8_4(p8, f4)
        with _no_autocast(p4):
            logits = self.pred(F.relu(p4.flatten(0, 1).float()))
        logits = logits.view(b, n, *logits.shape[-2:])
        if update_sensory:
            p4 = torch.cat([p4, logits.unsqueeze(2).to(p4.dtype)], 2)
            sensory = self.sensory_update(p16, p8, p4, sensory)
        return sensory, logits
