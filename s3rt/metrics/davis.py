"""J&F as the official DAVIS-2017 semi-supervised evaluation defines it.

The definitions follow the official toolkit (davisvideochallenge/davis2017-evaluation); the
code is our own and vectorised with numpy.

- J (region similarity): |P & G| / |P | G|, 1 when both are empty.
- F (boundary F-measure): 1-px boundary maps (a pixel differs from its east, south or
  south-east neighbour; the image border is never a boundary), matched within a radius
  ceil(0.008 * image diagonal) by dilating with a disk, precision / recall by dilation.
- Frames: the first and the last frame of every sequence are not scored.
- Objects: ids 1..N, N the largest id of the first-frame ground truth after 255 -> 0.
  Ground-truth 255 (void) counts as background; ground-truth ids above N are ignored;
  a prediction with an id above N is an error; objects missing from the prediction are
  scored as empty.
- Per object: mean (nanmean over frames), recall (fraction of frames with value > 0.5),
  decay (mean of the first quarter of the frames minus mean of the last quarter).
- Global: every statistic is the mean over all objects of all sequences pooled (not a mean
  of per-sequence means); J&F-Mean = (J-Mean + F-Mean) / 2.

One deliberate difference: the official decay casts its bin boundaries to uint8, so with
more than 256 evaluated frames they wrap and the decay is wrong or NaN. We keep them as
integers; for <= 256 evaluated frames (all of DAVIS) the results are identical.

Masks are read with `s3rt.io.masks.read_mask`, whose `grey_255_as_object` rule (on by
default) turns DAVIS-2016 grey 0/255 masks into one object (255 -> 1); without it the
2017 rules would read 255 as void and find no object at all.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from s3rt.io.errors import InputError, InputNotFoundError
from s3rt.io.masks import list_masks, natural_key, read_mask

BOUND_TH = 0.008
VOID_ID = 255
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PER_OBJECT_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


class EvaluationError(InputError):
    """Predictions or ground truth that cannot be scored (missing frame, unknown id, size)."""


# --------------------------------------------------------------------------- J


def jaccard(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None):
    """Region similarity of boolean masks; 1 when both are empty.

    Works on one HxW pair (returns a float) or on stacks [..., H, W] (returns an array).
    `void`: pixels to leave out of both masks (the semi-supervised evaluation passes none).
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"jaccard: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        pred, gt = pred & keep, gt & keep
    inter = np.count_nonzero(pred & gt, axis=(-2, -1))
    union = np.count_nonzero(pred | gt, axis=(-2, -1))
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(j) if np.ndim(j) == 0 else j


# --------------------------------------------------------------------------- F


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1-px boundary of a mask (nonzero = foreground), as the DAVIS toolkit draws it.

    A pixel is a boundary pixel when its value differs from its east, south or south-east
    neighbour; in the last row only the east neighbour is compared, in the last column only
    the south one, and the bottom-right pixel is never a boundary. Works on [..., H, W].
    """
    m = np.asarray(mask).astype(bool, copy=False)
    b = np.zeros(m.shape, dtype=bool)
    if m.shape[-2] == 0 or m.shape[-1] == 0:
        return b
    c = m[..., :-1, :-1]
    b[..., :-1, :-1] = (c != m[..., :-1, 1:]) | (c != m[..., 1:, :-1]) | (c != m[..., 1:, 1:])
    b[..., -1, :-1] = m[..., -1, :-1] != m[..., -1, 1:]  # last row: east only
    b[..., :-1, -1] = m[..., :-1, -1] != m[..., 1:, -1]  # last column: south only
    return b  # b[..., -1, -1] stays False


def disk(radius: int) -> np.ndarray:
    """Disk structuring element, as skimage.morphology.disk(radius): offsets with dx²+dy² <= r²."""
    r = int(radius)
    if r < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    d = np.arange(-r, r + 1)
    return ((d[:, None] ** 2 + d[None, :] ** 2) <= r * r).astype(np.uint8)


def boundary_radius(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """Matching tolerance in pixels: ceil(bound_th * diagonal), or bound_th itself when >= 1."""
    if bound_th >= 1:
        if float(bound_th) != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be an integer, got {bound_th}")
        return int(bound_th)
    h, w = int(shape[-2]), int(shape[-1])
    return int(math.ceil(bound_th * math.hypot(h, w)))


def _count_within(src: np.ndarray, other: np.ndarray, kernel: np.ndarray, radius: int) -> int:
    """Number of `other` pixels inside dilate(src, kernel); both boolean HxW.

    Only the bounding box of `src` grown by the radius can be reached, so the dilation runs
    on that crop (identical result, much cheaper for small objects).
    """
    rows = np.flatnonzero(src.any(axis=1))
    cols = np.flatnonzero(src.any(axis=0))
    if rows.size == 0:
        return 0
    h, w = src.shape
    y0, y1 = max(rows[0] - radius, 0), min(rows[-1] + radius + 1, h)
    x0, x1 = max(cols[0] - radius, 0), min(cols[-1] + radius + 1, w)
    crop = src[y0:y1, x0:x1].view(np.uint8)
    dil = cv2.dilate(np.ascontiguousarray(crop), kernel)
    return int(np.count_nonzero(other[y0:y1, x0:x1] & dil.view(bool)))


def _f_from_boundaries(b_pred: np.ndarray, b_gt: np.ndarray, kernel: np.ndarray, radius: int) -> float:
    n_pred = int(np.count_nonzero(b_pred))
    n_gt = int(np.count_nonzero(b_gt))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0  # (P, R) = (1, 0) or (0, 1)
    precision = _count_within(b_gt, b_pred, kernel, radius) / n_pred
    recall = _count_within(b_pred, b_gt, kernel, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _f_cropped(pred: np.ndarray, gt: np.ndarray, kernel: np.ndarray, radius: int) -> float:
    """F of two boolean HxW masks, computed on their joint bounding box grown by 1 px.

    With a 1-px margin of background on every side that is not the image border, the
    boundary rule gives the same pixels on the crop as on the full image (a pixel just
    above or left of an object is marked because of its south / east neighbour, and the
    margin keeps it in the crop); everything outside the crop is background with no
    boundary. The radius is still the full image's.
    """
    both = pred | gt
    rows = np.flatnonzero(both.any(axis=1))
    if rows.size == 0:
        return 1.0  # both empty
    cols = np.flatnonzero(both.any(axis=0))
    h, w = pred.shape
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
    p, g = pred[y0:y1, x0:x1], gt[y0:y1, x0:x1]
    return _f_from_boundaries(boundary_map(p), boundary_map(g), kernel, radius)


def f_measure(
    pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH, void: np.ndarray | None = None
) -> float:
    """Boundary F-measure of two boolean HxW masks (DAVIS definition).

    Radius ceil(bound_th * diagonal) (8 px at 480x854); a disk-dilated boundary matches.
    Degenerate cases: both boundaries empty -> 1; only one empty -> 0.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"f_measure: expected two HxW masks of one shape, got {pred.shape} and {gt.shape}")
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        pred, gt = pred & keep, gt & keep
    radius = boundary_radius(pred.shape, bound_th)
    return _f_cropped(pred, gt, disk(radius), radius)


# --------------------------------------------------------------------------- statistics


def decay_bins(n: int) -> np.ndarray:
    """The 5 bin boundaries over n frames: round(linspace(1, n, 5) + 1e-10) - 1, as int64.

    (The official code casts them to uint8, which wraps above 256 frames.)
    """
    return (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)


def _nanmean(x: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return float(np.nanmean(x)) if np.size(x) else float("nan")


def statistics(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values, DAVIS definitions.

    mean = nanmean; recall = fraction of frames with value > 0.5 (strictly; NaN frames count
    as misses); decay = nanmean(bin 0) - nanmean(bin 3) over 4 bins whose neighbours share an
    end frame. No frames -> all NaN.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = _nanmean(v)
    recall = float(np.mean(v > 0.5))
    ids = decay_bins(n)
    decay = _nanmean(v[ids[0] : ids[1] + 1]) - _nanmean(v[ids[3] : ids[4] + 1])
    return mean, recall, decay


# --------------------------------------------------------------------------- sequences


@dataclass(frozen=True, eq=False)
class ObjectScores:
    """Per-frame J and F of one object over the evaluated frames, with its statistics."""

    sequence: str
    object_id: int
    J: np.ndarray
    F: np.ndarray
    frames: tuple[str, ...] = ()
    J_mean: float = field(init=False)
    J_recall: float = field(init=False)
    J_decay: float = field(init=False)
    F_mean: float = field(init=False)
    F_recall: float = field(init=False)
    F_decay: float = field(init=False)

    def __post_init__(self):
        for name, vals in (("J", self.J), ("F", self.F)):
            m, r, d = statistics(vals)
            object.__setattr__(self, f"{name}_mean", m)
            object.__setattr__(self, f"{name}_recall", r)
            object.__setattr__(self, f"{name}_decay", d)

    @property
    def name(self) -> str:
        """The official row name, `<sequence>_<id>`."""
        return f"{self.sequence}_{self.object_id}"

    @property
    def JF_mean(self) -> float:
        return (self.J_mean + self.F_mean) / 2.0


def summarize(objects: Sequence[ObjectScores]) -> dict[str, float]:
    """The global table: each statistic averaged over all objects (of all sequences) pooled."""
    if not objects:
        return {c: float("nan") for c in GLOBAL_COLUMNS}

    def avg(attr):
        return float(np.mean([getattr(o, attr) for o in objects]))

    out = {
        "J-Mean": avg("J_mean"),
        "J-Recall": avg("J_recall"),
        "J-Decay": avg("J_decay"),
        "F-Mean": avg("F_mean"),
        "F-Recall": avg("F_recall"),
        "F-Decay": avg("F_decay"),
    }
    out = {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2.0, **out}
    return {c: out[c] for c in GLOBAL_COLUMNS}


def num_objects_in(first_gt: np.ndarray) -> int:
    """N: the largest id of the first-frame ground truth, void (255) counted as background."""
    g = np.asarray(first_gt)
    g = g[g != VOID_ID]
    return int(g.max()) if g.size else 0


class _FrameScorer:
    """Scores frames of one sequence: J and F for objects 1..N on one frame at a time."""

    def __init__(self, num_objects: int, bound_th: float):
        self.n = num_objects
        self.bound_th = bound_th
        self._kernels: dict[int, np.ndarray] = {}

    def __call__(self, pred: np.ndarray, gt: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        n = self.n
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.ndim != 2:
            raise EvaluationError(f"prediction {where} must be an HxW id mask, got shape {pred.shape}")
        if pred.shape != gt.shape:
            raise EvaluationError(
                f"prediction {where} is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                f"{gt.shape[1]}x{gt.shape[0]}; predictions must have the ground truth's size"
            )
        if not (np.issubdtype(pred.dtype, np.integer) or pred.dtype == bool):
            raise EvaluationError(f"prediction {where} must hold integer object ids, got dtype {pred.dtype}")
        top = int(pred.max()) if pred.size else 0
        signed = np.issubdtype(pred.dtype, np.signedinteger)
        if top > n or (signed and pred.size and int(pred.min()) < 0):
            bad = sorted(int(v) for v in np.unique(pred) if v > n or v < 0)
            raise EvaluationError(
                f"prediction {where} has object id(s) {bad[:10]} but the first-frame ground truth "
                f"has only {n} object(s) (ids 1..{n}); the DAVIS evaluation stops here"
            )
        # Comparing with 1..N leaves out void (255) and ground-truth ids above N: background.
        radius = boundary_radius(gt.shape, self.bound_th)
        kernel = self._kernels.get(radius)
        if kernel is None:
            kernel = self._kernels[radius] = disk(radius)
        J = np.ones(n, dtype=np.float64)
        F = np.ones(n, dtype=np.float64)
        for i in range(n):
            obj = i + 1
            pm = pred == obj
            gm = gt == obj
            p_area = np.count_nonzero(pm)
            g_area = np.count_nonzero(gm)
            if p_area == 0 and g_area == 0:
                continue  # absent from both: J = F = 1
            inter = np.count_nonzero(pm & gm)
            J[i] = inter / (p_area + g_area - inter)
            F[i] = _f_cropped(pm, gm, kernel, radius)
        return J, F


def _evaluated_indices(t: int, skip_first_last: bool) -> range:
    return range(1, t - 1) if skip_first_last else range(t)


def _scores_from_frames(
    sequence: str,
    num_objects: int,
    frame_pairs: Iterable[tuple[str, str, np.ndarray, np.ndarray]],
    bound_th: float,
) -> list[ObjectScores]:
    """frame_pairs: (frame name, where (for messages), prediction, ground truth)."""
    scorer = _FrameScorer(num_objects, bound_th)
    names, js, fs = [], [], []
    for name, where, pred, gt in frame_pairs:
        j, f = scorer(pred, gt, where)
        names.append(name)
        js.append(j)
        fs.append(f)
    J = np.stack(js, axis=1) if js else np.zeros((num_objects, 0))
    F = np.stack(fs, axis=1) if fs else np.zeros((num_objects, 0))
    return [
        ObjectScores(sequence, i + 1, J[i].copy(), F[i].copy(), tuple(names)) for i in range(num_objects)
    ]


def evaluate_sequence(
    pred_masks: Sequence[np.ndarray] | np.ndarray,
    gt_masks: Sequence[np.ndarray] | np.ndarray,
    skip_first_last: bool = True,
    *,
    bound_th: float = BOUND_TH,
    sequence: str = "",
    frame_names: Sequence[str] | None = None,
) -> list[ObjectScores]:
    """Score one sequence: id masks [T, H, W] (arrays or lists of HxW arrays), same T.

    Returns one `ObjectScores` per object 1..N (N from the first ground-truth frame).
    Raises `EvaluationError` for a prediction id above N, mismatched lengths or sizes, or a
    first frame without objects (a DAVIS-2016 0/255 mask given raw: map 255 to 1 first).
    """
    t = len(gt_masks)
    if len(pred_masks) != t:
        raise EvaluationError(f"sequence {sequence!r}: {len(pred_masks)} predicted frames for {t} ground-truth frames")
    if t == 0:
        raise EvaluationError(f"sequence {sequence!r} has no frames")
    names = list(frame_names) if frame_names is not None else [f"{i:05d}" for i in range(t)]
    if len(names) != t:
        raise ValueError(f"frame_names has {len(names)} names for {t} frames")
    n = num_objects_in(gt_masks[0])
    if n == 0:
        raise EvaluationError(_no_objects_message(sequence))
    label = f"{sequence}/" if sequence else "frame "
    pairs = (
        (names[i], f"{label}{names[i]}", pred_masks[i], gt_masks[i])
        for i in _evaluated_indices(t, skip_first_last)
    )
    return _scores_from_frames(sequence, n, pairs, bound_th)


def _no_objects_message(sequence: str, path: Path | None = None) -> str:
    where = f" ({path})" if path else ""
    return (
        f"the first ground-truth frame of {sequence or 'the sequence'}{where} has no object "
        "(only 0 and 255/void); if it is a DAVIS-2016 0/255 mask, map 255 to 1"
    )


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetScores:
    """Per-object scores of every sequence and the global table (objects pooled)."""

    objects: list[ObjectScores]
    summary: dict[str, float]
    sequences: list[str]

    def per_object_rows(self) -> list[dict]:
        """Rows like the official per-sequence CSV: Sequence (= seq_objid), J-Mean, F-Mean."""
        return [{"Sequence": o.name, "J-Mean": o.J_mean, "F-Mean": o.F_mean} for o in self.objects]

    def global_row(self) -> dict[str, float]:
        return dict(self.summary)


def _has_pngs(folder: Path) -> bool:
    return any(p.suffix.lower() == ".png" for p in folder.iterdir() if p.is_file())


def gt_sequence_dirs(gt_root: str | os.PathLike, sequences: Sequence[str] | None = None,
                     split: str = "val") -> dict[str, Path]:
    """Ground-truth folders by sequence, for these layouts of `gt_root`:

    - a DAVIS root: `Annotations/480p/<seq>` (or `Annotations/<seq>`); without `sequences`,
      the list in `ImageSets/2017/<split>.txt` when it exists, else every sequence folder;
    - a results-style folder: `<seq>/*.png`, or `<seq>/Annotations/*.png`.
    """
    root = Path(gt_root)
    if not root.is_dir():
        raise InputNotFoundError(f"ground-truth folder not found: {root}")
    ann = root / "Annotations"
    if ann.is_dir() and not _has_pngs(ann):
        base = ann / "480p" if (ann / "480p").is_dir() else ann
        if sequences is None:
            imageset = root / "ImageSets" / "2017" / f"{split}.txt"
            if imageset.is_file():
                sequences = [s.strip() for s in imageset.read_text().splitlines() if s.strip()]
            else:
                sequences = sorted((p.name for p in base.iterdir() if p.is_dir()), key=natural_key)
        dirs = {s: base / s for s in sequences}
    else:
        if sequences is None:
            sequences = []
            for p in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
                if p.is_dir() and not p.name.startswith(".") and (
                    _has_pngs(p) or ((p / "Annotations").is_dir() and _has_pngs(p / "Annotations"))
                ):
                    sequences.append(p.name)
        dirs = {}
        for s in sequences:
            d = root / s / "Annotations"
            dirs[s] = d if d.is_dir() else root / s
    missing = [str(d) for d in dirs.values() if not d.is_dir()]
    if missing:
        raise InputNotFoundError(f"ground truth not found for {len(missing)} sequence(s): {', '.join(missing[:5])}")
    if not dirs:
        raise InputError(f"no ground-truth sequences found in {root} (expected <seq>/*.png or Annotations/480p/<seq>/)")
    return dirs


def evaluate_dataset_sequence(
    pred_dir: Path,
    gt_dir: Path,
    sequence: str,
    *,
    skip_first_last: bool = True,
    bound_th: float = BOUND_TH,
    grey_255_as_object: bool = True,
) -> list[ObjectScores]:
    """Score one sequence from folders of PNGs (`gt_dir/<frame>.png`, `pred_dir/<frame>.png`).

    Predictions are read for the evaluated ground-truth frames only (the official tool does
    the same: the first and last frames need no prediction when they are skipped); each is
    read, scored and dropped, so memory stays at a few frames.
    """
    gt_files = list_masks(gt_dir)
    if not gt_files:
        raise EvaluationError(f"no ground-truth PNGs in {gt_dir}")
    if not pred_dir.is_dir():
        raise EvaluationError(f"no predictions for sequence {sequence!r}: folder {pred_dir} not found")
    names = list(gt_files)
    first_path = gt_files[names[0]]
    n = num_objects_in(read_mask(first_path, grey_255_as_object=grey_255_as_object))
    if n == 0:
        raise EvaluationError(_no_objects_message(sequence, first_path))
    eval_names = [names[i] for i in _evaluated_indices(len(names), skip_first_last)]
    pred_files = {}
    for name in eval_names:
        p = pred_dir / f"{name}.png"
        if not p.is_file():
            raise EvaluationError(
                f"missing prediction {p} for ground-truth frame {gt_files[name]}; every evaluated "
                "ground-truth frame needs a prediction PNG of the same name"
            )
        pred_files[name] = p

    def pairs() -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
        for name in eval_names:
            gt = read_mask(gt_files[name], grey_255_as_object=grey_255_as_object)
            pred = read_mask(pred_files[name], grey_255_as_object=grey_255_as_object)
            yield name, str(pred_files[name]), pred, gt

    return _scores_from_frames(sequence, n, pairs(), bound_th)


def evaluate_dataset(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    sequences: Sequence[str] | None = None,
    *,
    skip_first_last: bool = True,
    bound_th: float = BOUND_TH,
    grey_255_as_object: bool = True,
    split: str = "val",
    progress: bool = False,
    workers: int | None = None,
) -> DatasetScores:
    """Score a results folder `<pred_dir>/<seq>/<frame>.png` against ground truth.

    `gt_dir` is a DAVIS root or a `<seq>/...png` folder (see `gt_sequence_dirs`).
    `sequences`: the sequences to score (default: all of the ground truth's; for a DAVIS
    root with `ImageSets/2017/<split>.txt`, that list). `workers`: threads scoring sequences
    in parallel (default: up to 8; OpenCV and numpy release the GIL). `progress`: a tqdm
    bar over sequences on stderr.
    """
    pred_root = Path(pred_dir)
    if not pred_root.is_dir():
        raise InputNotFoundError(f"prediction folder not found: {pred_root}")
    dirs = gt_sequence_dirs(gt_dir, sequences, split)
    seqs = list(dirs)

    def run(seq: str) -> list[ObjectScores]:
        return evaluate_dataset_sequence(
            pred_root / seq, dirs[seq], seq,
            skip_first_last=skip_first_last, bound_th=bound_th, grey_255_as_object=grey_255_as_object,
        )

    if workers is None:
        workers = min(8, os.cpu_count() or 1, len(seqs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seqs), desc="J&F", unit="seq", leave=False)
    results: dict[str, list[ObjectScores]] = {}
    try:
        if workers <= 1 or len(seqs) <= 1:
            for s in seqs:
                results[s] = run(s)
                if bar is not None:
                    bar.update(1)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {s: pool.submit(run, s) for s in seqs}
                try:
                    for s in seqs:
                        results[s] = futures[s].result()
                        if bar is not None:
                            bar.update(1)
                except BaseException:
                    for f in futures.values():
                        f.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
    objects = [o for s in seqs for o in results[s]]
    return DatasetScores(objects=objects, summary=summarize(objects), sequences=seqs)
