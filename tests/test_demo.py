"""`s3rt demo`: no arguments needed; a tiny run writes the overlay, parity and speed tables."""

import json
import shutil

from s3rt.cli import main
from s3rt.export import export_graphs

SIZE = (64, 96)


def test_demo_writes_everything(tmp_path_factory, tmp_path, capsys):
    # With --random-weights, reuse the session's s3-test export (the demo skips an export made with
    # the same options and weights).
    shared = tmp_path_factory.getbasetemp() / f"export-s3-test-{SIZE[0]}x{SIZE[1]}"
    export_graphs("s3-test", shared, size=SIZE, max_objects=3, progress=False, reuse=True)
    out = tmp_path / "demo"
    shutil.copytree(shared, out / "export")
    assert main(["demo", "--out", str(out), "--size", "64x96", "--frames", "8", "--quiet", "--random-weights"]) == 0
    text = capsys.readouterr().out
    assert "random weights, seed 0" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("demo results in") and str(out.resolve()) in last
    assert "result: PASS" in text and "fps" in text
    assert (out / "overlay.mp4").is_file() or any((out / "overlay").glob("*.png"))
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["stream"]["frames"] == 8 and report["jf"]
    assert "masks" not in report
    speed = (out / "speed.txt").read_text()
    assert "encoder" in speed and "torch p50" in speed and "onnxruntime p99" in speed
    assert "per stream" in (out / "parity.txt").read_text()


def test_demo_rejects_bad_options(tmp_path):
    assert main(["demo", "--out", str(tmp_path / "d"), "--size", "64", "--quiet"]) == 2
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "1", "--quiet"]) == 2


def test_demo_uses_the_bundled_checkpoint_by_default(tmp_path, capsys):
    import pytest

    from s3rt.model import bundled_presets

    if "s3-test" not in bundled_presets():
        pytest.skip("no bundled s3-test checkpoint in this checkout")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "64x96", "--frames", "6", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "s3-test (bundled checkpoint)" in text and "result: PASS" in text
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["checkpoint"].startswith("sha256:") and manifest["checkpoint_file"] == "s3-test.pth"
