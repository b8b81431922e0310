"""The faithful PyTorch reference of S3 and Cutie."""

from __future__ import annotations

import os

import torch

from s3rt.model.bundled import BUNDLED, bundled_presets, require_bundled
from s3rt.model.checkpoint import CheckpointMismatchError, load_checkpoint
from s3rt.model.config import ABLATIONS, PRESETS, ModelConfig, get_config
from s3rt.model.network import VOSNetwork

__all__ = ["build_model", "get_config", "PRESETS", "ABLATIONS", "ModelConfig", "VOSNetwork",
           "CheckpointMismatchError", "bundled_presets"]


def build_model(preset: str | ModelConfig, checkpoint: str | os.PathLike | dict | None = None, *,
                seed: int = 0, strict: bool = True, **overrides) -> VOSNetwork:
    """Build a network in eval mode.

    preset: a name from PRESETS ('s3-base', 'cutie-base', 'cutie-small', 's3-test', 'cutie-test')
        or a ModelConfig; overrides change config fields, e.g. `discriminative_query=False` or
        `ablation='+spatial'` (S3 presets).
    checkpoint: an official .pth path or a state dict; "bundled" loads the checkpoint that ships
        with s3rt for this preset (`bundled_presets()` lists them; trained by `s3rt train`);
        None leaves the weights random, and deterministic for a given seed.
    """
    cfg = get_config(preset, **overrides)
    if isinstance(checkpoint, str) and checkpoint == BUNDLED:
        checkpoint = require_bundled(cfg.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VOSNetwork(cfg)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, strict=strict, preset=cfg.name)
    return model.eval()
