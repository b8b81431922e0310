"""Hostile use of `s3rt run` (issue 13): every refusal is one line on stderr with exit code 2
before any work where that can be known, outputs are never mixed or half-written, and
signals clean up. Small clips (4 frames of 32x48, preset cutie-test, one torch thread)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from s3rt.cli import main
from s3rt.io import read_mask, write_mask
from s3rt.synthetic import make_clip, write_clip

H, W, T = 32, 48, 4
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    frames, masks = make_clip(T, H, W, 2, seed=3)
    write_clip(root, frames, masks)
    return root


def frames_of(clip):
    return clip / "JPEGImages"


def mask_of(clip):
    return clip / "Annotations" / "00000.png"


def run(capsys, *args, preset="cutie-test"):
    """(exit code, stdout, stderr lines) of `s3rt run` in this process."""
    argv = ["run", "--preset", preset, "--size", "-1", *map(str, args)]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, [line for line in err.splitlines() if line.strip()]


def refused(capsys, *args, match):
    rc, _, err = run(capsys, *args)
    assert rc == 2, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert match in err[0], err[0]
    return err[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".partial-" in p.name or ".old-" in p.name or ".tmp" in p.name]


# ----------------------------------------------------------------------------- --out


def test_out_with_results_is_refused_without_overwrite_and_replaced_whole_with_it(clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", out)[0] == 0
    first = snapshot(out)
    write_mask(out / "99999.png", np.ones((H, W), np.uint8))  # a stale result of an earlier run
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", out, match="--overwrite")
    assert (out / "99999.png").exists()
    rc, text, _ = run(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", out, "--overwrite")
    assert rc == 0 and "wrote 4 masks" in text
    assert snapshot(out) == first  # the stale mask is gone: the folder was replaced as a whole
    assert no_temporaries(tmp_path)
    # --overwrite never deletes a folder that s3rt run did not write
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", mine, "--overwrite",
            match="did not write (e.g. notes.txt)")
    assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("where", ["frames", "inside frames", "clip root", "mask folder", "cwd"])
def test_out_overlapping_the_inputs_is_refused(clip, tmp_path, capsys, monkeypatch, where):
    target = {"frames": frames_of(clip), "inside frames": frames_of(clip) / "res", "clip root": clip,
              "mask folder": clip / "Annotations", "cwd": tmp_path}[where]
    monkeypatch.chdir(tmp_path)
    before = snapshot(clip)
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", target, "--overwrite",
            match="choose")
    assert snapshot(clip) == before and no_temporaries(clip)


def test_out_that_is_a_file_or_in_a_file_is_refused_before_work(clip, tmp_path, capsys, monkeypatch):
    import s3rt.commands.run as run_cmd

    def no_work(*a, **k):
        raise AssertionError("the model was built before --out was checked")

    monkeypatch.setattr(run_cmd, "make_tracker", no_work)
    f = tmp_path / "file"
    f.write_text("x")
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", f, match="is a file")
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", f / "sub" / "out",
            match="is a file, not a folder")
    assert f.read_text() == "x" and no_temporaries(tmp_path)


def test_disk_full_while_writing_masks(clip, tmp_path, capsys, monkeypatch):
    import s3rt.commands.run as run_cmd
    real, calls = run_cmd.write_mask, []

    def write_mask_until_full(path, ids):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, ids)

    monkeypatch.setattr(run_cmd, "write_mask", write_mask_until_full)
    out = tmp_path / "out"
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", out,
            match="No space left on device; nothing was written")
    assert not out.exists() and no_temporaries(tmp_path)


_FULL_DISK_RUN = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
import torch
torch.set_num_threads(1)
from s3rt.cli import main
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))  # files stop there: a full disk
sys.exit(main(sys.argv[2:]))
"""


def test_disk_full_while_writing_the_overlay_video(tmp_path):
    frames, masks = make_clip(T, 64, 96, 2, seed=1)
    write_clip(tmp_path / "c", frames, masks)
    out = tmp_path / "out"
    argv = ["run", "--preset", "cutie-test", "--size", "-1", "--input", str(tmp_path / "c" / "JPEGImages"),
            "--mask", str(tmp_path / "c" / "Annotations" / "00000.png"), "--out", str(out), "--overlay"]
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_RUN, "2000", *argv], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert len(err) == 1 and "frames" in err[0] and "nothing was written" in err[0], r.stderr
    assert not out.exists() and no_temporaries(tmp_path)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signals_stop_cleanly(clip, tmp_path, capsys, monkeypatch, sig, code, word):
    from s3rt.runtime.tracker import Tracker
    real = Tracker.step

    def step(self, *a, **k):
        if self.frame_index == 1:
            os.kill(os.getpid(), sig)
        return real(self, *a, **k)

    monkeypatch.setattr(Tracker, "step", step)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    # Python raises KeyboardInterrupt on SIGINT only if SIGINT was not ignored when it started, and a
    # shell ignores it for background jobs (`nohup ... &`, a CI runner's `&`): set Ctrl-C's default here.
    int_before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rc, _, err = run(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", out)
    finally:
        signal.signal(signal.SIGINT, int_before)
    assert rc == code and len(err) == 1 and word in err[0], err
    assert not out.exists() and no_temporaries(tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone again


def test_stale_temporaries_are_removed_and_folders_get_normal_modes(clip, tmp_path, capsys):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    stale = tmp_path / f".out.partial-{p.pid}-abcd1234"  # left by a run killed with SIGKILL
    stale.mkdir()
    (stale / "00000.png").write_bytes(b"half")
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert run(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", out, "--overlay", "png")[0] == 0
    finally:
        os.umask(old)
    assert not stale.exists() and no_temporaries(tmp_path)
    assert out.stat().st_mode & 0o777 == 0o755 and (out / "overlay").stat().st_mode & 0o777 == 0o755
    assert (out / "00000.png").stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------- masks and frames


def test_mask_of_nearly_the_frame_size_is_resized_with_one_warning(clip, tmp_path, capsys):
    m = read_mask(mask_of(clip))
    narrow = tmp_path / "narrow.png"  # like Cutie's judo example: 853x480 for 854x480 frames
    write_mask(narrow, m[:, :-1])
    rc, _, err = run(capsys, "--input", frames_of(clip), "--mask", narrow, "--out", tmp_path / "out")
    assert rc == 0
    warned = [e for e in err if "warning" in e]
    assert len(warned) == 1 and "narrow.png" in warned[0] and f"{W - 1}x{H}" in warned[0], err
    other = tmp_path / "other.png"
    write_mask(other, np.ones((H, H), np.uint8))
    refused(capsys, "--input", frames_of(clip), "--mask", other, "--out", tmp_path / "o2", match="aspect ratio")


def test_lossy_and_smoothed_masks_are_refused_and_0_255_is_one_object(clip, tmp_path, capsys):
    disc = np.zeros((H, W), np.uint8)
    cv2.circle(disc, (W // 2, H // 2), 10, 255, -1, cv2.LINE_AA)
    Image.fromarray(disc).save(tmp_path / "m.jpg")
    refused(capsys, "--input", frames_of(clip), "--mask", tmp_path / "m.jpg", "--out", tmp_path / "o", match="JPEG")
    Image.fromarray(disc).save(tmp_path / "aa.png")
    refused(capsys, "--input", frames_of(clip), "--mask", tmp_path / "aa.png", "--out", tmp_path / "o",
            match="smoothed")
    Image.fromarray(np.where(disc > 127, 255, 0).astype(np.uint8)).save(tmp_path / "plain.png")
    rc, _, err = run(capsys, "--input", frames_of(clip), "--mask", tmp_path / "plain.png", "--out", tmp_path / "o")
    assert rc == 0 and any("read as one object" in e for e in err), err
    assert set(np.unique(read_mask(tmp_path / "o" / "00000.png"))) <= {0, 1}


def test_empty_and_tiny_masks(clip, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    write_mask(empty, np.zeros((H, W), np.uint8))
    refused(capsys, "--input", frames_of(clip), "--mask", empty, "--out", tmp_path / "o", match="nothing to track")
    dot = np.zeros((H, W), np.uint8)
    dot[5:20, 5:20] = 1
    dot[25, 40] = 2  # one pixel
    write_mask(tmp_path / "dot.png", dot)
    argv = ["run", "--preset", "cutie-test", "--size", "16", "--input", str(frames_of(clip)),
            "--mask", str(tmp_path / "dot.png"), "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "object(s) [2]" in err and "may vanish" in err


def test_frames_that_cannot_be_used(clip, tmp_path, capfd):
    capsys = capfd
    dup = tmp_path / "dup"
    shutil.copytree(frames_of(clip), dup)
    Image.open(dup / "00001.jpg").save(dup / "00001.png")
    refused(capsys, "--input", dup, "--mask", mask_of(clip), "--out", tmp_path / "o", match="same frame name")
    from test_hostile_io import _png_header_only
    big = tmp_path / "big"
    big.mkdir()
    _png_header_only(big / "00000.png", 15000, 15000)
    refused(capsys, "--input", big, "--mask", mask_of(clip), "--out", tmp_path / "o", match="megapixels")
    # FFmpeg's and OpenCV's own complaints do not come above the one line (capfd sees fd 2)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(3000))
    refused(capfd, "--input", junk, "--mask", mask_of(clip), "--out", tmp_path / "o", match="cannot open video")
    with open(tmp_path / "t.avi", "wb") as f:  # a few bytes of a real AVI: OpenCV's own reader prints
        v = tmp_path / "v.avi"
        w = cv2.VideoWriter(str(v), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
        for _ in range(8):
            w.write(np.full((H, W, 3), 100, np.uint8))
        w.release()
        f.write(v.read_bytes()[: v.stat().st_size // 2])
    refused(capfd, "--input", tmp_path / "t.avi", "--mask", mask_of(clip), "--out", tmp_path / "o",
            match="cannot open video")


def test_truncated_video_warns(clip, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    noise = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    for i in range(12):
        w.write(noise if i % 3 else cv2.imread(str(frames_of(clip) / "00000.jpg")))
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.6)])
    rc, _, err = run(capsys, "--input", cut, "--mask", mask_of(clip), "--out", tmp_path / "o")
    assert rc == 0 and any("container says 12" in e for e in err), err


# ----------------------------------------------------------------------------- options and weights


@pytest.mark.parametrize("option", [["--device", "banana"], ["--size", "0"], ["--stagger-updates", "0"],
                                    ["--mem-every", "0"], ["--chunk-size", "0"], ["--max-mem-frames", "1"],
                                    ["--top-k", "x"], ["--max-frame-pixels", "0"]])
def test_bad_options_are_one_line(clip, tmp_path, capsys, option):
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", tmp_path / "o", *option,
            match=option[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(clip, tmp_path, capsys):
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", tmp_path / "o",
            "--device", "cuda", match="no CUDA device")


def test_bad_checkpoints_are_one_line(clip, tmp_path, capsys):
    from s3rt.model import build_model
    state = build_model("cutie-test").state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", tmp_path / "o",
            "--checkpoint", tmp_path / "nan.pth", match=key)
    (tmp_path / "junk.pth").write_bytes(os.urandom(400))
    line = refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", tmp_path / "o",
                   "--checkpoint", tmp_path / "junk.pth", match="not a PyTorch checkpoint")
    assert "weights_only" not in line
    # a checkpoint of another preset lists its keys on one line
    torch.save(build_model("cutie-test").state_dict(), tmp_path / "other.pth")
    refused(capsys, "--input", frames_of(clip), "--mask", mask_of(clip), "--out", tmp_path / "o",
            "--checkpoint", tmp_path / "other.pth", "--preset", "s3-test", match="does not match preset")
    assert not (tmp_path / "o").exists()


def test_eval_removes_its_stale_temporaries_and_checks_the_csv_target_first(tmp_path, capsys):
    pred, gt = tmp_path / "pred" / "s", tmp_path / "gt" / "s"
    _, masks = make_clip(T, H, W, 1, seed=4)
    for d in (pred, gt):
        d.mkdir(parents=True)
        for i, m in enumerate(masks):
            write_mask(d / f"{i:05d}.png", m)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    stale = tmp_path / "pred" / f".global_results-val.csv.{p.pid}-abcd1234.tmp.csv"  # an eval killed mid-write
    stale.write_text("half")
    assert main(["eval", "--quiet", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 0
    assert not stale.exists() and (tmp_path / "pred" / "global_results-val.csv").exists()
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--csv", str(tmp_path / "file" / "r.csv")]) == 2
    out, err = capsys.readouterr()
    assert "is a file, not a folder" in err and len(err.strip().splitlines()) == 1 and "J&F" not in out


def test_memory_a_size_needs_is_said_up_front(recwarn):
    from s3rt.commands.run import _warn_memory, memory_estimate
    (ph, pw), need = memory_estimate((10000, 10000), -1, "cutie-base")
    assert (ph, pw) == (10000, 10000) and need > 100 * 2**30  # the frame went past 8 GB
    assert memory_estimate((480, 854), 480, "s3-base")[1] < 2**30
    assert memory_estimate((2160, 3840), 480, "cutie-base")[0] == (480, 853)
    _warn_memory((4000, 6000), -1, "cutie-base")
    _warn_memory((4000, 6000), 480, "cutie-base")
    assert len(recwarn) == 1 and "needs roughly 27 GiB" in str(recwarn[0].message)
