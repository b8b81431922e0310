"""Training: the pieces match the reference network, one step learns, resume is exact, the
command runs end to end and its checkpoint loads."""

from __future__ import annotations

import copy

import pytest
import torch

import s3rt
from s3rt.model.memory_readout import similarity, topk_softmax_dense
from s3rt.training.data import ClipSpec
from s3rt.training.losses import point_mask_loss
from s3rt.training.step import query_transformer_with_aux, read_memory_full
from s3rt.training.trainer import Trainer, TrainConfig

# 32x32 crops (the smallest S3 takes), 3 frames, 2 clips: every code path, fast
TINY = dict(preset="s3-test", batch_size=2, clip=ClipSpec(num_frames=3, size=32), bn_calib_batches=1,
            num_points=128, warmup_steps=1, val_clips=2, steps=4)


@pytest.fixture(scope="module")
def calibrated():
    """A tiny trainer with its BatchNorm statistics estimated, built once for the module."""
    tr = Trainer(TrainConfig(**TINY))
    tr.calibrate_bn()
    return tr


def test_query_transformer_with_aux_is_the_reference_forward():
    model = s3rt.build_model("s3-test")
    qt = model.object_transformer
    g = torch.Generator().manual_seed(0)
    pixel = torch.randn(1, 2, 64, 4, 4, generator=g)
    obj_memory = torch.rand(1, 2, 4, 65, generator=g)
    with torch.no_grad():
        ref = qt(pixel, obj_memory)
        out, logits = query_transformer_with_aux(qt, pixel, obj_memory)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert logits.shape == (1, 2, model.cfg.num_blocks + 1, 4, 4)


def test_full_softmax_readout_matches_dense_affinity():
    g = torch.Generator().manual_seed(1)
    qk, qs = torch.randn(2, 16, 3, 5, generator=g), torch.rand(2, 16, 3, 5, generator=g)
    mk, ms, mv = torch.randn(2, 16, 30, generator=g), torch.rand(2, 1, 30, generator=g) + 1, torch.randn(2, 3, 8, 30, generator=g)
    out = read_memory_full(qk, qs, mk, ms, mv)
    aff = topk_softmax_dense(similarity(mk, ms, qk.flatten(2), qs.flatten(2)), None)
    ref = torch.einsum("bnvm,bmp->bnvp", mv, aff).view(2, 3, 8, 3, 5)
    torch.testing.assert_close(out, ref)


def test_point_loss_rewards_correct_logits():
    gt = torch.zeros(1, 2, 2, 64, 64)
    gt[:, :, 1, 16:48, 16:48] = 1
    gt[:, :, 0] = 1 - gt[:, :, 1]
    good = gt * 20 - 10
    kw = dict(num_points=256, importance_ratio=0.0)  # uniform points: most are far from the edge
    ce_good, dice_good = point_mask_loss(good, gt, generator=torch.Generator().manual_seed(0), **kw)
    ce_flat, dice_flat = point_mask_loss(torch.zeros_like(gt), gt, generator=torch.Generator().manual_seed(0), **kw)
    assert ce_good < 0.2 * ce_flat and dice_good < 0.2 * dice_flat
    # log(2) per frame, summed over 2 frames (a little less: points within half a pixel of the
    # image border read zero padding, as in Mask2Former / Cutie)
    torch.testing.assert_close(ce_flat, torch.tensor(2 * 0.6931472), atol=0.03, rtol=0)
    # importance sampling puts 3/4 of the points where the logits are least sure: the edge
    ce_imp, _ = point_mask_loss(good, gt, num_points=256, generator=torch.Generator().manual_seed(0))
    assert ce_imp > 2 * ce_good


def test_training_steps_lower_the_loss_on_a_fixed_batch(calibrated):
    tr = copy.deepcopy(calibrated)
    for g in tr.optimizer.param_groups:
        g["lr_scale"] *= 5  # 1e-3: a few steps must visibly fit one batch
    frames, gt = tr._batch(0)

    def loss():
        with torch.no_grad():
            return float(tr.compute_loss(frames, gt, torch.Generator().manual_seed(5))[0]["total"])

    before = loss()
    for _ in range(5):
        tr.step = 0  # the same batch every time
        tr.train_step()
    after = loss()
    assert after < 0.8 * before, (before, after)


def test_resume_continues_exactly(calibrated, tmp_path):
    a = copy.deepcopy(calibrated)  # uninterrupted: 3 steps
    for _ in range(3):
        a.train_step()
    b = copy.deepcopy(calibrated)  # 2 steps, saved, and 1 more after loading
    for _ in range(2):
        b.train_step()
    b.save_state(tmp_path / "state.pth")
    c = Trainer.from_state(tmp_path / "state.pth")
    assert c.step == 2 and c.bn_calibrated
    c.train_step()
    sa, sc = a.model.state_dict(), c.model.state_dict()
    for k in sa:  # bit-exact on the same machine and thread count
        assert torch.equal(sa[k], sc[k]), k


def test_train_command_end_to_end(tmp_path, capsys):
    from s3rt.cli import main
    out = tmp_path / "ckpt.pth"
    common = ["train", "--preset", "s3-test", "--out", str(out), "--size", "32", "--frames", "3",
              "--batch-size", "1", "--val-every", "0", "--no-progress", "--bn-calib-batches", "1"]
    assert main(common + ["--steps", "3", "--time-limit", "0"]) == 0  # stops after one step, state saved
    assert not out.exists()
    assert main(common + ["--steps", "3"]) == 2  # refuses to overwrite the run without --resume
    # shortening to 2 steps would move a learning-rate drop to before the current step: refused
    assert main(["train", "--out", str(out), "--resume", "--steps", "2", "--no-progress"]) == 2
    assert main(["train", "--out", str(out), "--resume", "--steps", "4", "--no-progress", "--val-every", "0"]) == 0
    assert out.is_file() and (tmp_path / "ckpt.pth.run" / "curve.png").is_file()
    model = s3rt.build_model("s3-test", out)  # FP16 storage loads into the FP32 network
    sd = torch.load(out, weights_only=True)["model"]
    k = "key_proj.key_proj.weight"
    assert torch.equal(model.state_dict()[k], sd[k].float())
    assert "resuming s3-test from step 1" in capsys.readouterr().out
