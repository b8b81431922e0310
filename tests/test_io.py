"""Frames, masks, overlays and atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s3rt.io import (
    InputError,
    InputNotFoundError,
    VideoWriter,
    atomic_write,
    davis_palette,
    open_frames,
    overlay,
    read_mask,
    write_mask,
    write_overlay_pngs,
    write_overlay_video,
)
from s3rt.io.overlay import video_codecs

from conftest import DAVIS as DAVIS_DATA  # noqa: E402


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".tmp" in p.name]


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with atomic_write(target, "w") as f:
        f.write("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("two")
            raise RuntimeError("boom")
    assert target.read_text() == "one"
    with atomic_write(target) as tmp:  # path mode keeps the extension
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp != target
        tmp.write_text("three")
    assert target.read_text() == "three"
    assert _no_temp_files(tmp_path)
    assert (target.stat().st_mode & 0o777) != 0o600  # not mkstemp's private mode
    with pytest.raises(ValueError):
        with atomic_write(target, "a"):
            pass


# ----------------------------------------------------------------------------- masks


def test_davis_palette():
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert pal[255].tolist() == [224, 224, 192]  # the VOC void colour


def test_palette_mask_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, (37, 53)).astype(np.uint8)
    ids[0, 0] = 255
    p = write_mask(tmp_path / "m.png", ids)
    with Image.open(p) as im:
        assert im.mode == "P"
        assert im.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(read_mask(p), ids)
    write_mask(tmp_path / "b.png", ids > 2)  # bool -> 0/1
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), (ids > 2).astype(np.uint8))
    write_mask(tmp_path / "i.png", ids.astype(np.int64))
    np.testing.assert_array_equal(read_mask(tmp_path / "i.png"), ids)
    assert _no_temp_files(tmp_path)


def test_grey_masks(tmp_path):
    g = np.zeros((10, 12), np.uint8)
    g[2:6, 3:9] = 255
    Image.fromarray(g).save(tmp_path / "g.png")  # mode L, 0/255: DAVIS-2016 single object
    np.testing.assert_array_equal(read_mask(tmp_path / "g.png"), (g == 255).astype(np.uint8))
    np.testing.assert_array_equal(read_mask(tmp_path / "g.png", grey_255_as_object=False), g)
    ids = g.copy()
    ids[0, 0] = 2  # other values: grey values are ids, 255 kept
    Image.fromarray(ids).save(tmp_path / "ids.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "ids.png"), ids)
    # palette masks are never remapped, even with only 0/255
    write_mask(tmp_path / "p.png", g)
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), g)


def test_mask_errors(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match=r"RGB image.*palette \('P'\) or grey \('L'\)"):
        read_mask(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError, match="mask not found"):
        read_mask(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read mask"):
        read_mask(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="HxW"):
        write_mask(tmp_path / "x.png", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        write_mask(tmp_path / "x.png", np.full((2, 3), 300))
    with pytest.raises(ValueError, match="integers"):
        write_mask(tmp_path / "x.png", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=".png"):
        write_mask(tmp_path / "x.jpg", np.zeros((2, 3), np.uint8))
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- frames


def _frames(t=4, h=24, w=32):
    """Smooth colour ramps (distinct per frame), so JPEG keeps them close."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([xx * 200 // w + 10 * i, yy * 200 // h, np.full_like(xx, 30 * i + 20)], -1)
                     for i in range(t)]).astype(np.uint8)


def test_image_folder(tmp_path):
    frames = _frames()
    names = ["2", "10", "1", "30"]  # natural order: 1, 2, 10, 30
    for n, f in zip(names, frames):
        Image.fromarray(f).save(tmp_path / f"{n}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_frames(tmp_path)
    assert len(src) == 4 and src.size == (24, 32) and src.fps is None
    got_names, got = src.read_all()
    assert got_names == ["1", "2", "10", "30"]
    order = [names.index(n) for n in got_names]
    np.testing.assert_array_equal(got, frames[order])
    assert [n for n, _ in src] == got_names  # re-iterable
    assert open_frames(tmp_path, fps=12.5).fps == 12.5
    single = open_frames(tmp_path / "10.png")
    assert len(single) == 1


def test_davis_layouts(tmp_path):
    frames = _frames(3)
    seq = tmp_path / "ds" / "JPEGImages" / "480p" / "cows"
    seq.mkdir(parents=True)
    (tmp_path / "ds" / "JPEGImages" / "480p" / "dogs").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(seq / f"{i:05d}.jpg", quality=95)
    src = open_frames(tmp_path / "ds", sequence="cows")
    assert len(src) == 3 and src.path == seq
    with pytest.raises(InputError, match=r"dataset root with 2 sequences \(cows, dogs\)"):
        open_frames(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="'birds' not found"):
        open_frames(tmp_path / "ds", sequence="birds")
    # <root>/<seq>/JPEGImages, as in shared/data/davis
    alt = tmp_path / "alt" / "cows" / "JPEGImages"
    alt.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(alt / f"{i:05d}.jpg")
    assert len(open_frames(tmp_path / "alt" / "cows")) == 3
    assert len(open_frames(tmp_path / "alt", sequence="cows")) == 3
    _, got = open_frames(alt).read_all()
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 4  # JPEG


def test_frame_errors(tmp_path):
    with pytest.raises(InputNotFoundError, match="does not exist"):
        open_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        open_frames(tmp_path / "empty")
    (tmp_path / "bad.mp4").write_text("this is not a video")
    with pytest.raises(InputError, match="video"):
        open_frames(tmp_path / "bad.mp4")
    (tmp_path / "zero.avi").write_bytes(b"")
    with pytest.raises(InputError, match="video"):
        open_frames(tmp_path / "zero.avi")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(mixed / "1.png")
    with pytest.raises(InputError, match="same size"):
        open_frames(mixed).read_all()


def _video_path(tmp_path: Path, stem: str) -> Path:
    """.mp4 when this OpenCV can encode mp4v, else .avi (MJPG)."""
    if video_codecs(".mp4"):
        return tmp_path / f"{stem}.mp4"
    assert video_codecs(".avi"), "OpenCV can encode neither mp4v nor MJPG"
    return tmp_path / f"{stem}.avi"


def test_video_round_trip(tmp_path):
    t, h, w = 6, 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([np.stack([(xx * 4 + 20 * i) % 256, yy * 5, np.full_like(xx, 40 * i)], -1)
                       for i in range(t)]).astype(np.uint8)
    path = _video_path(tmp_path, "clip")
    with VideoWriter(path, fps=10) as vw:
        for f in frames:
            vw.write(f)
    assert path.is_file() and _no_temp_files(tmp_path)
    src = open_frames(path)
    assert src.size == (h, w) and src.fps == pytest.approx(10)
    names, got = src.read_all()
    assert names[:2] == ["00000", "00001"] and got.shape == frames.shape
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 12  # lossy codec, RGB order kept
    # channel order: a red frame stays red
    red = np.zeros((t, h, w, 3), np.uint8)
    red[..., 0] = 200
    p2 = tmp_path / "red.avi"
    with VideoWriter(p2, fps=5) as vw:
        for f in red:
            vw.write(f)
    _, got = open_frames(p2).read_all()
    assert got[..., 0].mean() > 150 and got[..., 2].mean() < 50


def test_video_writer_failure_leaves_nothing(tmp_path):
    path = tmp_path / "fail.avi"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, fps=5) as vw:
            vw.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert not path.exists() and _no_temp_files(tmp_path)
    with pytest.raises(ValueError, match="extension"):
        VideoWriter(tmp_path / "x.gifx")
    with pytest.raises(ValueError, match="the video is"):
        with VideoWriter(path, fps=5) as vw:
            vw.write(np.zeros((16, 16, 3), np.uint8))
            vw.write(np.zeros((16, 18, 3), np.uint8))
    assert not path.exists()


# ----------------------------------------------------------------------------- overlays


def test_overlay_colours(tmp_path):
    frame = np.full((20, 30, 3), 100, np.uint8)
    ids = np.zeros((20, 30), np.uint8)
    ids[5:15, 5:15] = 1
    ids[5:15, 18:28] = 2
    out = overlay(frame, ids, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[10, 10], [114, 50, 50])  # (100 + 128) / 2, 100 / 2
    np.testing.assert_array_equal(out[5, 10], [128, 0, 0])  # outline in the solid colour
    np.testing.assert_array_equal(out[10, 22], [50, 114, 50])
    with pytest.raises(ValueError, match="mask is"):
        overlay(frame, ids[:10])

    written = write_overlay_pngs(tmp_path / "png", [frame, frame], [ids, ids], names=["a", "b"])
    assert [p.name for p in written] == ["a.png", "b.png"]
    np.testing.assert_array_equal(np.array(Image.open(written[0])), out)
    path = write_overlay_video(_video_path(tmp_path, "ov"), [frame] * 3, [ids] * 3, fps=5)
    assert len(open_frames(path).read_all()[0]) == 3
    with pytest.raises(ValueError, match="differ in length"):
        write_overlay_pngs(tmp_path / "png2", [frame, frame], [ids])


@pytest.mark.skipif(not (DAVIS_DATA / "blackswan").is_dir(), reason=f"no DAVIS sample data at {DAVIS_DATA}")
def test_real_davis_sequence():
    src = open_frames(DAVIS_DATA / "blackswan")
    assert len(src) == 50 and src.size == (480, 854)
    name, frame = next(iter(src))
    assert name == "00000" and frame.shape == (480, 854, 3) and frame.dtype == np.uint8
    m = read_mask(DAVIS_DATA / "blackswan" / "Annotations" / "00000.png")
    assert m.shape == (480, 854) and set(np.unique(m)) == {0, 1}
    m2 = read_mask(DAVIS_DATA / "bmx-trees-first4" / "Annotations" / "00000.png")
    assert set(np.unique(m2)) == {0, 1, 2}
