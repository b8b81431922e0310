"""J&F of trained checkpoints on held-out synthetic test clips and on the DAVIS samples.

The test set: 20 clips of 60 frames from the test seed range (s3rt.training.data.SEED_RANGES;
training and validation never draw from it), 2 or 3 objects each, the first 2 clips with an
object that appears mid-clip (its mask is given to the tracker on the frame it appears, as
`s3rt.synthetic.later_objects` finds it). Every network runs through `s3rt.Tracker` with its
default options (torch backend, CPU), predictions are written as palette PNGs, and the scores
come from `s3rt eval` (the DAVIS-2017 definition: first and last frames skipped).

    python benchmarks/eval_bundled.py                                   # the bundled s3-test
    python benchmarks/eval_bundled.py --model s3-test=bundled --model cutie-test=training/runs/cutie-test.pth
    python benchmarks/eval_bundled.py --model s3-test=training/runs/s3-test/state.pth   # a run in progress

--model takes PRESET=CHECKPOINT (CHECKPOINT: 'bundled', a .pth from `s3rt train`, a training
state.pth, or 'random'). Prints one table per data set and, with --markdown FILE, writes them
as Markdown (the model card's evaluation table).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import s3rt
from s3rt.cli import main as s3rt_main
from s3rt.io.masks import read_mask, write_mask
from s3rt.synthetic import later_objects, make_varied_clip, write_clip

ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT.parent / "shared" / "data" / "davis"
DAVIS_SEQUENCES = ("blackswan", "car-shadow")
TEST_BASE = 2_000_000_000  # = s3rt.training.data.SEED_RANGES["test"][0]
TRAIN_CROP = 96  # the bundled checkpoint's training crop: test objects get the same sizes in pixels


def test_clip(i: int, frames: int = 60, height: int = 160, width: int = 256):
    """Test clip i: seed TEST_BASE + i; 2 objects (even i) or 3 (odd i); clips 0 and 1 have an
    object that appears mid-clip (id 1 of 2 / id 2 of 3, so the DAVIS rule scores it).
    Object sizes in pixels match the training crops (radius 10-21 px at 96x96)."""
    n = 2 + i % 2
    late = 1 if i < 2 else 0
    scale = TRAIN_CROP / min(height, width)
    return make_varied_clip(frames, height, width, n, TEST_BASE + i, speed=1.0, late_objects=late,
                            late_ids=[n - 1] if late else None, radius_range=(0.10 * scale, 0.22 * scale),
                            return_info=True)


def write_test_set(root: Path, count: int, frames: int) -> list[str]:
    names = []
    for i in range(count):
        name = f"test{i:02d}"
        seq = root / name
        if not (seq / "Annotations").is_dir() or len(list((seq / "Annotations").glob("*.png"))) != frames:
            f, m, _info = test_clip(i, frames)
            write_clip(seq, f, m)
        names.append(name)
    return names


def load_model(preset: str, ckpt: str):
    if ckpt == "random":
        return s3rt.build_model(preset)
    if ckpt != "bundled":
        obj = torch.load(ckpt, map_location="cpu", weights_only=False)
        if isinstance(obj, dict) and "optimizer" in obj:  # a training state: take its weights
            return s3rt.build_model(preset, obj["model"])
    return s3rt.build_model(preset, ckpt)


def track_sequence(model, seq_dir: Path, out_dir: Path) -> tuple[int, float]:
    """Track one DAVIS-layout sequence (first-frame mask, plus masks of objects that appear
    later); write palette PNGs. Returns (frames, seconds)."""
    frames = sorted((seq_dir / "JPEGImages").glob("*.jpg"))
    gts = [read_mask(p) for p in sorted((seq_dir / "Annotations").glob("*.png"))]
    extra = later_objects(np.stack(gts)) if len(gts) == len(frames) else {}
    tracker = s3rt.Tracker(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, path in enumerate(frames):
        frame = np.array(Image.open(path).convert("RGB"))
        if i == 0:
            r = tracker.step(frame, mask=gts[0])
        elif i in extra:
            r = tracker.step(frame, mask=extra[i][0], objects=extra[i][1])
        else:
            r = tracker.step(frame)
        write_mask(out_dir / f"{path.stem}.png", r.mask)
    return len(frames), time.perf_counter() - t0


def s3rt_eval(pred: Path, gt: Path, sequences: list[str]) -> tuple[dict, list[dict]]:
    csv_path = pred / "scores.csv"
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = s3rt_main(["eval", "--pred", str(pred), "--gt", str(gt), "--sequences", ",".join(sequences),
                        "--csv", str(csv_path), "--quiet"])
    if rc != 0:
        raise RuntimeError(f"s3rt eval failed ({rc}): {buf.getvalue()}")
    with open(csv_path) as f:
        glob = next(csv.DictReader(f))
    with open(csv_path.with_name("scores_per-sequence.csv")) as f:
        per = list(csv.DictReader(f))
    return {k: float(v) for k, v in glob.items()}, per


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", metavar="PRESET=CKPT",
                   help="network to evaluate (repeatable; default s3-test=bundled)")
    p.add_argument("--clips", type=int, default=20, help="synthetic test clips (default 20)")
    p.add_argument("--frames", type=int, default=60, help="frames per test clip (default 60)")
    p.add_argument("--work", metavar="DIR", help="where test clips and predictions go (default: a temporary folder)")
    p.add_argument("--no-davis", action="store_true", help="skip the DAVIS samples")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m.split("=", 1) for m in (args.model or ["s3-test=bundled"])]
    tmp = None
    if args.work:
        work = Path(args.work)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="s3rt-eval-")
        work = Path(tmp.name)
    gt_root = work / "synthetic"
    seqs = write_test_set(gt_root, args.clips, args.frames)
    davis = [] if args.no_davis or not DAVIS.is_dir() else [s for s in DAVIS_SEQUENCES if (DAVIS / s).is_dir()]

    rows_syn, rows_davis = [], []
    for preset, ckpt in models:
        model = load_model(preset, ckpt)
        label = f"{preset} ({ckpt})"
        tag = f"{preset}-{Path(ckpt).stem}"
        n_frames, secs = 0, 0.0
        for s in seqs:
            n, t = track_sequence(model, gt_root / s, work / "pred" / tag / "synthetic" / s)
            n_frames, secs = n_frames + n, secs + t
        g, per = s3rt_eval(work / "pred" / tag / "synthetic", gt_root, seqs) if seqs else ({}, [])
        late = [r for r in per if r["Sequence"] in ("test00_1", "test01_2")]
        late_jf = np.mean([(float(r["J-Mean"]) + float(r["F-Mean"])) / 2 for r in late]) if late else float("nan")
        if seqs:
            rows_syn.append([label, f"{g['J&F-Mean']:.3f}", f"{g['J-Mean']:.3f}", f"{g['F-Mean']:.3f}",
                             f"{late_jf:.3f}", f"{n_frames / secs:.1f}"])
            print(f"{label}: synthetic J&F {g['J&F-Mean']:.3f} ({len(per)} objects, {n_frames} frames, "
                  f"{n_frames / secs:.1f} fps)", flush=True)
        if davis:
            pred = work / "pred" / tag / "davis"
            for s in davis:
                track_sequence(model, DAVIS / s, pred / s)
            g, per = s3rt_eval(pred, DAVIS, davis)
            by_seq = {r["Sequence"].rsplit("_", 1)[0]: (float(r["J-Mean"]) + float(r["F-Mean"])) / 2 for r in per}
            rows_davis.append([label, f"{g['J&F-Mean']:.3f}", *(f"{by_seq[s]:.3f}" for s in davis)])
            print(f"{label}: DAVIS J&F {g['J&F-Mean']:.3f}", flush=True)

    syn_header = ["network", "J&F", "J", "F", "J&F of the 2 late objects", "fps (CPU)"]
    tables = [] if not seqs else [(f"Synthetic test clips ({len(seqs)} clips x {args.frames} frames, seeds {TEST_BASE}..."
               f"{TEST_BASE + len(seqs) - 1})", syn_header, rows_syn)]
    if davis:
        tables.append(("DAVIS samples (" + ", ".join(davis) + ")", ["network", "J&F", *davis], rows_davis))
    text = []
    for title, header, rows in tables:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        text.append(title)
        text.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        text += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        text.append("")
    print("\n" + "\n".join(text))
    if args.markdown:
        md = []
        for title, header, rows in tables:
            md += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            md += ["| " + " | ".join(r) + " |" for r in rows]
            md.append("")
        Path(args.markdown).write_text("\n".join(md))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
