"""Fuzz-style: a generated list of malformed inputs thrown at `s3rt run` and `s3rt eval`.

For every case: the command either succeeds (exit 0), or refuses with exit code 2 and exactly
one line on stderr (file descriptor 2, so native libraries' prints count too) and no
traceback; no file outside its --out / CSV changed, and no temporary file or folder is left.
Each case gets a fresh world: a 4-frame 32x48 clip with its masks, made here.
(`export` and `parity` are fuzzed in tests/test_fuzz_export_parity.py.)
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from s3rt.cli import main
from s3rt.io import write_mask
from s3rt.synthetic import make_clip, write_clip

H, W, T = 32, 48, 4
_CLIP = make_clip(T, H, W, 2, seed=5)
_ONE = (_CLIP[1] > 0).astype(np.uint8)  # one object in every frame: a consistent DAVIS sequence


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- file makers


def png_header_only(path: Path, w: int, h: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def avi(path: Path, frames, fourcc="MJPG") -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        w.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
    w.release()
    return path


def frames_dir(world: Path) -> Path:
    return world / "clip" / "JPEGImages"


def masks_dir(world: Path) -> Path:
    return world / "clip" / "Annotations"


def first_mask(world: Path) -> Path:
    return masks_dir(world) / "00000.png"


# ----------------------------------------------------------------------------- run cases
# Each returns the arguments of `s3rt run` after --preset/--size, given a fresh world.


def _frames_with(make):
    def case(world):
        make(frames_dir(world))
        return ["--input", frames_dir(world), "--mask", first_mask(world), "--out", world / "out"]
    return case


def _mask_file(make):
    def case(world):
        p = make(world)
        return ["--input", frames_dir(world), "--mask", p, "--out", world / "out"]
    return case


def _input(make):
    def case(world):
        return ["--input", make(world), "--mask", first_mask(world), "--out", world / "out"]
    return case


def _out(make, *extra):
    def case(world):
        return ["--input", frames_dir(world), "--mask", first_mask(world), "--out", make(world), *extra]
    return case


def _opts(*extra):
    def case(world):
        return ["--input", frames_dir(world), "--mask", first_mask(world), "--out", world / "out", *extra]
    return case


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _img(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


rng = np.random.default_rng(0)
RUN_CASES = {
    # frames: wrong kinds, truncated and zero-byte files, odd sizes and modes
    "zero-byte frame": _frames_with(lambda d: _write(d / "00002.jpg", b"")),
    "truncated first frame": _frames_with(lambda d: truncate(d / "00000.jpg", 0.3)),
    "truncated later frame": _frames_with(lambda d: truncate(d / "00003.jpg", 0.05)),
    "text named .png": _frames_with(lambda d: _write(d / "00004.png", b"hello")),
    "frame of another size": _frames_with(lambda d: _img(d / "00002.jpg", np.zeros((H + 2, W, 3), np.uint8))),
    "duplicate stem": _frames_with(lambda d: _img(d / "00001.png", np.zeros((H, W, 3), np.uint8))),
    "rgba frame": _frames_with(lambda d: _img(d / "00001.png", np.zeros((H, W, 4), np.uint8)) and
                               (d / "00001.jpg").unlink()),
    "grey frame": _frames_with(lambda d: _img(d / "00001.png", np.zeros((H, W), np.uint8)) and
                               (d / "00001.jpg").unlink()),
    "16-bit frame": _frames_with(lambda d: _img(d / "00001.png", np.full((H, W), 40000, np.uint16)) and
                                 (d / "00001.jpg").unlink()),
    "bomb-sized frame": _frames_with(lambda d: png_header_only(d / "00000.jpg", 16000, 16000)),
    "hidden junk only": _input(lambda w: _write(_mkdir(w / "hid") / ".x.jpg", b"junk").parent),
    "empty folder": _input(lambda w: _mkdir(w / "empty")),
    "missing input": _input(lambda w: w / "nope"),
    "folder named like a video": _input(lambda w: _mkdir(w / "dir.mp4")),
    "zero-byte video": _input(lambda w: _write(w / "v.mp4", b"")),
    "random-bytes video": _input(lambda w: _write(w / "v.avi", rng.bytes(5000))),
    "text video": _input(lambda w: _write(w / "v.mkv", b"not a video\n" * 50)),
    "truncated video": _input(lambda w: truncate(avi(w / "v.avi", list(_CLIP[0]) * 3), 0.6)),
    "header-only video": _input(lambda w: truncate(avi(w / "v.avi", list(_CLIP[0])), 0.1)),
    "video of another size": _input(lambda w: avi(w / "v.avi", [np.zeros((H * 2, W, 3), np.uint8)] * 3)),
    "input with spaces and unicode": _input(lambda w: _mkdir(w / "my clip ü") and
                                            (w / "clip" / "JPEGImages").rename(w / "my clip ü" / "f") or
                                            w / "my clip ü" / "f"),
    "input with a newline": _input(lambda w: w / "a\nb"),
    "input with a NUL": _input(lambda w: f"{w}/a\0b"),
    "symlink loop": _input(lambda w: (os.symlink(w / "loop", w / "loop"), w / "loop")[1]),
    # masks
    "zero-byte mask": _mask_file(lambda w: _write(w / "m.png", b"")),
    "truncated mask": _mask_file(lambda w: truncate(Path(
        Image.fromarray(rng.integers(0, 3, (H, W), dtype=np.uint8)).save(w / "m.png") or w / "m.png"), 0.5)),
    "jpeg mask": _mask_file(lambda w: _img(w / "m.jpg", (_CLIP[1][0] > 0).astype(np.uint8) * 255, quality=80)),
    "rgb mask": _mask_file(lambda w: _img(w / "m.png", np.zeros((H, W, 3), np.uint8))),
    "float mask": _mask_file(lambda w: _img(w / "m.tif", np.ones((H, W), np.float32))),
    "ids above 255": _mask_file(lambda w: _img(w / "m.png", np.full((H, W), 300, np.uint16))),
    "all-zero mask": _mask_file(lambda w: write_mask(w / "m.png", np.zeros((H, W), np.uint8))),
    "1x1 mask": _mask_file(lambda w: write_mask(w / "m.png", np.ones((1, 1), np.uint8))),
    "mask one pixel narrower": _mask_file(lambda w: write_mask(w / "m.png", _CLIP[1][0][:, 1:])),
    "mask of another aspect": _mask_file(lambda w: write_mask(w / "m.png", _CLIP[1][0][:, :H])),
    "grey 0/255 mask": _mask_file(lambda w: _img(w / "m.png", (_CLIP[1][0] > 0).astype(np.uint8) * 255)),
    "mask is a folder without matches": _mask_file(lambda w: write_mask(_mkdir(w / "md") / "x.png",
                                                                         _CLIP[1][0]).parent),
    "mask folder": _mask_file(lambda w: masks_dir(w)),
    "mask missing": _mask_file(lambda w: w / "nope.png"),
    "mask bomb header": _mask_file(lambda w: png_header_only(w / "m.png", 30000, 30000)),
    # outputs: hostile paths
    "out is the frame folder": _out(lambda w: frames_dir(w), "--overwrite"),
    "out inside the frames": _out(lambda w: frames_dir(w) / "res"),
    "out holds the inputs": _out(lambda w: w / "clip", "--overwrite"),
    "out is the mask folder": _out(lambda w: masks_dir(w), "--overwrite"),
    "out is a file": _out(lambda w: _write(w / "f", b"x")),
    "out under a file": _out(lambda w: _write(w / "f", b"x") / "o"),
    "out is the world": _out(lambda w: w, "--overwrite"),
    "out is root": _out(lambda w: Path("/"), "--overwrite"),
    "out holds other files": _out(lambda w: _write(_mkdir(w / "o") / "keep.txt", b"k").parent, "--overwrite"),
    "out holds results": _out(lambda w: write_mask(_mkdir(w / "o") / "00000.png", _CLIP[1][0]).parent),
    "out with a newline": _out(lambda w: w / "o\nut"),
    "out with a NUL": _out(lambda w: f"{w}/o\0ut"),
    "out empty string": _out(lambda w: ""),
    # checkpoints and options
    "zero-byte checkpoint": _opts("--checkpoint", "{w}/c.pth"),
    "text checkpoint": _opts("--checkpoint", "{w}/t.pth"),
    "checkpoint is a folder": _opts("--checkpoint", "{w}/clip"),
    "missing checkpoint": _opts("--checkpoint", "{w}/none.pth"),
    "size 0": _opts("--size", "0"),
    "size -7": _opts("--size", "-7"),
    "device banana": _opts("--device", "banana"),
    "stagger 0": _opts("--stagger-updates", "0"),
    "mem-every -1": _opts("--mem-every", "-1"),
    "top-k words": _opts("--top-k", "many"),
    "onnxruntime without export": _opts("--backend", "onnxruntime"),
    "export folder of junk": _opts("--backend", "onnxruntime", "--export", "{w}/clip"),
    "preset unknown": _opts("--preset", "nope"),
    "max pixels tiny": _opts("--max-frame-pixels", "10"),
}


def _prepare(world: Path) -> None:
    write_clip(world / "clip", *_CLIP)
    (world / "c.pth").write_bytes(b"")
    (world / "t.pth").write_text("state_dict = {}\n")


# ----------------------------------------------------------------------------- eval cases


def _results(world: Path, seq: str = "s") -> Path:
    pred = world / "pred" / seq
    pred.mkdir(parents=True)
    for i, m in enumerate(_ONE):
        write_mask(pred / f"{i:05d}.png", m)
    return world / "pred"


def _gt(world: Path, seq: str = "s") -> Path:
    gt = world / "gt" / seq
    gt.mkdir(parents=True)
    for i, m in enumerate(_ONE):
        write_mask(gt / f"{i:05d}.png", m)
    return world / "gt"


def _eval(change=None, *extra):
    def case(world):
        pred, gt = _results(world), _gt(world)
        if change:
            change(world)
        return ["--pred", pred, "--gt", gt, *extra]
    return case


EVAL_CASES = {
    "eval ok": _eval(),
    "zero-byte prediction": _eval(lambda w: _write(w / "pred" / "s" / "00001.png", b"")),
    "truncated ground truth": _eval(lambda w: truncate(w / "gt" / "s" / "00002.png")),
    "jpeg ground truth": _eval(lambda w: _img(w / "gt" / "s" / "00001.png", _ONE[1] * 255, format="JPEG")),
    "prediction of another size": _eval(lambda w: write_mask(w / "pred" / "s" / "00001.png", np.ones((H, H), np.uint8))),
    "missing prediction": _eval(lambda w: (w / "pred" / "s" / "00002.png").unlink()),
    "rgb prediction": _eval(lambda w: _img(w / "pred" / "s" / "00001.png", np.zeros((H, W, 3), np.uint8))),
    "empty ground truth": _eval(lambda w: write_mask(w / "gt" / "s" / "00000.png", np.zeros((H, W), np.uint8))),
    "prediction ids above gt": _eval(lambda w: write_mask(w / "pred" / "s" / "00001.png", np.full((H, W), 9, np.uint8))),
    "pred missing": _eval(lambda w: shutil.rmtree(w / "pred")),
    "gt is a file": _eval(lambda w: (shutil.rmtree(w / "gt"), _write(w / "gt", b"x"))),
    "sequence with a path": _eval(None, "--sequences", "../../etc"),
    "sequence missing": _eval(None, "--sequences", "nope"),
    "sequences empty": _eval(None, "--sequences", ","),
    "split with a path": _eval(None, "--split", "../../x"),
    "bound nan": _eval(None, "--bound-th", "nan"),
    "bound 0": _eval(None, "--bound-th", "0"),
    "workers 0": _eval(None, "--workers", "0"),
    "csv under a file": _eval(None, "--csv", "{w}/clip/JPEGImages/00000.jpg/x.csv"),
    "csv is a folder": _eval(lambda w: _mkdir(w / "r.csv"), "--csv", "{w}/r.csv"),
    "csv into a new folder": _eval(None, "--csv", "{w}/new/res"),
}


# ----------------------------------------------------------------------------- the harness


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else None)
    return out


def temporaries(root: Path) -> list[str]:
    return [k for k in snapshot(root) if any(t in Path(k).name for t in (".partial-", ".old-", ".tmp"))]


def _argv(args, world: Path) -> list[str]:
    return [str(a).replace("{w}", str(world)) for a in args]


def _check(capfd, argv: list[str], world: Path, allowed: tuple[str, ...]):
    before = snapshot(world)
    parent_before = sorted(os.listdir(world.parent))
    capfd.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    _, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc in (0, 2), (rc, err)
    assert "Traceback" not in err, err
    if rc == 2:
        assert len(lines) == 1 and ": error: " in lines[0], err
    else:
        assert all(": warning: " in line for line in lines), err
    after = snapshot(world)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    unexpected = [k for k in changed if not k.startswith(allowed)]
    assert not unexpected, f"changed outside the outputs: {unexpected[:5]}"
    if rc == 2:
        assert not [k for k in changed if k.startswith(("out", "o/"))], changed[:5]
    assert not temporaries(world), temporaries(world)
    assert sorted(os.listdir(world.parent)) == parent_before
    return rc, lines


@pytest.mark.parametrize("name", list(RUN_CASES))
def test_run_fuzz(name, tmp_path, capfd, monkeypatch):
    world = tmp_path / "w"
    world.mkdir()
    _prepare(world)
    monkeypatch.chdir(world)
    args = RUN_CASES[name](world)
    preset = ["--preset", "cutie-test"] if "--preset" not in map(str, args) else []
    argv = ["run", *preset, "--size", "-1", *_argv(args, world)] if "--size" not in map(str, args) else \
        ["run", *preset, *_argv(args, world)]
    _check(capfd, argv, world, allowed=("out", "o"))


@pytest.mark.parametrize("name", list(EVAL_CASES))
def test_eval_fuzz(name, tmp_path, capfd, monkeypatch):
    world = tmp_path / "w"
    world.mkdir()
    _prepare(world)
    monkeypatch.chdir(world)
    args = EVAL_CASES[name](world)
    rc, _ = _check(capfd, ["eval", "--quiet", *_argv(args, world)], world, allowed=("pred/global_results",
                                                                                     "pred/per-sequence", "new"))
    if name == "eval ok":
        assert rc == 0


def test_the_cases_cover_both_outcomes(tmp_path, capfd, monkeypatch):
    """Not every case is a refusal: a fuzz list that only ever fails would prove little."""
    outcomes = {}
    for name in ("mask one pixel narrower", "grey 0/255 mask", "rgba frame", "16-bit frame", "truncated video",
                 "zero-byte frame", "out is a file"):
        world = tmp_path / name.replace(" ", "_").replace("/", "_")
        world.mkdir()
        _prepare(world)
        monkeypatch.chdir(world)
        argv = ["run", "--preset", "cutie-test", "--size", "-1", *_argv(RUN_CASES[name](world), world)]
        outcomes[name] = _check(capfd, argv, world, allowed=("out", "o"))[0]
    assert outcomes == {"mask one pixel narrower": 0, "grey 0/255 mask": 0, "rgba frame": 0, "16-bit frame": 0,
                        "truncated video": 0, "zero-byte frame": 2, "out is a file": 2}
