"""Training for s3rt's networks (installed as `s3rt.training`; the runtime never imports it).

`s3rt train --preset s3-test --out ckpt.pth` trains a network from scratch on synthetic clips
(`s3rt.synthetic.make_varied_clip`) with Cutie's training step, reduced to what a CPU can
afford: see `MODEL_CARD.md` beside this file and `trainer.TrainConfig`.
"""

from s3rt.training.data import SEED_RANGES, clip_seed, make_batch
from s3rt.training.losses import point_mask_loss
from s3rt.training.step import clip_forward, prepare_for_training
from s3rt.training.trainer import TrainConfig, Trainer

__all__ = ["SEED_RANGES", "clip_seed", "make_batch", "point_mask_loss", "clip_forward", "prepare_for_training",
           "TrainConfig", "Trainer"]
