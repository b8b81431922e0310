"""`s3rt parity` end to end: table, JSON, exit codes (0 pass, 1 tolerance exceeded, 2 bad input)."""

import json
import shutil

import numpy as np
import pytest

from s3rt.cli import main
from s3rt.io import write_mask
from s3rt.synthetic import make_clip, write_clip

from conftest import EXPORT_SIZE as SIZE, shared_export  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory, "cutie-test")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    frames, masks = make_clip(12, *SIZE, num_objects=3, seed=0)
    write_clip(d, frames, masks)
    return d


def args(exported, clip_dir, *extra):
    return ["parity", "--export", str(exported.directory), "--input", str(clip_dir / "JPEGImages"),
            "--mask", str(clip_dir / "Annotations" / "00000.png"), "--quiet", *extra]


def test_parity_passes_and_writes_json(exported, clip_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(args(exported, clip_dir, "--gt", str(clip_dir / "Annotations"), "--json", str(out))) == 0
    text = capsys.readouterr().out
    assert "per graph" in text and "per stream" in text and "result: PASS" in text and "J&F" in text
    for graph in ("encoder", "readout", "fusion", "decoder", "mask_encoder"):
        assert graph in text
    report = json.loads(out.read_text())
    assert report["passed"] and report["stream"]["frames"] == 12 and report["stream"]["max_abs_prob"] <= 1e-4
    assert report["preset"] == "cutie-test" and report["objects"] == [1, 3]
    assert set(report["jf"]) == {"torch", "onnxruntime"}
    assert set(report["speed"]) == {"torch", "onnxruntime"}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # nothing else (atomic write)


def test_parity_fails_with_exit_1_on_a_too_tight_tolerance(exported, clip_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(args(exported, clip_dir, "--frames", "4", "--tolerance", "1e-12", "--json", str(out))) == 1
    text = capsys.readouterr().out
    assert "result: FAIL" in text
    report = json.loads(out.read_text())
    assert not report["passed"] and report["failures"] and report["stream"]["frames"] == 4


def test_bad_inputs_are_refused_before_any_work(exported, clip_dir, tmp_path, capsys):
    # a graph edited after export
    d = tmp_path / "edited"
    shutil.copytree(exported.directory, d)
    with open(d / "decoder.onnx", "ab") as f:
        f.write(b"\0")
    assert main(["parity", "--export", str(d), "--input", str(clip_dir / "JPEGImages"),
                 "--mask", str(clip_dir / "Annotations" / "00000.png")]) == 2
    assert "decoder.onnx does not match the manifest" in capsys.readouterr().err
    # a checkpoint other than the export's (random weights)
    import torch
    from s3rt.model import build_model

    ckpt = tmp_path / "w.pth"
    torch.save(build_model("cutie-test").state_dict(), ckpt)
    assert main(args(exported, clip_dir, "--checkpoint", str(ckpt))) == 2
    assert "not from checkpoint" in capsys.readouterr().err
    # frames of another resolution, not resized to the export's
    big = tmp_path / "big"
    frames, masks = make_clip(3, 96, 128, num_objects=3, seed=0)
    write_clip(big, frames, masks)
    assert main(["parity", "--export", str(exported.directory), "--input", str(big / "JPEGImages"),
                 "--mask", str(big / "Annotations" / "00000.png")]) == 2
    assert "s3rt export --preset cutie-test --size 96x128" in capsys.readouterr().err
    # more objects than --max-objects
    four = np.zeros(SIZE, np.uint8)
    for k in range(4):
        four[2:10, 2 + 20 * k:12 + 20 * k] = k + 1
    write_mask(tmp_path / "four.png", four)
    assert main(["parity", "--export", str(exported.directory), "--input", str(clip_dir / "JPEGImages"),
                 "--mask", str(tmp_path / "four.png")]) == 2
    assert "--max-objects 4" in capsys.readouterr().err
