"""The tracker's CUDA paths (torch backend FP32 and FP16 autocast). Skipped without a GPU."""

import pytest
import torch

from s3rt.model import build_model
from s3rt.runtime.tracker import Tracker
from s3rt.synthetic import make_clip

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("preset", ["cutie-test", "s3-test"])
def test_cuda_fp32_matches_cpu(preset):
    frames, masks = make_clip(10, 96, 128, 2, seed=0)
    model = build_model(preset)
    cpu = Tracker(model, size=-1, readout="reference")
    gpu = Tracker(build_model(preset), device="cuda", size=-1)
    for i, f in enumerate(frames):
        a = cpu.step(f, masks[0] if i == 0 else None)
        b = gpu.step(f, masks[0] if i == 0 else None)
        assert (a.prob - b.prob.cpu()).abs().max() < 1e-3
    assert "readout" in gpu.describe()


def test_cuda_fp16_autocast_agrees_on_masks():
    frames, masks = make_clip(10, 96, 128, 2, seed=1)
    ref = Tracker(build_model("cutie-test"), device="cuda", size=-1)
    half = Tracker(build_model("cutie-test"), device="cuda", size=-1, fp16=True)
    for i, f in enumerate(frames):
        a = ref.step(f, masks[0] if i == 0 else None)
        b = half.step(f, masks[0] if i == 0 else None)
        assert torch.isfinite(b.prob).all()
        assert (a.mask == b.mask).mean() > 0.98
