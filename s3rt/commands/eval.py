"""Score predicted masks against ground truth with the official DAVIS-2017 semi-supervised
J&F: region similarity J and boundary F-measure per object, first and last frames skipped,
objects of all sequences pooled for the global means.

--pred holds <seq>/<frame>.png (palette PNGs with the first-frame ground truth's ids);
--gt is a DAVIS root (Annotations/480p/<seq>/) or a folder of <seq>/*.png or
<seq>/Annotations/*.png. Grey 0/255 masks (DAVIS-2016) are read as one object (255 -> 1)
unless --keep-grey-255 is given.

Writes global_results-<split>.csv and per-sequence_results-<split>.csv (3 decimals, the
official names and columns) into the prediction folder, or where --csv says. Unlike the
official tool it never reuses an existing CSV: results are always recomputed.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path

from s3rt.commands import UserError
from s3rt.io.atomic import atomic_write, remove_stale_temps
from s3rt.io.errors import InputError

_NAME = re.compile(r"[\w][\w.+-]*")  # a sequence or split name: one folder / file name, no path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="DIR", help="predictions: DIR/<seq>/<frame>.png")
    parser.add_argument("--gt", required=True, metavar="DIR",
                        help="ground truth: a DAVIS root, or DIR/<seq>/*.png, or DIR/<seq>/Annotations/*.png")
    parser.add_argument("--sequences", metavar="A,B", help="comma-separated sequences (default: all in --gt)")
    parser.add_argument("--split", default="val",
                        help="DAVIS split: picks ImageSets/2017/<split>.txt and names the CSVs (default: val)")
    parser.add_argument("--csv", metavar="OUT",
                        help="where to write the CSVs: a .csv file gets the global table and "
                             "<stem>_per-sequence.csv beside it gets the per-object table; a folder gets "
                             "the official names (default: the --pred folder)")
    parser.add_argument("--no-csv", action="store_true", help="print only, write no CSV")
    parser.add_argument("--all-frames", action="store_true",
                        help="score the first and last frames too (the official evaluation skips them)")
    parser.add_argument("--bound-th", type=float, default=0.008,
                        help="F boundary tolerance: fraction of the image diagonal, or pixels if >= 1 (default: 0.008)")
    parser.add_argument("--keep-grey-255", action="store_true",
                        help="do not read grey 0/255 masks as one object (255 stays void)")
    parser.add_argument("--workers", type=int, default=None, help="threads scoring sequences (default: up to 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no per-object table")


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3f}"


def _table(header: list[str], rows: list[list[str]], label_column: bool = True) -> str:
    """Plain aligned text: the first column left-aligned when it holds labels, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        first = cells[0].ljust(widths[0]) if label_column else cells[0].rjust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _csv_paths(args, split: str) -> tuple[Path, Path]:
    g_name, s_name = f"global_results-{split}.csv", f"per-sequence_results-{split}.csv"
    if args.csv is None:
        d = Path(args.pred)
        return d / g_name, d / s_name
    out = Path(args.csv)
    if out.suffix.lower() == ".csv":
        return out, out.with_name(f"{out.stem}_per-sequence.csv")
    return out / g_name, out / s_name


def _check_csv_target(path: Path) -> None:
    """Refuse, before the evaluation, a CSV that could not be written."""
    if path.is_dir():
        raise UserError(f"cannot write the results CSV {path}: it is a folder (use --csv OUT or --no-csv)")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write the results CSV {path}: {ancestor} is a file, not a folder "
                        "(use --csv OUT or --no-csv)")


def main(args: argparse.Namespace) -> int:
    from s3rt.metrics.davis import GLOBAL_COLUMNS, PER_OBJECT_COLUMNS, evaluate_dataset

    sequences = None
    if args.sequences is not None:
        sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
        if not sequences:
            raise UserError("--sequences is empty")
        bad = [s for s in sequences if not _NAME.fullmatch(s)]
        if bad:
            raise UserError(f"--sequences {bad[0]!r} is not a sequence name (a folder name: letters, digits, "
                            "'_', '-', '.', no path)")
    if not _NAME.fullmatch(args.split):
        raise UserError(f"--split {args.split!r} is not a split name (letters, digits, '_', '-', '.', no path)")
    if not math.isfinite(args.bound_th) or args.bound_th <= 0 or (
            args.bound_th >= 1 and args.bound_th != int(args.bound_th)):
        raise UserError(f"--bound-th must be a fraction in (0, 1) or a whole number of pixels, got {args.bound_th}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if not args.no_csv:
        for p in _csv_paths(args, args.split):
            _check_csv_target(p)
    try:
        result = evaluate_dataset(
            args.pred,
            args.gt,
            sequences,
            skip_first_last=not args.all_frames,
            bound_th=args.bound_th,
            grey_255_as_object=not args.keep_grey_255,
            split=args.split,
            progress=not args.quiet and sys.stderr.isatty(),
            workers=args.workers,
        )
    except InputError as e:
        raise UserError(str(e)) from e
    except OSError as e:  # a folder that cannot be listed or read
        raise UserError(f"cannot read {e.filename or 'the masks'}: {e.strerror or e}") from e

    g_header = list(GLOBAL_COLUMNS)
    g_row = [_fmt(result.summary[c]) for c in GLOBAL_COLUMNS]
    s_header = list(PER_OBJECT_COLUMNS)
    s_rows = [[o.name, _fmt(o.J_mean), _fmt(o.F_mean)] for o in result.objects]

    n_frames = sum(len(o.frames) for o in {o.sequence: o for o in result.objects}.values())
    print(f"J&F over {len(result.sequences)} sequence(s), {len(result.objects)} object(s), "
          f"{n_frames} evaluated frame(s)")
    print(_table(g_header, [g_row], label_column=False))
    if not args.quiet:
        print()
        print(_table(["Sequence", "J&F-Mean", "J-Mean", "F-Mean"],
                     [[o.name, _fmt(o.JF_mean), _fmt(o.J_mean), _fmt(o.F_mean)] for o in result.objects]))

    if not args.no_csv:
        g_path, s_path = _csv_paths(args, args.split)
        try:
            for p in (g_path, s_path):
                remove_stale_temps(p)  # left by an eval killed while writing
            _write_csv(g_path, g_header, [g_row])
            _write_csv(s_path, s_header, s_rows)
        except OSError as e:
            raise UserError(f"cannot write the results CSV {e.filename or g_path}: {e.strerror or e} "
                            "(use --csv OUT or --no-csv)") from e
        print(f"\nwrote {g_path} and {s_path}")
    return 0
