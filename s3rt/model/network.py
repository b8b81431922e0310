"""The S3 / Cutie network as per-frame steps.

The tracker (and the exporter) call these steps; there is no `forward`. Each step has static
control flow (no branching on tensor values), so it traces into one ONNX graph:

    encode_image   image [B,3,H,W] in [0,1], padded  -> f16, f8, f4, pix_feat, key, shrinkage, selection
    read_memory    query key/selection + fixed-capacity memory -> visual readout [B,N,V,h,w]
    pixel_fusion   pix_feat, readout, sensory, last_mask -> fused pixel feature [B,N,C,h,w]
    readout_query  fused feature, object memory -> memory_readout [B,N,C,h,w]
    segment        f8, f4, memory_readout, sensory -> new sensory, logits, prob [B,N+1,H,W]
    encode_mask    image, pix_feat, sensory, masks -> values, new sensory, summaries [B,N,Q,C+1]
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from s3rt.model.config import ModelConfig
from s3rt.model.memory_readout import memory_readout
from s3rt.model.modules import (GConv2d, KeyProjection, MaskDecoder, MaskEncoder, PixelFeatureFuser,
                                others_mask)
from s3rt.model.resnet import ResNetStem
from s3rt.model.tensor_utils import aggregate
from s3rt.model.transformer import ObjectSummarizer, QueryTransformer


class AuxComputer(nn.Module):
    """Training-only auxiliary head. Kept so official checkpoints load key for key; unused here."""

    def __init__(self, sensory_dim: int, embed_dim: int):
        super().__init__()
        self.sensory_aux = nn.Module()
        self.sensory_aux.projection = GConv2d(sensory_dim, embed_dim + 1, kernel_size=1)


def _make_pixel_encoder(cfg: ModelConfig) -> nn.Module:
    if cfg.is_s3_encoder:
        from s3rt.model.vit_adapter import ViTAdapterEncoder  # large; imported only when needed
        return ViTAdapterEncoder(cfg)
    return ResNetStem(cfg.pixel_encoder, in_channels=3, first_stage_name="res2")


class VOSNetwork(nn.Module):
    """Cutie, or S3 when the config says so (ViT adapter encoder, discriminative queries)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.pixel_encoder = _make_pixel_encoder(cfg)
        self.pix_feat_proj = nn.Conv2d(cfg.ms_dims[0], cfg.pixel_dim, kernel_size=1)
        self.key_proj = KeyProjection(cfg.ms_dims[0], cfg.pixel_dim, cfg.key_dim)
        self.mask_encoder = MaskEncoder(cfg.pixel_dim, cfg.value_dim, cfg.sensory_dim)
        self.mask_decoder = MaskDecoder(cfg.ms_dims, cfg.up_dims, cfg.sensory_dim)
        self.pixel_fuser = PixelFeatureFuser(cfg.pixel_dim, cfg.value_dim, cfg.sensory_dim, cfg.embed_dim)
        self.object_transformer = QueryTransformer(cfg)
        self.object_summarizer = ObjectSummarizer(cfg)
        self.aux_computer = AuxComputer(cfg.sensory_dim, cfg.embed_dim)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)
        if cfg.embed_dim != cfg.up_dims[0]:
            raise ValueError("embed_dim must equal up_dims[0]")

    def check_image_size(self, height: int, width: int) -> None:
        m = self.cfg.pad_multiple
        if height % m or width % m:
            raise ValueError(
                f"{self.cfg.name} needs frames padded to a multiple of {m}; got {height}x{width}. "
                f"Pad with s3rt.model.tensor_utils.pad_divide_by(image, {m}) (the tracker does this).")

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.pixel_mean.to(image.dtype)) / self.pixel_std.to(image.dtype)

    # ---- per-frame steps -------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor):
        """image [B,3,H,W] RGB in [0,1], already padded -> (f16, f8, f4, pix_feat, key, shrinkage, selection)."""
        self.check_image_size(*image.shape[-2:])
        f16, f8, f4 = self.pixel_encoder(self.normalize(image))
        pix_feat = self.pix_feat_proj(f16)
        key, shrinkage, selection = self.key_proj(f16)
        return f16, f8, f4, pix_feat, key, shrinkage, selection

    def encode_mask(self, image, pix_feat, sensory, masks, deep_update: bool = True):
        """masks [B,N,H,W] probabilities -> values [B,N,V,h,w], new sensory [B,N,S,h,w], summaries [B,N,Q,C+1]."""
        values, new_sensory = self.mask_encoder(
            self.normalize(image), pix_feat, sensory, masks, others_mask(masks), deep_update=deep_update)
        summaries = self.object_summarizer(masks, values)
        return values, new_sensory, summaries

    def pixel_fusion(self, pix_feat, readout, sensory, last_mask, last_others=None):
        """last_mask [B,N,H,W] (last frame's probabilities). Pass `last_others` (already at h x w)
        when fusing a chunk of the objects, so 'others' still covers every object."""
        last_mask = F.interpolate(last_mask, size=sensory.shape[-2:], mode="area")
        if last_others is None:
            last_others = others_mask(last_mask)
        return self.pixel_fuser(pix_feat, readout, sensory, last_mask, last_others)

    def readout_query(self, fused, obj_memory):
        return self.object_transformer(fused, obj_memory)

    def segment(self, f8, f4, memory_readout, sensory, update_sensory: bool = True):
        """-> new sensory, logits [B,N+1,H,W] (after aggregate and x4 upsampling), prob (softmax)."""
        sensory, logits = self.mask_decoder(f8, f4, memory_readout, sensory, update_sensory=update_sensory)
        logits = aggregate(torch.sigmoid(logits), dim=1)
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        return sensory, logits, F.softmax(logits, dim=1)

    @staticmethod
    def read_memory(query_key, query_selection, mem_key, mem_shrinkage, mem_values, valid=None,
                    top_k: int = 30, return_usage: bool = False):
        """Reference memory readout over [B,C,h,w] query maps -> [B,N,V,h,w] (see memory_readout)."""
        b, _, h, w = query_key.shape
        out = memory_readout(query_key.flatten(2), query_selection.flatten(2), mem_key, mem_shrinkage,
                             mem_values, valid, top_k=top_k, return_usage=return_usage)
        if return_usage:
            return out[0].view(b, *out[0].shape[1:3], h, w), out[1]
        return out.view(b, *out.shape[1:3], h, w)
