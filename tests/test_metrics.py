"""J, F and J&F against the DAVIS-2017 definitions (shared/reference/vos_metrics.md)."""

from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest

from s3rt.io.masks import read_mask, write_mask
from s3rt.metrics import davis
from s3rt.metrics.davis import (
    EvaluationError,
    boundary_map,
    disk,
    evaluate_dataset,
    evaluate_sequence,
    f_measure,
    jaccard,
    statistics,
    summarize,
)

from conftest import DAVIS as DAVIS_DATA  # noqa: E402
H, W = 480, 854


def rect(dy: int = 0, dx: int = 0, h: int = 100, w: int = 200) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[190 + dy : 190 + dy + h, 327 + dx : 327 + dx + w] = True
    return m


# ----------------------------------------------------------------------------- J


def test_jaccard_cases():
    m = rect()
    empty = np.zeros_like(m)
    assert jaccard(m, m) == 1.0
    assert jaccard(empty, empty) == 1.0
    assert jaccard(m, empty) == 0.0
    assert jaccard(empty, m) == 0.0
    half = np.zeros_like(m)
    half[190:290, 327:427] = True
    assert jaccard(half, m) == pytest.approx(0.5)
    # stacks: per-frame values
    np.testing.assert_allclose(jaccard(np.stack([m, empty]), np.stack([m, m])), [1.0, 0.0])


def test_jaccard_void_excluded():
    m = rect()
    p = rect(10)
    assert jaccard(p, m, void=p ^ m) == 1.0  # only the disagreement is void
    assert jaccard(p, m, void=p & ~m) == pytest.approx(0.9)


# ----------------------------------------------------------------------------- F


def _naive_boundary(m: np.ndarray) -> np.ndarray:
    """The DAVIS seg2bmap rule, written pixel by pixel."""
    h, w = m.shape
    b = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            v = m[y, x]
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                b[y, x] = v != m[y, x + 1]
            elif x == w - 1:
                b[y, x] = v != m[y + 1, x]
            else:
                b[y, x] = v != m[y, x + 1] or v != m[y + 1, x] or v != m[y + 1, x + 1]
    return b


def _shifted_boundary(m: np.ndarray) -> np.ndarray:
    """The same rule in the toolkit's formulation: compare with shifted copies, then patch
    the last row, the last column and the corner."""
    e, s, se = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    e[:, :-1] = m[:, 1:]
    s[:-1, :] = m[1:, :]
    se[:-1, :-1] = m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :] = m[-1, :] ^ e[-1, :]
    b[:, -1] = m[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def test_boundary_map_matches_the_rule():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((13, 17)) > 0.6
        np.testing.assert_array_equal(boundary_map(m), _naive_boundary(m))
        np.testing.assert_array_equal(_shifted_boundary(m), _naive_boundary(m))
    full = np.ones((6, 7), bool)
    assert not boundary_map(full).any()  # the image border is never a boundary
    sq = np.zeros((6, 6), bool)
    sq[2:4, 2:4] = True
    b = boundary_map(sq)
    # boundaries sit half a pixel toward the origin: row/col 1 is marked, row/col 4 is not
    assert b[1, 1] and b[1, 2] and b[2, 1] and not b[4, 2] and not b[2, 4]
    # batched == per frame
    stack = rng.random((3, 9, 11)) > 0.5
    np.testing.assert_array_equal(boundary_map(stack), np.stack([boundary_map(s) for s in stack]))


def test_disk_like_skimage():
    assert disk(0).tolist() == [[1]]
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    d8 = disk(8)
    assert d8.shape == (17, 17) and d8.dtype == np.uint8
    assert d8.sum() == 197  # skimage.morphology.disk(8).sum()
    assert d8[8, 0] == 1 and d8[0, 0] == 0


def test_radius():
    assert davis.boundary_radius((480, 854)) == 8
    assert davis.boundary_radius((480, 910)) == 9
    assert davis.boundary_radius((480, 1152)) == 10
    assert davis.boundary_radius((720, 1280)) == 12
    assert davis.boundary_radius((480, 854), bound_th=3) == 3


def _naive_f(pred, gt, r):
    bp, bg = _shifted_boundary(pred), _shifted_boundary(gt)
    k = disk(r)
    dp = cv2.dilate(bp.astype(np.uint8), k).astype(bool)
    dg = cv2.dilate(bg.astype(np.uint8), k).astype(bool)
    if not bp.any() and not bg.any():
        return 1.0
    if not bp.any() or not bg.any():
        return 0.0
    p = (bp & dg).sum() / bp.sum()
    rc = (bg & dp).sum() / bg.sum()
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def test_f_matches_full_image_dilation():
    """The cropped dilation gives exactly the full-image result (random blobs, near borders too)."""
    rng = np.random.default_rng(1)
    for _ in range(6):
        g = cv2.resize(rng.random((6, 8)), (64, 48), interpolation=cv2.INTER_CUBIC)
        a = g > 0.55
        b = np.roll(a, rng.integers(-5, 6), axis=1) ^ (rng.random(a.shape) > 0.98)
        r = davis.boundary_radius(a.shape)
        assert f_measure(b, a) == pytest.approx(_naive_f(b, a, r), abs=1e-12)


def test_sequence_scores_match_per_frame_definitions():
    """The per-frame scorer (crops, id comparisons) equals the plain definitions frame by frame,
    with objects touching the image border, entering, leaving and occluding each other."""
    from s3rt.synthetic import make_clip

    _, gt = make_clip(12, 60, 90, 4, seed=5)
    rng = np.random.default_rng(0)
    pred = np.roll(gt, 2, axis=1)
    pred[rng.random(pred.shape) > 0.995] = 3
    gt = gt.copy()
    gt[:, :2, :2] = 255  # void
    scores = evaluate_sequence(pred, gt, skip_first_last=False)
    r = davis.boundary_radius(gt.shape[1:])
    for o in scores:
        for t in range(12):
            p, g = pred[t] == o.object_id, gt[t] == o.object_id
            assert o.J[t] == pytest.approx(jaccard(p, g), abs=1e-12)
            assert o.F[t] == pytest.approx(_naive_f(p, g, r), abs=1e-12)


def test_f_reference_numbers():
    g = rect()
    assert f_measure(g, g) == 1.0
    assert f_measure(rect(8), g) == 1.0  # the tolerance includes the 8th pixel
    assert f_measure(rect(9), g) == pytest.approx(0.36, abs=1e-4)
    assert jaccard(rect(10), g) == pytest.approx(0.8182, abs=1e-4)
    assert f_measure(rect(10), g) == pytest.approx(0.3567, abs=1e-4)


def test_f_degenerate():
    g = rect()
    empty = np.zeros_like(g)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(empty, g) == 0.0
    assert f_measure(g, empty) == 0.0


# ----------------------------------------------------------------------------- statistics


def test_recall_is_strict():
    m, r, d = statistics([0.5, 0.5, 0.6, 0.4])
    assert r == 0.25
    assert m == pytest.approx(0.5)


def test_decay_linear_ramp_48():
    m, r, d = statistics(np.linspace(1, 0, 48))
    assert m == pytest.approx(0.5)
    assert r == pytest.approx(0.5)
    assert d == pytest.approx(0.7447, abs=1e-4)


def test_decay_beyond_256_frames():
    v = np.linspace(1, 0, 300)
    _, _, d = statistics(v)
    # direct: bins [0..75] and [224..299] (the official uint8 cast would wrap 299 -> 43 -> NaN)
    ids = [int(round(x + 1e-10)) - 1 for x in np.linspace(1, 300, 5)]
    assert ids == [0, 75, 150, 224, 299]
    expected = v[0:76].mean() - v[224:300].mean()
    assert math.isfinite(d)
    assert d == pytest.approx(expected, abs=1e-12)
    assert np.array(ids).astype(np.uint8)[-1] == 43  # what the official code computes instead


def test_statistics_edge_cases():
    assert all(math.isnan(x) for x in statistics([]))
    assert statistics([0.7]) == pytest.approx((0.7, 1.0, 0.0))
    m, r, d = statistics([np.nan, 1.0, 1.0, np.nan])
    assert m == 1.0 and r == 0.5  # NaN frames are misses for recall, skipped by the mean


# ----------------------------------------------------------------------------- sequences


def _two_object_clip(t=6, h=40, w=60):
    gt = np.zeros((t, h, w), np.uint8)
    gt[:, 5:20, 5:20] = 1
    gt[:, 22:35, 30:50] = 2
    return gt


def test_evaluate_sequence_perfect_and_skips_first_last():
    gt = _two_object_clip()
    scores = evaluate_sequence(gt.copy(), gt)
    assert [o.object_id for o in scores] == [1, 2]
    for o in scores:
        assert len(o.J) == 4 and o.frames == ("00001", "00002", "00003", "00004")
        assert o.J_mean == 1.0 and o.F_mean == 1.0 and o.J_recall == 1.0 and o.J_decay == 0.0
    # a wrong first / last frame does not count
    pred = gt.copy()
    pred[0] = 0
    pred[-1] = 0
    assert all(o.J_mean == 1.0 for o in evaluate_sequence(pred, gt))
    assert evaluate_sequence(pred, gt, skip_first_last=False)[0].J_mean < 1.0


def test_evaluate_sequence_objects_and_errors():
    gt = _two_object_clip()
    gt[:, 0, :] = 255  # void: background in the semi-supervised evaluation
    pred = gt.copy()
    pred[pred == 255] = 0
    pred[:, pred[0] == 2] = 0  # object 2 never predicted: scored as empty
    s = evaluate_sequence(pred, gt)
    assert s[0].J_mean == 1.0 and s[1].J_mean == 0.0 and s[1].F_mean == 0.0
    bad = gt.copy()
    bad[bad == 255] = 0
    bad[3, 0, 0] = 3
    with pytest.raises(EvaluationError, match=r"id\(s\) \[3\].*ids 1..2"):
        evaluate_sequence(bad, gt, sequence="seq")
    with pytest.raises(EvaluationError, match="map 255 to 1"):
        evaluate_sequence(gt, np.where(gt > 0, 255, 0).astype(np.uint8))
    with pytest.raises(EvaluationError, match="size"):
        evaluate_sequence(gt[:, :, :50], gt)


def test_gt_ids_above_n_are_ignored():
    gt = _two_object_clip()
    gt[0][gt[0] == 2] = 0  # object 2 only appears after the first frame: N = 1
    pred = gt.copy()
    pred[pred == 2] = 0
    s = evaluate_sequence(pred, gt)
    assert len(s) == 1 and s[0].J_mean == 1.0


def test_global_pools_objects_not_sequences():
    gt = _two_object_clip()
    a = evaluate_sequence(gt.copy(), gt, sequence="a")  # 2 objects at J = 1
    gt1 = gt.copy()
    gt1[gt1 == 2] = 0
    pred1 = np.zeros_like(gt1)
    b = evaluate_sequence(pred1, gt1, sequence="b")  # 1 object at J = 0
    g = summarize(a + b)
    assert g["J-Mean"] == pytest.approx(2 / 3)  # mean of per-sequence means would be 0.5
    assert g["J&F-Mean"] == pytest.approx((g["J-Mean"] + g["F-Mean"]) / 2)
    assert list(g) == list(davis.GLOBAL_COLUMNS)


# ----------------------------------------------------------------------------- datasets and the CLI


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    from s3rt.synthetic import make_clip, write_clip

    root = tmp_path_factory.mktemp("davis")
    truth = {}
    for i, seq in enumerate(["alpha", "beta"]):
        frames, masks = make_clip(8, 64, 96, 3, seed=i)
        write_clip(root / "gt" / seq, frames, masks)
        truth[seq] = masks
        pred = masks.copy()
        if seq == "beta":  # shift the prediction so scores are below 1
            pred = np.roll(pred, 3, axis=2)
        for t, m in enumerate(pred):
            write_mask(root / "pred" / seq / f"{t:05d}.png", m)
    return root, truth


def _run_cli(monkeypatch, argv):
    from s3rt import cli

    # only `eval` registered: the test does not depend on other subcommands existing yet
    monkeypatch.setattr(cli, "COMMANDS", {"eval": cli.COMMANDS["eval"]})
    return cli.main(argv)


def test_evaluate_dataset(synthetic_dataset):
    root, truth = synthetic_dataset
    res = evaluate_dataset(root / "pred", root / "gt")
    assert res.sequences == ["alpha", "beta"]
    names = [o.name for o in res.objects]
    n_alpha = int(truth["alpha"][0].max())
    assert names[:n_alpha] == [f"alpha_{k}" for k in range(1, n_alpha + 1)]
    assert all(o.J_mean == 1.0 and o.F_mean == 1.0 for o in res.objects if o.sequence == "alpha")
    assert any(o.J_mean < 1.0 for o in res.objects if o.sequence == "beta")
    direct = summarize(res.objects)
    assert res.summary == direct
    # matches scoring the arrays directly
    pred_beta = np.stack([read_mask(root / "pred" / "beta" / f"{t:05d}.png") for t in range(8)])
    s = evaluate_sequence(pred_beta, truth["beta"], sequence="beta")
    np.testing.assert_allclose([o.J_mean for o in s], [o.J_mean for o in res.objects if o.sequence == "beta"])
    # one sequence only, and single-threaded gives the same numbers
    one = evaluate_dataset(root / "pred", root / "gt", ["beta"], workers=1)
    assert [o.J_mean for o in one.objects] == [o.J_mean for o in s]


def test_eval_cli_end_to_end(synthetic_dataset, monkeypatch, capsys):
    root, _ = synthetic_dataset
    rc = _run_cli(monkeypatch, ["eval", "--pred", str(root / "pred"), "--gt", str(root / "gt")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "J&F-Mean" in out and "alpha_1" in out and "beta_1" in out
    g_path = root / "pred" / "global_results-val.csv"
    s_path = root / "pred" / "per-sequence_results-val.csv"
    with open(g_path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(davis.GLOBAL_COLUMNS)
    res = evaluate_dataset(root / "pred", root / "gt")
    assert rows[1] == [f"{res.summary[c]:.3f}" for c in davis.GLOBAL_COLUMNS]
    with open(s_path) as f:
        srows = list(csv.reader(f))
    assert srows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert srows[1:] == [[o.name, f"{o.J_mean:.3f}", f"{o.F_mean:.3f}"] for o in res.objects]
    assert not [p for p in (root / "pred").iterdir() if p.name.startswith(".")]  # no temp files left

    out_csv = root / "out" / "scores.csv"
    rc = _run_cli(monkeypatch, ["eval", "--pred", str(root / "pred"), "--gt", str(root / "gt"),
                                "--sequences", "beta", "--csv", str(out_csv), "--quiet"])
    assert rc == 0
    assert out_csv.is_file() and (root / "out" / "scores_per-sequence.csv").is_file()
    assert "alpha" not in (root / "out" / "scores_per-sequence.csv").read_text()


def test_eval_errors(synthetic_dataset, tmp_path, monkeypatch, capsys):
    import shutil

    root, truth = synthetic_dataset
    pred = tmp_path / "pred"
    shutil.copytree(root / "pred", pred)
    for p in pred.glob("*.csv"):
        p.unlink()
    (pred / "alpha" / "00003.png").unlink()
    with pytest.raises(EvaluationError, match=r"missing prediction .*alpha/00003\.png"):
        evaluate_dataset(pred, root / "gt")
    rc = _run_cli(monkeypatch, ["eval", "--pred", str(pred), "--gt", str(root / "gt"), "--no-csv"])
    assert rc == 2
    assert "missing prediction" in capsys.readouterr().err

    # an id above N
    m = truth["alpha"][3].copy()
    m[0, 0] = int(truth["alpha"][0].max()) + 1
    write_mask(pred / "alpha" / "00003.png", m)
    with pytest.raises(EvaluationError, match=r"alpha/00003\.png has object id"):
        evaluate_dataset(pred, root / "gt", ["alpha"])

    rc = _run_cli(monkeypatch, ["eval", "--pred", str(tmp_path / "nope"), "--gt", str(root / "gt")])
    assert rc == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(Exception, match="ground truth not found"):
        evaluate_dataset(pred, root / "gt", ["gamma"])


# ----------------------------------------------------------------------------- real DAVIS data


@pytest.mark.skipif(not (DAVIS_DATA / "blackswan").is_dir(), reason=f"no DAVIS sample data at {DAVIS_DATA}")
def test_blackswan_osvos(tmp_path):
    seq = DAVIS_DATA / "blackswan"
    gt_first = read_mask(seq / "Annotations" / "00000.png")  # grey 0/255 -> 0/1
    assert set(np.unique(gt_first)) == {0, 1}
    # results layout: <pred>/<seq>/*.png -> link the OSVOS folder in
    pred_root = tmp_path / "pred"
    pred_root.mkdir()
    (pred_root / "blackswan").symlink_to(seq / "osvos_pred", target_is_directory=True)
    res = evaluate_dataset(pred_root, DAVIS_DATA, ["blackswan"])
    assert len(res.objects) == 1 and len(res.objects[0].J) == 48
    jf = res.summary["J&F-Mean"]
    assert 0.8 < jf <= 1.0
    assert res.summary["J-Mean"] == pytest.approx(0.943, abs=2e-3)
    # without the 0/255 rule the first frame has no object: a clear error, not NaNs
    with pytest.raises(EvaluationError, match="map 255 to 1"):
        evaluate_dataset(pred_root, DAVIS_DATA, ["blackswan"], grey_255_as_object=False)


def test_davis_root_layout_and_imagesets(synthetic_dataset, tmp_path):
    root, truth = synthetic_dataset
    for seq in ("alpha", "beta"):
        d = tmp_path / "DAVIS" / "Annotations" / "480p" / seq
        d.mkdir(parents=True)
        for t, m in enumerate(truth[seq]):
            write_mask(d / f"{t:05d}.png", m)
    sets = tmp_path / "DAVIS" / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("beta\n")
    res = evaluate_dataset(root / "pred", tmp_path / "DAVIS")
    assert res.sequences == ["beta"]  # the split's list, not every folder
    assert evaluate_dataset(root / "pred", tmp_path / "DAVIS", split="none").sequences == ["alpha", "beta"]
