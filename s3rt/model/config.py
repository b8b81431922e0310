"""Model presets as data.

One `ModelConfig` describes every network s3rt can build: Cutie (ResNet encoder, masked
cross-attention) and S3 (DepthAnything ViT-B adapter encoder, discriminative queries), and
every step of the paper's ablation ladder in between. The official presets reproduce the
official state-dict keys and shapes (those of the released Cutie and S3 checkpoints); the `*-test`
presets keep the same architecture with narrow layers so tests run in seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTConfig:
    """The frozen DINOv2-style ViT inside S3's adapter encoder, and the adapter around it."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    # pos_embed is stored for a (pretrain_size / patch_size)^2 grid and interpolated per resolution.
    pretrain_size: int = 592
    # adapter
    conv_inplane: int = 64
    deform_num_heads: int = 12
    n_points: int = 4
    cffn_ratio: float = 0.25
    interaction_indexes: tuple[tuple[int, int], ...] = ((0, 2), (3, 5), (6, 8), (9, 11))


@dataclass(frozen=True)
class ModelConfig:
    name: str
    # "resnet50" / "resnet18" (Cutie) or "vit_adapter" (S3)
    pixel_encoder: str
    ms_dims: tuple[int, int, int]  # channels of f16, f8, f4
    pad_multiple: int = 16
    pixel_dim: int = 256
    key_dim: int = 64
    value_dim: int = 256
    sensory_dim: int = 256
    embed_dim: int = 256
    ff_dim: int = 2048
    num_heads: int = 8
    num_blocks: int = 3
    num_queries: int = 16
    up_dims: tuple[int, int, int] = (256, 128, 128)
    pixel_pe_scale: int = 32
    pixel_pe_temperature: int = 128
    # Ablation switches (S3 paper, Table 3): Cutie -> +discriminative query -> +ViT -> +spatial -> +semantic.
    discriminative_query: bool = False  # DQ_CA replaces masked cross-attention in read_from_pixel
    spatial: bool = True  # ViT adapter: spatial prior module + deformable extractors
    semantic: bool = True  # ViT adapter: CLS / mean-token cross-attention in each block
    vit: ViTConfig | None = None
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.pixel_encoder not in ("resnet50", "resnet18", "vit_adapter"):
            raise ValueError(f"unknown pixel_encoder {self.pixel_encoder!r}")
        if self.pixel_encoder == "vit_adapter" and self.vit is None:
            raise ValueError("pixel_encoder='vit_adapter' needs a ViTConfig")
        if self.num_queries % 2:
            raise ValueError("num_queries must be even (half foreground, half background queries)")
        if self.semantic and not self.spatial and self.pixel_encoder == "vit_adapter":
            raise ValueError("semantic=True needs spatial=True: the CLS reader updates the spatial tokens")

    @property
    def is_s3_encoder(self) -> bool:
        return self.pixel_encoder == "vit_adapter"

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


_CUTIE_BASE = ModelConfig(name="cutie-base", pixel_encoder="resnet50", ms_dims=(1024, 512, 256))
_S3_BASE = ModelConfig(
    name="s3-base",
    pixel_encoder="vit_adapter",
    ms_dims=(768, 768, 768),
    pad_multiple=32,
    num_blocks=5,
    num_queries=8,
    discriminative_query=True,
    vit=ViTConfig(),
)
# Narrow versions of the same architectures, for tests: every module and code path is kept.
_TEST_DIMS = dict(
    pixel_dim=64, key_dim=16, value_dim=64, sensory_dim=32, embed_dim=64, ff_dim=128,
    num_heads=4, up_dims=(64, 32, 32),
)
_S3_TEST = _S3_BASE.replace(
    name="s3-test",
    ms_dims=(96, 96, 96),
    num_blocks=2,
    num_queries=4,
    vit=ViTConfig(
        embed_dim=96, depth=4, num_heads=3, pretrain_size=160, conv_inplane=16,
        deform_num_heads=3, interaction_indexes=((0, 0), (1, 1), (2, 2), (3, 3)),
    ),
    **_TEST_DIMS,
)

PRESETS: dict[str, ModelConfig] = {
    "cutie-base": _CUTIE_BASE,
    "cutie-small": _CUTIE_BASE.replace(name="cutie-small", pixel_encoder="resnet18", ms_dims=(256, 128, 64)),
    "s3-base": _S3_BASE,
    "cutie-test": _CUTIE_BASE.replace(
        name="cutie-test", pixel_encoder="resnet18", ms_dims=(256, 128, 64), num_blocks=2, num_queries=4,
        **_TEST_DIMS,
    ),
    "s3-test": _S3_TEST,
}

# The ablation ladder of the S3 paper (Table 3) on the full-size S3 architecture.
ABLATIONS: dict[str, dict] = {
    "cutie": dict(pixel_encoder="resnet50", ms_dims=(1024, 512, 256), pad_multiple=16,
                  discriminative_query=False, num_blocks=3, num_queries=16, vit=None),
    "+dq": dict(pixel_encoder="resnet50", ms_dims=(1024, 512, 256), pad_multiple=16,
                discriminative_query=True, num_blocks=3, num_queries=16, vit=None),
    "+vit": dict(spatial=False, semantic=False),
    "+spatial": dict(spatial=True, semantic=False),
    "+semantic": dict(spatial=True, semantic=True),
}


def get_config(preset: str | ModelConfig, **overrides) -> ModelConfig:
    """Look up a preset by name (or pass a config through) and apply overrides such as
    `discriminative_query=False` or `ablation="+spatial"`."""
    if isinstance(preset, ModelConfig):
        cfg = preset
    else:
        try:
            cfg = PRESETS[preset]
        except KeyError:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None
    ablation = overrides.pop("ablation", None)
    if ablation is not None:
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}")
        if not cfg.is_s3_encoder:
            raise ValueError("ablations apply to an S3 preset (they switch S3's parts off)")
        cfg = cfg.replace(name=f"{cfg.name}{ablation}", **ABLATIONS[ablation])
    if overrides:
        cfg = cfg.replace(**overrides)
    return cfg
