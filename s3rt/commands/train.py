"""Train a network from scratch on synthetic clips with Cutie's training step (reduced to what a
CPU can afford): clips of a few frames with 1-3 objects, the first frame's mask given, memory
written from the network's own predictions, point-sampled cross-entropy + Dice on every later
frame plus the auxiliary losses, AdamW with gradient clipping.

The run keeps its resumable state in --workdir (default: <out>.run/): state.pth (weights,
optimizer, step, history), log.jsonl and curve.png. It saves every --save-every minutes,
when --time-limit is reached and on Ctrl-C / SIGTERM; continue with the same command plus
--resume. A fixed --seed makes a run repeatable (same machine and thread count). When the
last step is done, the weights are written to --out as a checkpoint that
`s3rt.build_model(PRESET, OUT)` and `--checkpoint OUT` load.

Needs nothing beyond the base install. Example:
    s3rt train --preset s3-test --out ckpt.pth --time-limit 110
    s3rt train --preset s3-test --out ckpt.pth --resume
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from s3rt.commands import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from s3rt.model.config import PRESETS
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    g = parser.add_argument_group("run")
    g.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="architecture to train (default s3-test; cutie-test for the ablation)")
    g.add_argument("--out", required=True, metavar="PATH", help="where the trained weights go (.pth)")
    g.add_argument("--workdir", metavar="DIR", help="resumable state, log and curve (default: <out>.run/)")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --workdir")
    g.add_argument("--time-limit", type=float, metavar="MIN",
                   help="stop after this many minutes of this session, saving the state (resume later)")
    g.add_argument("--save-every", type=float, default=5.0, metavar="MIN", help="save the state this often (default 5)")
    g.add_argument("--snapshot-every", type=int, default=0, metavar="STEPS",
                   help="also keep the weights (FP16, as --out) every STEPS steps in <workdir>/snapshots/ "
                        "(to compare runs at equal steps; default 0: none)")
    g.add_argument("--val-every", type=int, default=250, metavar="STEPS",
                   help="validation loss / IoU on the validation clips this often (default 250; 0: never)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: min(2, CPU count))")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar; a log line every 50 steps instead")
    g.add_argument("--fp32", action="store_true", help="store the weights in FP32 (default FP16, half the size)")
    h = parser.add_argument_group(
        "recipe (defaults: s3rt.training.trainer.TrainConfig; a resumed run keeps its saved recipe, "
        "except that --steps may change before the first learning-rate drop)")
    h.add_argument("--steps", type=int, help="optimizer steps (default 4000)")
    h.add_argument("--batch-size", type=int, help="clips per step (default 4)")
    h.add_argument("--lr", type=float, help="peak learning rate of AdamW (default 2e-4)")
    h.add_argument("--backbone-lr-ratio", type=float,
                   help="learning-rate factor of the pixel encoder (default 1.0: it trains from scratch; "
                        "Cutie uses 0.1 on pretrained encoders)")
    h.add_argument("--frames", type=int, help="frames per training clip (default 5)")
    h.add_argument("--size", type=int, help="training crop side in pixels, a multiple of 32 (default 128)")
    h.add_argument("--num-points", type=int, help="loss points per frame (default size*size/4)")
    h.add_argument("--seed", type=int, help="run seed: weights' init, batches and every random draw (default 0)")
    h.add_argument("--bn-calib-batches", type=int,
                   help="batches that estimate the BatchNorm statistics before the first step (default 8)")
    h.add_argument("--backgrounds", action="append", metavar="DIR",
                   help="folder of images (jpg/png, searched recursively) used as backgrounds for some clips; "
                        "repeatable")


def _config_from_args(args):
    from s3rt.training.data import ClipSpec
    from s3rt.training.trainer import TrainConfig
    cfg = TrainConfig()
    changes = {}
    for name in ("preset", "steps", "batch_size", "lr", "backbone_lr_ratio", "seed", "bn_calib_batches"):
        v = getattr(args, name)
        if v is not None:
            changes[name] = v
    clip = cfg.clip
    if args.frames is not None:
        if args.frames < 2:
            raise UserError(f"--frames must be at least 2, got {args.frames}")
        clip = ClipSpec(**{**clip.__dict__, "num_frames": args.frames})
    if args.size is not None:
        if args.size < 32 or args.size % 32:
            raise UserError(f"--size must be a positive multiple of 32, got {args.size}")
        clip = ClipSpec(**{**clip.__dict__, "size": args.size})
    changes["clip"] = clip
    changes["num_points"] = args.num_points if args.num_points is not None else clip.size * clip.size // 4
    if args.backgrounds:
        changes["backgrounds"] = tuple(str(Path(d).resolve()) for d in args.backgrounds)
    cfg = TrainConfig(**{**cfg.__dict__, **changes})
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise UserError("--steps and --batch-size must be positive and --lr > 0")
    return cfg


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def main(args) -> int:
    import torch

    from s3rt.training.curve import write_curve
    from s3rt.training.trainer import Trainer

    out = Path(args.out)
    workdir = Path(args.workdir) if args.workdir else out.with_name(out.name + ".run")
    state_path = workdir / "state.pth"
    threads = args.threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise UserError(f"device {args.device!r} is not available here")

    if args.resume:
        if not state_path.is_file():
            raise UserError(f"--resume: no training state at {state_path} (start without --resume, or pass --workdir)")
        trainer = Trainer.from_state(state_path, device=args.device)
        given = _config_from_args(args)
        if args.steps is not None and args.steps != trainer.cfg.steps:
            # The schedule so far depends on --steps only through the lr milestones: a run that
            # has not reached the first one may be lengthened or shortened exactly.
            first = min(trainer.cfg.lr_milestones, default=1.0)
            if trainer.step >= int(first * min(args.steps, trainer.cfg.steps)):
                raise UserError(f"--steps {args.steps}: the run is at step {trainer.step}, past its first learning-rate "
                                f"drop for that length; it can only keep {trainer.cfg.steps} steps")
            print(f"s3rt train: run length changed from {trainer.cfg.steps} to {args.steps} steps")
            trainer.cfg.steps = args.steps
        for name in ("preset", "batch_size", "lr", "backbone_lr_ratio", "seed"):
            if getattr(args, name) is not None and getattr(given, name) != getattr(trainer.cfg, name):
                raise UserError(f"--{name.replace('_', '-')} {getattr(given, name)} differs from the saved run's "
                                f"{getattr(trainer.cfg, name)}; a resumed run keeps its recipe")
        print(f"s3rt train: resuming {trainer.cfg.preset} from step {trainer.step} of {trainer.cfg.steps} ({state_path})")
    else:
        if state_path.exists():
            raise UserError(f"{state_path} exists: pass --resume to continue that run, or choose another --workdir")
        cfg = _config_from_args(args)
        try:
            trainer = Trainer(cfg, device=args.device)
        except ValueError as e:
            raise UserError(str(e)) from None
        print(f"s3rt train: {cfg.preset}, {cfg.steps} steps of {cfg.batch_size} clips x {cfg.clip.num_frames} frames "
              f"at {cfg.clip.size}x{cfg.clip.size}, lr {cfg.lr:g}, seed {cfg.seed}, {threads} threads; state in {workdir}")
    cfg = trainer.cfg
    workdir.mkdir(parents=True, exist_ok=True)

    def save(reason: str):
        trainer.save_state(state_path)
        from s3rt.io.atomic import atomic_write
        with atomic_write(workdir / "log.jsonl", "w") as f:
            for row in trainer.history:
                f.write(json.dumps(row) + "\n")
        write_curve(trainer.history, workdir / "curve.png", title=f"{cfg.preset}: training loss")
        return reason

    old_term = signal.signal(signal.SIGTERM, _raise_stop)
    session_start = time.monotonic()
    last_save = time.monotonic()
    stopped = None
    bar = None
    try:
        if not trainer.bn_calibrated:
            t0 = time.monotonic()
            trainer.calibrate_bn()
            trainer.elapsed += time.monotonic() - t0
        if not args.no_progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=trainer.step, desc=f"train {cfg.preset}", unit="step",
                       dynamic_ncols=True)
        ema = trainer.history[-1].get("loss_ema") if trainer.history else None
        while trainer.step < cfg.steps:
            t0 = time.monotonic()
            row = trainer.train_step()
            dt = time.monotonic() - t0
            trainer.elapsed += dt
            row["seconds"] = round(dt, 3)
            row["elapsed"] = round(trainer.elapsed, 1)
            if not math.isfinite(row["total"]):
                save("non-finite loss")
                raise UserError(f"the loss became {row['total']} at step {row['step']}; state saved in {state_path}")
            ema = row["total"] if ema is None else 0.98 * ema + 0.02 * row["total"]
            row["loss_ema"] = round(ema, 4)
            if args.val_every and (trainer.step % args.val_every == 0 or trainer.step == cfg.steps):
                t1 = time.monotonic()
                row.update(trainer.validate())
                trainer.elapsed += time.monotonic() - t1
                msg = (f"step {trainer.step}: loss {ema:.3f}, val loss {row['val_loss']:.3f}, "
                       f"val IoU {row['val_iou']:.3f}, {trainer.elapsed / 60:.1f} min")
                (bar.write if bar else print)(msg, *(() if bar else ()))
            trainer.history.append(row)
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}", lr=f"{row['lr']:.1e}")
            elif trainer.step % 50 == 0:
                print(f"step {trainer.step}/{cfg.steps}: loss {ema:.3f} (last {row['total']:.3f}), lr {row['lr']:.1e}, "
                      f"{dt:.2f} s/step", flush=True)
            if args.snapshot_every and trainer.step % args.snapshot_every == 0:
                trainer.export_weights(workdir / "snapshots" / f"step-{trainer.step:06d}.pth", fp16=not args.fp32)
            now = time.monotonic()
            if args.time_limit is not None and now - session_start >= args.time_limit * 60:
                stopped = save("time limit")
                break
            if now - last_save >= args.save_every * 60:
                save("periodic")
                last_save = now
    except (KeyboardInterrupt, _Stop) as e:
        stopped = save(f"interrupted ({type(e).__name__} {e})".strip())
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if bar:
            bar.close()
    if stopped:
        print(f"s3rt train: stopped at step {trainer.step} of {cfg.steps} ({stopped}); state saved in {state_path}.\n"
              f"  continue with: s3rt train --out {args.out} --workdir {workdir} --resume", file=sys.stderr)
        return 130 if stopped.startswith("interrupted") else 0
    save("done")
    trainer.export_weights(out, fp16=not args.fp32)
    print(f"s3rt train: done, {trainer.step} steps in {trainer.elapsed / 60:.1f} min; weights in {out}, "
          f"curve in {workdir / 'curve.png'}")
    return 0
