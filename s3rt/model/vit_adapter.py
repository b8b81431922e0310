"""S3's pixel encoder: a frozen DepthAnything ViT-B in a ViT-Adapter with "spatial-semantic
blocks" (official S3 code: `DinoV2ViTAdapter` / `D2VitAdapterDinoV2` with
`InteractionBlockWithCls_Efficient`).

Data flow for a normalised image [B,3,H,W] (H, W multiples of 32; h, w = H/16, W/16):

- spatial prior: a conv stem gives c1 [B,D,H/4,W/4] (a map) and c2 / c3 tokens at H/8 and H/16;
  `level_embed[0]` / `[1]` are added to c2 / c3 and c = concat(c2, c3) is the adapter's query;
- the ViT (frozen, eval mode, no gradients) embeds 16x16 patches plus CLS and runs in four stages
  (`interaction_indexes`). After each stage i, block i of the adapter:
  1. semantic: c <- LN(c) + MHA(q = LN(c), k = v = [CLS, mean of the patch tokens]);
  2. spatial: c <- Extractor(c, patch tokens): deformable attention from every c token into the
     h x w patch-token map, then a ConvFFN; the last block runs two more Extractors;
  the stage's patch tokens x_i are kept as a map [B,D,h,w];
- output: c2, c3 back to maps; c1 <- up(c2) + c1; c1 += bilinear x4 (x_1), c2 += bilinear x2
  (x_2), c3 += x_3; BatchNorm each. Returns (f16, f8, f4) = (norm3(c3), norm2(c2), norm1(c1)),
  Cutie's order. The ViT is never modified by the adapter (the official block has no injector).
  The last stage's map x_4 is computed by the official code (and downsampled) but never used;
  it is not computed here. The last stage still feeds the last block's CLS reader and extractors.

Ablation switches (`ModelConfig.spatial` / `.semantic`; the paper's Table 3 "+ViT", "+spatial",
"+semantic"). The released code has no ablation switches, so these are our reading of the paper:
- spatial=False ("+ViT"): no spatial prior module, no level_embed, no extractors. The outputs are
  the ViT stage maps alone: f4 = norm1(bilinear x4 (x_1)), f8 = norm2(bilinear x2 (x_2)),
  f16 = norm3(x_3). `up` is kept (unused) so the module layout does not depend on the switch
  beyond the removed parts. semantic=False is then required (the CLS reader updates c).
- semantic=False ("+spatial"): the CLS cross-attention (`read_from_cls`) is skipped and its
  modules are absent; everything else is as in the full model.

Export notes: token-grid sizes, the c2 / c3 split, reference points and the deformable spatial
shapes are all computed from the (static) image size with Python integers; the position
embedding of the ViT can be computed with explicit output sizes (`set_export_mode`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from s3rt.model.config import ModelConfig
from s3rt.model.deform_attn import MSDeformAttn
from s3rt.model.vit import LN_EPS, DinoVisionTransformer

SIZE_DIVISOR = 32  # h and w even, so the official DWConv split is exact (as in the official code)


def reference_points(shapes: list[tuple[int, int]], device=None) -> torch.Tensor:
    """Normalised pixel centres ((j + 0.5) / W_l, (i + 0.5) / H_l) as (x, y), row-major per
    level, levels concatenated: [1, sum H_l * W_l, 1, 2] (one value level)."""
    refs = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack([ref_x.reshape(-1), ref_y.reshape(-1)], dim=-1))
    return torch.cat(refs, dim=0)[None, :, None, :]


def _tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class SpatialPriorModule(nn.Module):
    """Conv stem -> c1 [B,D,H/4,W/4] (map), c2 [B,H/8*W/8,D], c3 [B,H/16*W/16,D] (tokens).
    BatchNorm2d stands in for the official SyncBatchNorm (same keys and eval-mode math)."""

    def __init__(self, inplanes: int = 64, embed_dim: int = 768):
        super().__init__()

        def conv_bn_relu(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.stem = nn.Sequential(
            *conv_bn_relu(3, inplanes, 2),
            *conv_bn_relu(inplanes, inplanes, 1),
            *conv_bn_relu(inplanes, inplanes, 1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.conv2 = nn.Sequential(*conv_bn_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*conv_bn_relu(2 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, embed_dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s4 = self.stem(x)
        s8 = self.conv2(s4)
        s16 = self.conv3(s8)
        c1 = self.fc1(s4)
        c2 = self.fc2(s8).flatten(2).transpose(1, 2)
        c3 = self.fc3(s16).flatten(2).transpose(1, 2)
        return c1, c2, c3


class DWConv(nn.Module):
    """Depthwise 3x3 conv over the adapter tokens, which hold two maps back to back: the
    (2h, 2w) c2 grid then the (h, w) c3 grid. Both go through the same conv. The official code
    splits the sequence as N//20*16 + N//20*4 tokens, which is this split when h*w is a
    multiple of 4 (always so for frames padded to 32); here the split comes from h and w."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n8 = 4 * h * w
        x8 = self.dwconv(_tokens_to_map(x[:, :n8], 2 * h, 2 * w)).flatten(2).transpose(1, 2)
        x16 = self.dwconv(_tokens_to_map(x[:, n8:], h, w)).flatten(2).transpose(1, 2)
        return torch.cat([x8, x16], dim=1)


class ConvFFN(nn.Module):
    """Linear -> DWConv -> GELU (exact) -> Linear (dropout 0)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Extractor(nn.Module):
    """c <- c + MSDeformAttn(query_norm(c), ref, feat_norm(x)); c <- c + ConvFFN(ffn_norm(c)).
    LayerNorms use the ViT's eps (1e-6). Drop-path is 0 in S3, so it is omitted."""

    def __init__(self, dim: int, num_heads: int, n_points: int = 4, n_levels: int = 1, cffn_ratio: float = 0.25):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.feat_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = MSDeformAttn(d_model=dim, n_levels=n_levels, n_heads=num_heads, n_points=n_points)
        self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
        self.ffn_norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, query, ref, feat, spatial_shapes, h: int, w: int) -> torch.Tensor:
        query = query + self.attn(self.query_norm(query), ref, self.feat_norm(feat), spatial_shapes)
        return query + self.ffn(self.ffn_norm(query), h, w)


class ClsReader(nn.Module):
    """The semantic embedding (`read_from_cls`): c <- LN(c) + MHA(LN(c), mem, mem), where mem is
    [CLS token, mean patch token] [B,2,D]. The residual is the *normalised* c, as in the official
    CrossAttention. LayerNorm keeps PyTorch's default eps (1e-5)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, c: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        c = self.norm(c)
        out, _ = self.cross_attn(c, mem, mem, need_weights=False)
        return c + out


class InteractionBlock(nn.Module):
    """One spatial-semantic block (`InteractionBlockWithCls_Efficient`): a frozen ViT stage,
    then the CLS reader (if semantic), then the extractor(s) (if spatial)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_points: int,
        cffn_ratio: float,
        extra_extractor: bool,
        spatial: bool = True,
        semantic: bool = True,
    ):
        super().__init__()
        # registration order follows the official state dict: extractor, extra_extractors, read_from_cls
        if spatial:
            self.extractor = Extractor(dim, num_heads, n_points, 1, cffn_ratio)
            # only the last block has them; an empty ModuleList adds no keys
            self.extra_extractors = nn.ModuleList(
                Extractor(dim, num_heads, n_points, 1, cffn_ratio) for _ in range(2 if extra_extractor else 0)
            )
        if semantic:
            self.read_from_cls = ClsReader(dim, num_heads)
        self.spatial = spatial
        self.semantic = semantic

    def forward(self, x, c, cls, blocks, ref, spatial_shapes, h: int, w: int, freeze_vit: bool = True):
        """x [B,hw,D] patch tokens, c [B,5hw,D] adapter tokens (or None without the spatial
        branch), cls [B,1,D] -> the same three after this stage."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze_vit):
            tokens = torch.cat([cls, x], dim=1)
            for blk in blocks:
                tokens = blk(tokens)
            cls, x = tokens[:, :1], tokens[:, 1:]
        if self.semantic:
            c = self.read_from_cls(c, torch.cat([cls, x.mean(dim=1, keepdim=True)], dim=1))
        if self.spatial:
            c = self.extractor(c, ref, x, spatial_shapes, h, w)
            for extractor in self.extra_extractors:
                c = extractor(c, ref, x, spatial_shapes, h, w)
        return x, c, cls


class ViTAdapterEncoder(nn.Module):
    """S3's pixel encoder, mounted as `pixel_encoder` in the network. Keys and shapes equal the
    official `pixel_encoder.*` (level_embed, spm, interactions, up, norm1..3, vit_module).

    forward(image [B,3,H,W], normalised, H and W multiples of 32)
        -> (f16 [B,D,H/16,W/16], f8 [B,D,H/8,W/8], f4 [B,D,H/4,W/4]).

    The ViT is frozen (`freeze_vit`, the official eval setting): its parameters do not require
    grad, it runs without autograd and stays in eval mode whatever `.train()` is called with."""

    def __init__(self, cfg: ModelConfig, freeze_vit: bool = True):
        super().__init__()
        vcfg = cfg.vit
        if vcfg is None:
            raise ValueError(f"preset {cfg.name!r} has no ViT config; ViTAdapterEncoder needs pixel_encoder='vit_adapter'")
        dim = vcfg.embed_dim
        if vcfg.patch_size != 16:
            raise ValueError(f"the adapter's spatial prior module works at strides 4/8/16, so the ViT patch size must be 16, "
                             f"got {vcfg.patch_size}")
        if tuple(cfg.ms_dims) != (dim, dim, dim):
            raise ValueError(f"ms_dims {tuple(cfg.ms_dims)} must all equal the ViT embed dim {dim}")
        if cfg.semantic and not cfg.spatial:
            raise ValueError("semantic=True needs spatial=True: the CLS reader updates the spatial tokens")
        idx = [tuple(p) for p in vcfg.interaction_indexes]
        if len(idx) < 3:
            raise ValueError("the adapter needs at least 3 interaction stages (f4, f8, f16 come from stages 1-3)")
        if idx[0][0] != 0 or idx[-1][1] != vcfg.depth - 1 or any(b[0] != a[1] + 1 for a, b in zip(idx, idx[1:])):
            raise ValueError(f"interaction_indexes {idx} must cover ViT blocks 0..{vcfg.depth - 1} contiguously")

        self.cfg = cfg
        self.spatial = cfg.spatial
        self.semantic = cfg.semantic
        self.freeze_vit = freeze_vit
        self.interaction_indexes = idx
        self.embed_dim = dim

        # registration order follows the official state dict
        if self.spatial:
            self.level_embed = nn.Parameter(torch.zeros(2, dim))
            self.spm = SpatialPriorModule(vcfg.conv_inplane, dim)
        self.interactions = nn.ModuleList(
            InteractionBlock(
                dim, vcfg.deform_num_heads, vcfg.n_points, vcfg.cffn_ratio,
                extra_extractor=(i == len(idx) - 1), spatial=self.spatial, semantic=self.semantic,
            )
            for i in range(len(idx))
        )
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norm1 = nn.BatchNorm2d(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.norm3 = nn.BatchNorm2d(dim)
        self._init_adapter()

        self.vit_module = DinoVisionTransformer(
            embed_dim=dim, depth=vcfg.depth, num_heads=vcfg.num_heads, mlp_ratio=vcfg.mlp_ratio,
            patch_size=vcfg.patch_size, img_size=vcfg.pretrain_size,
        )
        if freeze_vit:
            self.vit_module.requires_grad_(False)
            self.vit_module.eval()

    # ------------------------------------------------------------------ setup

    def _init_adapter(self) -> None:
        """The official initialisation: trunc-normal Linear weights, unit norms, He-normal convs
        (fan-out), Deformable DETR's MSDeformAttn init, normal level_embed."""

        def init(m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.up.apply(init)
        if self.spatial:
            self.spm.apply(init)
        self.interactions.apply(init)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        if self.spatial:
            nn.init.normal_(self.level_embed)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_vit:
            self.vit_module.eval()
        return self

    def set_export_mode(self, enabled: bool = True) -> "ViTAdapterEncoder":
        """Compute the ViT position embedding with explicit output sizes (two constant matrices)
        instead of F.interpolate with scale factors; same numbers to ~1e-6, no Resize node whose
        coordinate convention an exporter or runtime could change."""
        self.vit_module.pos_embed_mode = "explicit" if enabled else "scale_factor"
        return self

    # ------------------------------------------------------------------ forward

    def check_image(self, image: torch.Tensor) -> tuple[int, int]:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a normalised image [B,3,H,W], got shape {tuple(image.shape)}")
        H, W = int(image.shape[-2]), int(image.shape[-1])
        if H % SIZE_DIVISOR or W % SIZE_DIVISOR:
            raise ValueError(
                f"S3's pixel encoder needs H and W to be multiples of {SIZE_DIVISOR}, got {H}x{W}: "
                f"pad the frame to a multiple of {SIZE_DIVISOR} first (s3rt.model.tensor_utils.pad_divide_by)"
            )
        return H, W

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        H, W = self.check_image(image)
        h, w = H // 16, W // 16

        c = ref = None
        shapes = [(h, w)]
        if self.spatial:
            c1, c2, c3 = self.spm(image)
            c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1]], dim=1)
            ref = reference_points([(2 * h, 2 * w), (h, w)], device=image.device)

        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_vit):
            tokens, _, _ = self.vit_module.prepare_tokens(image)
        cls, x = tokens[:, :1], tokens[:, 1:]

        stage_maps = []
        for block, (first, last) in zip(self.interactions, self.interaction_indexes):
            x, c, cls = block(x, c, cls, self.vit_module.blocks[first:last + 1], ref, shapes, h, w, self.freeze_vit)
            stage_maps.append(_tokens_to_map(x, h, w))
        x1, x2, x3 = stage_maps[:3]

        x1 = F.interpolate(x1, scale_factor=4.0, mode="bilinear", align_corners=False)
        x2 = F.interpolate(x2, scale_factor=2.0, mode="bilinear", align_corners=False)
        if self.spatial:
            n8 = 4 * h * w
            c2 = _tokens_to_map(c[:, :n8], 2 * h, 2 * w)
            c3 = _tokens_to_map(c[:, n8:], h, w)
            c1 = self.up(c2) + c1
            f4, f8, f16 = c1 + x1, c2 + x2, c3 + x3
        else:
            f4, f8, f16 = x1, x2, x3
        return self.norm3(f16), self.norm2(f8), self.norm1(f4)
