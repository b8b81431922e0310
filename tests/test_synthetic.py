"""The synthetic clip generator: determinism, ground truth consistent with the z-order, events."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.io import open_frames, read_mask
from s3rt.synthetic import LATE_OBJECT, LEAVING_OBJECT, make_clip, write_clip


def test_deterministic_by_seed():
    a = make_clip(10, 64, 96, 3, seed=7)
    b = make_clip(10, 64, 96, 3, seed=7)
    c = make_clip(10, 64, 96, 3, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    frames, masks = a
    assert frames.shape == (10, 64, 96, 3) and frames.dtype == np.uint8
    assert masks.shape == (10, 64, 96) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1, 2, 3}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_follow_the_z_order(seed):
    n = 4
    frames, masks, layers, order = make_clip(16, 72, 120, n, seed=seed, return_layers=True)
    assert layers.shape == (16, n, 72, 120) and sorted(order) == list(range(n))
    expected = np.zeros_like(masks)
    for k in order:  # bottom to top
        expected[layers[:, k]] = k + 1
    np.testing.assert_array_equal(masks, expected)
    # occlusions happen: some object pixels are hidden by another object
    hidden = sum(int((layers[:, k] & (masks != k + 1)).sum()) for k in range(n))
    assert hidden > 0
    # every object present in the frame keeps part of itself visible
    for t in range(16):
        for k in range(n):
            full = int(layers[t, k].sum())
            if full:
                assert int((masks[t] == k + 1).sum()) >= 0.2 * full
    # object pixels carry the object's texture, not the background: they differ from the
    # same place in a frame where the object is elsewhere
    t = 8
    obj = masks[t] == 1
    assert obj.any()
    assert np.abs(frames[t][obj].astype(int).mean(0) - frames[t][masks[t] == 0].astype(int).mean(0)).max() > 5


@pytest.mark.parametrize("seed", [0, 3])
def test_late_and_leaving_objects(seed):
    frames, masks = make_clip(24, 96, 160, 3, seed=seed)
    present = np.array([[np.any(m == k) for k in (1, 2, 3)] for m in masks])  # [T, 3]
    assert present[0, 0] and not present[0, LATE_OBJECT - 1] and present[0, LEAVING_OBJECT - 1]
    first_seen = int(np.argmax(present[:, LATE_OBJECT - 1]))
    assert 0 < first_seen < 24 and present[-1, LATE_OBJECT - 1]
    last_seen = 23 - int(np.argmax(present[::-1, LEAVING_OBJECT - 1]))
    assert last_seen < 23 and not present[-1, LEAVING_OBJECT - 1]
    assert present[:, 0].all()  # a regular object stays in view


def test_small_object_counts():
    _, m0 = make_clip(5, 32, 32, 0, seed=0)
    assert not m0.any()
    _, m1 = make_clip(6, 48, 64, 1, seed=0)
    assert all((m == 1).any() for m in m1)
    _, m2 = make_clip(12, 48, 64, 2, seed=0)
    assert not (m2[0] == 2).any() and (m2[-1] == 2).any()
    with pytest.raises(ValueError):
        make_clip(0, 32, 32, 1, seed=0)
    with pytest.raises(ValueError):
        make_clip(4, 32, 32, 300, seed=0)


def test_write_clip_davis_layout(tmp_path):
    frames, masks = make_clip(5, 48, 80, 3, seed=1)
    names = write_clip(tmp_path / "seq", frames, masks)
    assert names == [f"{i:05d}" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "seq" / "JPEGImages").iterdir()) == [f"{n}.jpg" for n in names]
    assert sorted(p.name for p in (tmp_path / "seq" / "Annotations").iterdir()) == [f"{n}.png" for n in names]
    for n, m in zip(names, masks):
        np.testing.assert_array_equal(read_mask(tmp_path / "seq" / "Annotations" / f"{n}.png"), m)
    src = open_frames(tmp_path / "seq")  # <seq>/JPEGImages layout
    got_names, got = src.read_all()
    assert got_names == names and got.shape == frames.shape
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 6  # JPEG at quality 95
    with pytest.raises(ValueError, match="do not match"):
        write_clip(tmp_path / "bad", frames, masks[:, :10])
