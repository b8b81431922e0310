"""The checkpoint that ships with s3rt: found, loaded by build_model(PRESET, 'bundled'),
listed by `s3rt info`, and it tracks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import s3rt
from s3rt.model.bundled import bundled_meta, bundled_path, bundled_presets

HAVE = bundled_presets()
needs_bundled = pytest.mark.skipif(not HAVE, reason="no bundled checkpoint committed yet (s3rt/model/weights/)")


def test_missing_bundled_checkpoint_is_a_clear_error():
    missing = [p for p in s3rt.PRESETS if p not in HAVE]
    with pytest.raises(FileNotFoundError, match="no bundled checkpoint for preset"):
        s3rt.build_model(missing[0], "bundled")


@needs_bundled
def test_bundled_checkpoint_loads_exactly():
    preset = HAVE[0]
    path = bundled_path(preset)
    assert path.stat().st_size <= 20 * 2**20
    model = s3rt.build_model(preset, "bundled")
    stored = torch.load(path, map_location="cpu", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, stored[k].to(v.dtype)), k
    assert bundled_meta(preset)["preset"] == preset


@needs_bundled
def test_info_lists_bundled_presets(capsys):
    from s3rt.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "bundled checkpoints" in out and HAVE[0] in out.split("bundled checkpoints")[1].splitlines()[0]


@needs_bundled
def test_bundled_checkpoint_tracks_a_synthetic_clip():
    """A short held-out clip (test seed range): the trained network keeps the objects; random
    weights do not."""
    from s3rt.synthetic import make_varied_clip

    frames, masks = make_varied_clip(12, 96, 128, 2, seed=2_000_000_050, speed=1.0, distractors=0,
                                     radius_range=(0.12, 0.2))

    def mean_iou(model):
        tracker = s3rt.Tracker(model)
        ious = []
        for t, frame in enumerate(frames):
            r = tracker.step(frame, mask=masks[0] if t == 0 else None)
            if t:
                for k in (1, 2):
                    p, g = r.mask == k, masks[t] == k
                    ious.append((p & g).sum() / max((p | g).sum(), 1))
        return float(np.mean(ious))

    torch.set_num_threads(1)
    trained = mean_iou(s3rt.build_model(HAVE[0], "bundled"))
    assert trained > 0.7, trained
