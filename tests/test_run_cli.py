"""`s3rt run` end to end, its latency summary, and its refusals (nothing written on error)."""

import numpy as np
import pytest
import torch
from PIL import Image

from s3rt.cli import main
from s3rt.io import read_mask, write_mask
from s3rt.synthetic import make_clip, write_clip

from conftest import DAVIS


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    frames, masks = make_clip(8, 64, 96, 3, seed=2)
    write_clip(root, frames, masks)
    return root


def run(*args):
    return main(["run", "--preset", "cutie-test", "--size", "-1", *map(str, args)])


def test_run_writes_every_mask_and_a_summary(clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("--input", clip / "JPEGImages", "--mask", clip / "Annotations" / "00000.png",
               "--out", out, "--overlay", "png", "--profile") == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"{i:05d}.png" for i in range(8)]
    first = read_mask(out / "00000.png")
    gt = read_mask(clip / "Annotations" / "00000.png")
    assert (first == gt).mean() > 0.99  # the given mask comes back (up to soft-aggregate rounding)
    assert len(list((out / "overlay").glob("*.png"))) == 8
    text = capsys.readouterr().out
    assert "p50" in text and "p99" in text and "encode" in text and "wrote 8 masks" in text
    assert not list(tmp_path.glob(".out.partial-*"))


def test_run_from_a_video_file(clip, tmp_path):
    import cv2
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for p in sorted((clip / "JPEGImages").glob("*.jpg")):
        writer.write(cv2.imread(str(p)))
    writer.release()
    assert run("--input", video, "--mask", clip / "Annotations" / "00000.png", "--out", tmp_path / "v") == 0
    assert len(list((tmp_path / "v").glob("*.png"))) == 8


def refuses(capsys, *args, match):
    assert run(*args) == 2
    assert match in capsys.readouterr().err


def test_bad_inputs_fail_before_writing(clip, tmp_path, capsys):
    out = tmp_path / "never"
    small = tmp_path / "small.png"
    write_mask(small, np.ones((10, 10), np.uint8))
    refuses(capsys, "--input", clip / "JPEGImages", "--mask", small, "--out", out, match="frames are 96x64")
    big_ids = tmp_path / "ids.png"
    Image.fromarray(np.full((64, 96), 300, np.uint16)).save(big_ids)
    refuses(capsys, "--input", clip / "JPEGImages", "--mask", big_ids, "--out", out, match="1..255")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    refuses(capsys, "--input", junk, "--mask", small, "--out", out, match="cannot open video")
    empty = tmp_path / "empty"
    empty.mkdir()
    refuses(capsys, "--input", empty, "--mask", small, "--out", out, match="no images")
    ckpt = tmp_path / "other.pth"
    from s3rt.model import build_model
    torch.save(build_model("cutie-test").state_dict(), ckpt)
    assert main(["run", "--preset", "cutie-small", "--checkpoint", str(ckpt), "--input", str(clip / "JPEGImages"),
                 "--mask", str(clip / "Annotations" / "00000.png"), "--out", str(out)]) == 2
    assert "does not match preset 'cutie-small'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".never.partial-*"))


@pytest.mark.slow
def test_davis_blackswan_tracks_with_the_full_preset(tmp_path):
    seq = DAVIS / "blackswan"
    if not seq.exists():
        pytest.skip(f"{seq} is absent (../shared not mounted)")
    out = tmp_path / "blackswan"
    assert main(["run", "--preset", "cutie-base", "--input", str(seq / "JPEGImages"),
                 "--mask", str(seq / "Annotations" / "00000.png"), "--out", str(out)]) == 0
    masks = sorted(out.glob("*.png"))
    assert len(masks) == 50 and read_mask(masks[-1]).shape == (480, 854)


def test_backend_plumbing_is_refused_or_taken_from_the_graph_set(clip, tmp_path, capsys, tmp_path_factory):
    """--export belongs to a backend that runs a graph set; such a backend takes its fixed options
    from the manifest and refuses others; damaged graphs and missing providers are one line."""
    import hashlib
    import json
    import shutil

    from conftest import shared_export

    exported = shared_export(tmp_path_factory, "cutie-test")
    inputs = ["--input", clip / "JPEGImages", "--mask", clip / "Annotations" / "00000.png"]
    refuses(capsys, *inputs, "--export", exported.directory, "--out", tmp_path / "a",
            match="does not run: drop --export")
    ort = ["run", "--backend", "onnxruntime", "--export", str(exported.directory), "--size", "-1",
           *map(str, inputs)]
    assert main(ort + ["--top-k", "10", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "top_k=30" in err and "top_k=10" in err and "s3rt export" in err and len(err.strip().splitlines()) == 1
    assert main(ort + ["--strict-providers", "--providers", "CUDAExecutionProvider",
                       "--out", str(tmp_path / "c")]) == 2
    assert "CUDAExecutionProvider" in capsys.readouterr().err
    assert main(ort + ["--out", str(tmp_path / "d")]) == 0  # options from the manifest
    # a truncated graph whose manifest hash was updated to match: ONNX Runtime cannot parse it
    broken = tmp_path / "broken"
    shutil.copytree(exported.directory, broken)
    data = (broken / "fusion.onnx").read_bytes()
    (broken / "fusion.onnx").write_bytes(data[: len(data) // 3])
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["graphs"]["fusion"]["sha256"] = hashlib.sha256(data[: len(data) // 3]).hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    ort[4] = str(broken)
    assert main(ort + ["--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "cannot open" in err and "fusion.onnx" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()
