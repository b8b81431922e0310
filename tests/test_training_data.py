"""The training data: varied synthetic clips (determinism, events, backgrounds) and the
disjoint train / validation / test seed ranges."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.synthetic import list_background_frames, make_clip, make_varied_clip
from s3rt.training.data import SEED_RANGES, ClipSpec, clip_seed, make_batch


def test_varied_clip_is_deterministic_by_seed():
    a = make_varied_clip(6, 64, 96, 3, seed=5)
    b = make_varied_clip(6, 64, 96, 3, seed=5)
    c = make_varied_clip(6, 64, 96, 3, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (6, 64, 96, 3) and a[0].dtype == np.uint8
    assert a[1].shape == (6, 64, 96) and set(np.unique(a[1])) <= {0, 1, 2, 3}


def test_make_clip_is_unchanged_by_the_new_generator():
    # make_clip draws from its own generator: a varied clip in between changes nothing
    a = make_clip(6, 48, 64, 2, seed=3)
    make_varied_clip(4, 48, 64, 2, seed=3)
    b = make_clip(6, 48, 64, 2, seed=3)
    np.testing.assert_array_equal(a[0], b[0])


def test_objects_are_visible_in_the_first_frame():
    for seed in range(6):
        _, masks = make_varied_clip(4, 96, 96, 3, seed=seed)
        assert set(np.unique(masks[0])) >= {1, 2, 3}, seed


def test_late_object_appears_mid_clip():
    frames, masks, info = make_varied_clip(30, 96, 128, 3, seed=2, late_objects=1, late_ids=[2], return_info=True)
    t = info["late"][2]
    assert 1 <= t < 30
    assert not (masks[:t] == 2).any()
    assert (masks[t] == 2).sum() > 0.004 * 96 * 128  # clearly visible when it appears
    assert set(np.unique(masks[0])) >= {1, 3}


def test_events_happen_over_a_few_clips():
    left, occluded, moved = set(), 0, 0
    for seed in range(8):
        frames, masks, info = make_varied_clip(40, 96, 128, 3, seed=seed, leave_prob=0.6, return_info=True)
        if info["left"]:
            # left the frame after frame 0 and (for some object) came back
            for obj in info["left"]:
                present = [(masks[t] == obj).any() for t in range(40)]
                gone = [t for t in range(1, 40) if not present[t]]
                if gone and any(present[t] for t in range(gone[0], 40)):
                    left.add(seed)
        occluded += bool(info["occluded"])
        ys, xs = np.nonzero(masks[0] == 1)
        ye, xe = np.nonzero(masks[-1] == 1)
        if len(ye) and abs(ys.mean() - ye.mean()) + abs(xs.mean() - xe.mean()) > 5:
            moved += 1
    assert left, "no object left the frame and came back"
    assert occluded >= 4 and moved >= 4


def test_lighting_changes_over_time():
    frames, masks = make_varied_clip(40, 64, 64, 1, seed=11)
    means = frames.reshape(40, -1).mean(1)
    assert means.max() - means.min() > 3


def test_user_backgrounds(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    (tmp_path / "bg").mkdir()
    Image.fromarray(np.full((50, 70, 3), (10, 200, 30), np.uint8)).save(tmp_path / "bg" / "a.png")
    files = list_background_frames([tmp_path / "bg"])
    assert [f.name for f in files] == ["a.png"]
    frames, masks = make_varied_clip(3, 64, 64, 1, seed=1, backgrounds=files, distractors=0)
    bg = frames[0][masks[0] == 0].astype(float).mean(0)
    assert bg[1] > 2 * bg[0]  # green, from the image (up to lighting and noise)
    with pytest.raises(ValueError):
        list_background_frames([tmp_path / "missing"])
    del rng


def test_seed_ranges_are_disjoint():
    ranges = sorted(SEED_RANGES.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    assert clip_seed("train", 0) == 0 and clip_seed("val", 3) == SEED_RANGES["val"][0] + 3
    assert clip_seed("test", 19) == SEED_RANGES["test"][0] + 19
    with pytest.raises(ValueError):
        clip_seed("train", SEED_RANGES["train"][1])


def test_batches_are_a_function_of_the_step():
    spec = ClipSpec(num_frames=3, size=64)
    f1, g1 = make_batch(7, 2, spec, run_seed=1)
    f2, g2 = make_batch(7, 2, spec, run_seed=1)
    f3, _ = make_batch(8, 2, spec, run_seed=1)
    assert f1.shape == (2, 3, 3, 64, 64) and g1.shape[:2] == (2, 3) and g1.shape[-2:] == (64, 64)
    assert torch_equal(f1, f2) and torch_equal(g1, g2) and not torch_equal(f1, f3)
    assert set(g1.unique().tolist()) <= {0.0, 1.0}


def torch_equal(a, b):
    return a.shape == b.shape and bool((a == b).all())
