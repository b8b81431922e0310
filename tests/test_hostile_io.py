"""Hostile inputs to the I/O layer and the checkpoint loader (issue 13): each is refused with
one clear error or handled correctly. Every input is made here, small."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from s3rt.io import InputError, open_frames, read_mask, write_mask
from s3rt.io.atomic import atomic_write, make_temp_dir, remove_stale_temps
from s3rt.io.masks import check_mask_array, fit_mask, list_masks, looks_smoothed, read_mask_noted
from s3rt.io.overlay import VideoWriteError, VideoWriter, count_video_frames

H, W = 48, 64


def _disc(h=H, w=W, value=255, aa=False) -> np.ndarray:
    img = np.zeros((h, w), np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 3, value, -1, cv2.LINE_AA if aa else cv2.LINE_8)
    return img


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------- masks


def test_jpeg_mask_is_refused(tmp_path):
    p = tmp_path / "mask.jpg"
    Image.fromarray(_disc()).save(p, quality=90)
    assert len(np.unique(np.array(Image.open(p)))) > 10  # the artefacts that became 67 objects
    with pytest.raises(InputError, match="JPEG.*lossy"):
        read_mask(p)
    # a JPEG under a .png name is still a JPEG
    q = tmp_path / "mask.png"
    q.write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="JPEG"):
        read_mask(q)


def test_smoothed_grey_masks_are_refused(tmp_path):
    aa = tmp_path / "aa.png"
    Image.fromarray(_disc(aa=True)).save(aa)
    with pytest.raises(InputError, match="smoothed"):
        read_mask(aa)
    blurred = tmp_path / "blur.png"
    Image.fromarray(cv2.GaussianBlur(_disc(), (5, 5), 1.5)).save(blurred)
    with pytest.raises(InputError, match="smoothed"):
        read_mask(blurred)
    # a JPEG decoded and saved as PNG
    buf = io.BytesIO()
    Image.fromarray(_disc()).save(buf, format="JPEG", quality=85)
    rejpeg = tmp_path / "rejpeg.png"
    Image.open(buf).convert("L").save(rejpeg)
    with pytest.raises(InputError, match="smoothed"):
        read_mask(rejpeg)


def test_real_grey_id_masks_still_read(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    ids[2:20, 2:20], ids[25:40, 30:60], ids[5:15, 40:50], ids[42:46, 5:9] = 1, 2, 3, 4
    p = tmp_path / "ids.png"
    Image.fromarray(ids).save(p)  # 'L'
    assert (read_mask(p) == ids).all()
    assert looks_smoothed(ids) is None
    # thin objects that touch each other are still ids
    stripes = np.zeros((H, W), np.uint8)
    for i in range(1, 6):
        stripes[:, 10 * i:10 * i + 2] = i
    assert looks_smoothed(stripes) is None


def test_grey_0_255_mask_is_one_object_and_said_so(tmp_path):
    p = tmp_path / "m.png"
    Image.fromarray(_disc()).save(p)
    arr, note = read_mask_noted(p)
    assert set(np.unique(arr)) == {0, 1}
    assert note and "one object" in note and "m.png" in note
    pal = tmp_path / "p.png"
    write_mask(pal, (_disc() > 0).astype(np.uint8))
    assert read_mask_noted(pal)[1] is None


def test_duplicate_mask_stems_are_refused(tmp_path):
    write_mask(tmp_path / "00001.png", np.ones((4, 4), np.uint8))
    Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / "00001.PNG", format="PNG")
    with pytest.raises(InputError, match="same frame"):
        list_masks(tmp_path)


def test_check_mask_array():
    base = np.zeros((6, 8), np.int64)
    base[1:3, 2:5] = 7
    flipped = base[::-1, ::-1]  # negative strides
    out = check_mask_array(flipped, (6, 8))
    assert out.dtype == np.uint8 and out.flags.c_contiguous and (out == flipped).all()
    assert check_mask_array(torch.from_numpy(base.copy())).dtype == np.uint8
    assert check_mask_array(base > 0).max() == 1
    with pytest.raises(InputError, match="integer"):
        check_mask_array(base.astype(np.float32))
    with pytest.raises(InputError, match="1..255"):
        check_mask_array(base + 300)
    with pytest.raises(InputError, match="1..255"):
        check_mask_array(base - 1)
    with pytest.raises(InputError, match="empty"):
        check_mask_array(np.zeros((0, 0), np.uint8))
    with pytest.raises(InputError, match="HxW"):
        check_mask_array(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(InputError, match="8x6 but the frame is 9x6"):
        check_mask_array(base, (6, 9))


def test_fit_mask_resizes_the_same_aspect_ratio_only():
    m = np.zeros((480, 853), np.uint8)  # Cutie's judo example: frames are 854x480
    m[100:200, 300:400] = 3
    fitted, note = fit_mask(m, (480, 854), name="mask 00005.png")
    assert fitted.shape == (480, 854) and set(np.unique(fitted)) == {0, 3}
    assert "00005.png" in note and "853x480" in note and "nearest" in note
    same, none = fit_mask(m, (480, 853))
    assert none is None and same.shape == (480, 853)
    half, note = fit_mask(np.ones((240, 427), np.uint8), (480, 854))  # half size
    assert half.shape == (480, 854) and note
    with pytest.raises(InputError, match="aspect ratio"):
        fit_mask(np.zeros((480, 640), np.uint8), (480, 854))
    with pytest.raises(InputError, match="aspect ratio"):
        fit_mask(np.zeros((480, 844), np.uint8), (480, 854))  # a crop, not a rounding
    with pytest.raises(InputError, match="over 4x off"):
        fit_mask(np.ones((1, 1), np.uint8), (32, 48))


# ----------------------------------------------------------------------------- frames


def test_16bit_png_frames_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(H * W, dtype=np.float64).reshape(H, W) / (H * W - 1) * 65535).astype(np.uint16)
    p = tmp_path / "00000.png"
    Image.fromarray(ramp).save(p)
    assert Image.open(p).mode.startswith("I")
    _, frames = open_frames(tmp_path).read_all()
    f = frames[0]
    assert f.dtype == np.uint8 and f.shape == (H, W, 3)
    want = np.rint(ramp / 257.0)
    assert np.abs(f[..., 0].astype(int) - want).max() <= 1
    assert (f[..., 0] == 255).mean() < 0.01  # today: 99.99 % white


def test_duplicate_frame_stems_are_refused(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "00000.jpg")
    Image.fromarray(img).save(tmp_path / "00001.jpg")
    Image.fromarray(img).save(tmp_path / "00001.png")
    with pytest.raises(InputError, match="00001.jpg and 00001.png.*same frame name"):
        open_frames(tmp_path)


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header says w x h, with a tiny (broken) image body: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_huge_frames_are_refused_from_their_header(tmp_path, monkeypatch):
    big = tmp_path / "big"
    big.mkdir()
    _png_header_only(big / "00000.png", 15000, 15000)  # 225 megapixels
    with pytest.raises(InputError, match=r"15000x15000 \(225.0 megapixels.*limit of 40,000,000 pixels"):
        open_frames(big)
    _png_header_only(tmp_path / "mid.png", 4000, 3000)
    with pytest.raises(InputError, match="limit of 10,000,000 pixels"):
        open_frames(tmp_path / "mid.png", max_pixels=10_000_000)
    monkeypatch.setenv("S3RT_MAX_FRAME_PIXELS", "1000")
    with pytest.raises(InputError, match="S3RT_MAX_FRAME_PIXELS"):
        open_frames(tmp_path / "mid.png")


def _avi(path: Path, n: int = 8) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    rng = np.random.default_rng(0)
    for _ in range(n):
        w.write(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    w.release()
    return path


def test_truncated_video_warns(tmp_path):
    full = _avi(tmp_path / "full.avi")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    src = open_frames(cut)
    assert src.num_frames == 8
    with pytest.warns(UserWarning, match=r"ended after \d frames, but its container says 8"):
        names, _ = src.read_all()
    assert 0 < len(names) < 8


def test_ffmpeg_says_nothing_itself(tmp_path, capfd):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(3000))
    with pytest.raises(InputError, match="cannot open video"):
        open_frames(junk)
    assert capfd.readouterr().err == ""


# ----------------------------------------------------------------------------- outputs


def test_video_writer_counts_what_it_wrote(tmp_path, monkeypatch):
    overlay_mod = sys.modules["s3rt.io.overlay"]  # (s3rt.io.overlay is also a function's name)
    path = tmp_path / "v.avi"
    monkeypatch.setattr(overlay_mod, "count_video_frames", lambda p: 3)
    with pytest.raises(VideoWriteError, match="3 of its 5 frames"):
        with VideoWriter(path, fps=5) as vw:
            for _ in range(5):
                vw.write(np.zeros((16, 16, 3), np.uint8))
    assert not path.exists() and not list(tmp_path.iterdir())


_FULL_DISK_VIDEO = """
import resource, signal, sys, numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from s3rt.io.overlay import VideoWriter, VideoWriteError
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))  # every file stops at 20 kB: a full disk
rng = np.random.default_rng(0)
try:
    with VideoWriter(sys.argv[1], fps=10) as vw:
        for _ in range(30):
            vw.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
except VideoWriteError as e:
    print("REFUSED", e)
"""


def test_full_disk_video_is_not_kept(tmp_path):
    path = tmp_path / "overlay.avi"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_VIDEO, str(path)], capture_output=True, text=True, timeout=60)
    assert "REFUSED" in r.stdout, r.stdout + r.stderr
    assert not path.exists() and not list(tmp_path.iterdir())


def test_count_video_frames(tmp_path):
    assert count_video_frames(_avi(tmp_path / "a.avi", 5)) == 5
    assert count_video_frames(tmp_path / "missing.avi") == 0


def test_stale_temporary_files_are_removed(tmp_path):
    target = tmp_path / "out"
    dead, live = _dead_pid(), os.getpid()
    stale_dir = tmp_path / f".out.partial-{dead}-abcd1234"
    stale_dir.mkdir()
    (stale_dir / "00000.png").write_bytes(b"x")
    stale_file = tmp_path / f".out.{dead}-a1b2c3d4.tmp.csv"
    stale_file.write_text("x")
    live_dir = tmp_path / f".out.partial-{live}-abcd1234"
    live_dir.mkdir()
    legacy = tmp_path / ".out.partial-zyxw9876"
    legacy.mkdir()
    os.utime(legacy, (0, 0))
    recent_legacy = tmp_path / ".out.partial-qrst5432"
    recent_legacy.mkdir()
    others = [tmp_path / ".out.notes", tmp_path / ".other.partial-1-abcd1234", tmp_path / "out.partial-1-abcd1234"]
    for p in others:
        p.mkdir()
    removed = remove_stale_temps(target)
    assert sorted(removed) == sorted([stale_dir, stale_file, legacy])
    assert live_dir.exists() and recent_legacy.exists() and all(p.exists() for p in others)
    # a replace killed between its two renames: the earlier results come back
    old = tmp_path / f".out.old-{dead}-abcd1234"
    old.mkdir()
    (old / "00000.png").write_bytes(b"old")
    remove_stale_temps(target)
    assert (target / "00000.png").read_bytes() == b"old" and not old.exists()


def test_temporary_names_carry_the_pid_and_folders_normal_modes(tmp_path):
    with atomic_write(tmp_path / "a.txt") as tmp:
        assert tmp.name.startswith(f".a.txt.{os.getpid()}-")
        tmp.write_text("x")
    old = os.umask(0o022)
    try:
        d = make_temp_dir(tmp_path / "out")
    finally:
        os.umask(old)
    assert d.name.startswith(f".out.partial-{os.getpid()}-")
    assert d.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0o700


# ----------------------------------------------------------------------------- checkpoints


def test_non_finite_checkpoint_is_refused_naming_the_tensors(tmp_path):
    from s3rt.model import CheckpointMismatchError, build_model
    state = build_model("cutie-test").state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    state[name] = state[name].clone()
    state[name].view(-1)[:3] = float("nan")
    state[name].view(-1)[3] = float("inf")
    p = tmp_path / "nan.pth"
    torch.save(state, p)
    with pytest.raises(CheckpointMismatchError, match=rf"NaN or infinite values in 1 tensor\(s\): {name} \(4 of"):
        build_model("cutie-test", p)


@pytest.mark.parametrize("content", [os.urandom(500), b"", b"hello\n", b"PK\x03\x04" + b"\0" * 100])
def test_garbage_checkpoint_is_one_line_without_unsafe_advice(tmp_path, content):
    from s3rt.model import CheckpointMismatchError, build_model
    p = tmp_path / "junk.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointMismatchError) as info:
        build_model("cutie-test", p)
    text = str(info.value)
    assert "\n" not in text and "weights_only" not in text and str(p) in text
