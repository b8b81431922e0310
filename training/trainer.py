"""The training loop: optimizer, schedule, checkpoints, resume, validation.

Repeatable: the batch of step s depends only on (seed, s) and every random draw inside the
step (memory frames, deep updates, loss points) comes from a generator seeded with (seed, s),
so a run resumed from its state file continues exactly as an uninterrupted run would (same
thread count, same machine).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from s3rt.io.atomic import atomic_write
from s3rt.model import build_model
from s3rt.training.data import ClipSpec, clip_to_tensors, make_batch, make_clip_for
from s3rt.training.losses import point_mask_loss
from s3rt.training.step import batchnorms, clip_forward, prepare_for_training, set_train_mode

STATE_VERSION = 1


@dataclass
class TrainConfig:
    preset: str = "s3-test"
    steps: int = 4000
    batch_size: int = 4
    lr: float = 2e-4
    backbone_lr_ratio: float = 1.0
    weight_decay: float = 1e-3
    clip_grad: float = 3.0
    warmup_steps: int = 100
    lr_milestones: tuple[float, ...] = (0.8, 0.95)  # fractions of `steps`
    lr_gamma: float = 0.1
    num_points: int = 4096
    oversample: float = 3.0
    importance_ratio: float = 0.75
    aux_weight: float = 0.01
    deep_update_prob: float = 0.2
    num_ref_frames: int = 3
    bn_calib_batches: int = 8
    seed: int = 0
    clip: ClipSpec = field(default_factory=ClipSpec)
    val_clips: int = 16
    backgrounds: tuple[str, ...] = ()  # folders of background images (optional)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        d["clip"]["object_probs"] = list(self.clip.object_probs)
        d["clip"]["speed"] = list(self.clip.speed)
        d["backgrounds"] = list(self.backgrounds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        c = dict(d.pop("clip"))
        c["object_probs"], c["speed"] = tuple(c["object_probs"]), tuple(c["speed"])
        d["lr_milestones"] = tuple(d["lr_milestones"])
        d["backgrounds"] = tuple(d.get("backgrounds", ()))
        return cls(clip=ClipSpec(**c), **d)


def _step_generator(seed: int, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, step, 3]).generate_state(1, np.uint64)[0] & ((1 << 63) - 1)))
    return g


def _no_decay(name: str) -> bool:
    # Cutie: no weight decay on embeddings (query embeddings, position / level embeddings).
    return "embed" in name or "query_init" in name or "query_emb" in name or "cls_token" in name


class Trainer:
    def __init__(self, cfg: TrainConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        if cfg.clip.size % 32:
            raise ValueError(f"the training crop size must be a multiple of 32, got {cfg.clip.size}")
        self.model = prepare_for_training(build_model(cfg.preset, seed=cfg.seed)).to(self.device)
        self.backgrounds = None
        if cfg.backgrounds:
            from s3rt.synthetic import list_background_frames
            self.backgrounds = list_background_frames(cfg.backgrounds)
            if not self.backgrounds:
                raise ValueError(f"no jpg/png images in {', '.join(cfg.backgrounds)}")
        groups = {}
        for name, p in self.model.named_parameters():
            backbone = name.startswith("pixel_encoder.")
            decay = not _no_decay(name)
            groups.setdefault((backbone, decay), []).append(p)
        self.param_groups = [
            {"params": ps, "lr_scale": cfg.backbone_lr_ratio if backbone else 1.0,
             "weight_decay": cfg.weight_decay if decay else 0.0}
            for (backbone, decay), ps in sorted(groups.items())]
        self.optimizer = torch.optim.AdamW(self.param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.history: list[dict] = []  # one row per logged step
        self.elapsed = 0.0  # training seconds over all sessions
        self.bn_calibrated = False
        self._val = None

    # ---- schedule ---------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        for m in cfg.lr_milestones:
            if step >= int(m * cfg.steps):
                lr *= cfg.lr_gamma
        return lr

    # ---- BN ---------------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate_bn(self) -> None:
        """Cutie freezes BatchNorm at its ImageNet statistics; ours start random, so estimate the
        statistics once, before the first step, on the first `bn_calib_batches` training
        batches (training forward, no gradients), then keep them frozen."""
        cfg = self.cfg
        bns = batchnorms(self.model)
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.model.train()
        for i in range(cfg.bn_calib_batches):
            frames, gt = self._batch(i)
            clip_forward(self.model, frames, gt, num_ref_frames=cfg.num_ref_frames,
                         deep_update_prob=cfg.deep_update_prob, generator=_step_generator(cfg.seed, 10**9 + i))
        for m in bns:
            m.momentum = 0.1
        self.bn_calibrated = True

    def _batch(self, step: int):
        frames, gt = make_batch(step, self.cfg.batch_size, self.cfg.clip, self.cfg.seed, self._bg_for(step))
        return frames.to(self.device), gt.to(self.device)

    def _bg_for(self, step: int):
        """User backgrounds for half of the steps (when given): the others keep procedural ones."""
        if not self.backgrounds or step % 2:
            return None
        return self.backgrounds

    # ---- one step ---------------------------------------------------------------------------
    def compute_loss(self, frames, gt, generator):
        cfg = self.cfg
        out = clip_forward(self.model, frames, gt, num_ref_frames=cfg.num_ref_frames,
                           deep_update_prob=cfg.deep_update_prob, generator=generator)
        bg = (1 - gt.sum(2, keepdim=True)).clamp(0, 1)
        soft_gt = torch.cat([bg, gt], 2)[:, 1:]  # frames 1..T-1, [B,T-1,N+1,H,W]
        kw = dict(num_points=cfg.num_points, oversample=cfg.oversample, importance_ratio=cfg.importance_ratio,
                  generator=generator)
        ce, dice = point_mask_loss(out["logits"], soft_gt, **kw)
        losses = {"ce": ce, "dice": dice}
        s_ce, s_dice = point_mask_loss(out["sensory_aux"], soft_gt, **kw)
        losses["aux_sensory"] = cfg.aux_weight * (s_ce + s_dice)
        q = out["query_aux"]
        aux_q = 0.0
        for level in range(q.shape[2]):
            q_ce, q_dice = point_mask_loss(q[:, :, level], soft_gt, **kw)
            aux_q = aux_q + q_ce + q_dice
        losses["aux_query"] = cfg.aux_weight * aux_q
        losses["total"] = sum(losses.values())
        return losses, out

    def train_step(self) -> dict:
        cfg = self.cfg
        step = self.step
        set_train_mode(self.model, bn_frozen=True)
        frames, gt = self._batch(step)
        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        losses, _ = self.compute_loss(frames, gt, _step_generator(cfg.seed, step))
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.optimizer.step()
        self.step += 1
        row = {k: float(v.detach()) for k, v in losses.items()}
        row.update(step=self.step, lr=lr, grad_norm=float(grad_norm), objects=int(gt.shape[2]))
        return row

    # ---- validation -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Loss and mean IoU of frames 1..T-1 on fixed validation clips (training forward)."""
        cfg = self.cfg
        if self._val is None:
            self._val = []
            for i in range(cfg.val_clips):
                n = 1 + i % cfg.clip.max_objects
                frames, masks = make_clip_for("val", i, cfg.clip, n)
                f, g = clip_to_tensors(frames, masks, n)
                self._val.append((f[None].to(self.device), g[None].to(self.device)))
        self.model.eval()
        losses, ious = [], []
        for i, (f, g) in enumerate(self._val):
            gen = _step_generator(10**6, i)
            l, out = self.compute_loss(f, g, gen)
            losses.append(float(l["ce"] + l["dice"]))
            pred = out["logits"].argmax(2)  # [1,T-1,H,W]
            ids = torch.cat([torch.zeros_like(g[:, 1:, :1]), g[:, 1:]], 2).argmax(2)
            for k in range(1, g.shape[2] + 1):
                inter = ((pred == k) & (ids == k)).sum().item()
                union = ((pred == k) | (ids == k)).sum().item()
                ious.append(1.0 if union == 0 else inter / union)
        return {"val_loss": float(np.mean(losses)), "val_iou": float(np.mean(ious))}

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "config": self.cfg.to_dict(), "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "history": self.history, "elapsed": self.elapsed, "bn_calibrated": self.bn_calibrated}

    def save_state(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            torch.save(self.state_dict(), tmp)

    @classmethod
    def from_state(cls, path, device: str = "cpu") -> "Trainer":
        state = torch.load(path, map_location=device, weights_only=False)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: training state version {state.get('version')}, expected {STATE_VERSION}")
        t = cls(TrainConfig.from_dict(state["config"]), device=device)
        t.model.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        t.step, t.history, t.elapsed = state["step"], state["history"], state["elapsed"]
        t.bn_calibrated = state["bn_calibrated"]
        return t

    def export_weights(self, path, *, fp16: bool = True, extra_meta: dict | None = None) -> None:
        """The network's weights as a checkpoint `s3rt.build_model(preset, path)` loads:
        {'model': state_dict, 'meta': {...}}; FP16 storage halves the file, and the network
        is defined by those FP16 values (they load into FP32 exactly)."""
        sd = {k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().clone()
              for k, v in self.model.state_dict().items()}
        meta = {"preset": self.cfg.preset, "step": self.step, "train_seconds": round(self.elapsed, 1),
                "config": json.dumps(self.cfg.to_dict()), "storage": "fp16" if fp16 else "fp32"}
        if extra_meta:
            meta.update({k: str(v) for k, v in extra_meta.items()})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            torch.save({"model": sd, "meta": meta}, tmp)
