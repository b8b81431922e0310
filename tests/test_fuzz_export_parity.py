"""Fuzz-style, the rest of the command line: malformed inputs thrown at `s3rt export` and `s3rt parity`.

The same promise as tests/test_fuzz_cli.py (run, eval): exit 0, or exit 2 with exactly one line
on stderr and no traceback; nothing outside the outputs changes; no temporary file is left.
Export's refusals must come before any graph is exported, so each case is quick.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from s3rt.io import write_mask
from s3rt.synthetic import make_clip, write_clip

from conftest import EXPORT_SIZE, shared_export
from test_fuzz_cli import _check, truncate  # noqa: E402  (same checks as run and eval)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _nan_checkpoint(path: Path) -> Path:
    from s3rt.model import build_model

    state = build_model("cutie-test").state_dict()
    next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(state, path)
    return path


def _good_checkpoint(path: Path) -> Path:
    from s3rt.model import build_model

    torch.save(build_model("cutie-test").state_dict(), path)
    return truncate(path, 0.5)


# ------------------------------------------------------------------------------ export cases
# Each returns the arguments after `s3rt export --preset cutie-test`, given a fresh world.
EXPORT_CASES = {
    "size not HxW": lambda w: ["--size", "abc", "--out", w / "out"],
    "size one number": lambda w: ["--size", "64", "--out", w / "out"],
    "size not a multiple": lambda w: ["--size", "65x96", "--out", w / "out"],
    "size zero": lambda w: ["--size", "0x0", "--out", w / "out"],
    "size negative": lambda w: ["--size", "-64x96", "--out", w / "out"],
    "unknown preset": lambda w: ["--preset", "banana", "--size", "64x96", "--out", w / "out"],
    "zero objects": lambda w: ["--size", "64x96", "--max-objects", "0", "--out", w / "out"],
    "1000 objects": lambda w: ["--size", "64x96", "--max-objects", "1000", "--out", w / "out"],
    "one memory frame": lambda w: ["--size", "64x96", "--max-mem-frames", "1", "--out", w / "out"],
    "top-k zero": lambda w: ["--size", "64x96", "--top-k", "0", "--out", w / "out"],
    "negative long-term": lambda w: ["--size", "64x96", "--long-term-tokens", "-5", "--out", w / "out"],
    "opset 5": lambda w: ["--size", "64x96", "--opset", "5", "--out", w / "out"],
    "missing checkpoint": lambda w: ["--size", "64x96", "--checkpoint", w / "nope.pth", "--out", w / "out"],
    "zero-byte checkpoint": lambda w: ["--size", "64x96", "--checkpoint", _write(w / "z.pth", b""),
                                       "--out", w / "out"],
    "garbage checkpoint": lambda w: ["--size", "64x96", "--checkpoint", _write(w / "g.pth", b"\x80\x04junk" * 50),
                                     "--out", w / "out"],
    "truncated checkpoint": lambda w: ["--size", "64x96", "--checkpoint", _good_checkpoint(w / "t.pth"),
                                       "--out", w / "out"],
    "NaN checkpoint": lambda w: ["--size", "64x96", "--checkpoint", _nan_checkpoint(w / "nan.pth"),
                                 "--out", w / "out"],
    "checkpoint is a folder": lambda w: ["--size", "64x96", "--checkpoint", w / "clip", "--out", w / "out"],
    "out is a file": lambda w: ["--size", "64x96", "--out", _write(w / "out", b"x")],
    "out holds other files": lambda w: ["--size", "64x96", "--out", w / "clip"],
}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_export_fuzz(name, tmp_path, capfd, monkeypatch):
    world = _world(tmp_path)
    monkeypatch.chdir(world)
    args = [str(a) for a in EXPORT_CASES[name](world)]
    preset = [] if "--preset" in args else ["--preset", "cutie-test"]
    rc, _ = _check(capfd, ["export", "--quiet", *preset, *args], world, allowed=("out",))
    assert rc == 2, name  # every case is a refusal, before any graph is exported


# ------------------------------------------------------------------------------ parity cases
def _export_copy(world: Path) -> Path:
    return world / "graphs"


def _edit_manifest(world: Path, change) -> Path:
    d = _export_copy(world)
    m = json.loads((d / "manifest.json").read_text())
    change(m)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def _truncated_graph_with_its_hash(world: Path) -> Path:
    d = _export_copy(world)
    truncate(d / "fusion.onnx", 0.3)
    return _edit_manifest(world, lambda m: m["graphs"]["fusion"].update(
        sha256=hashlib.sha256((d / "fusion.onnx").read_bytes()).hexdigest()))


def _parity(export=None, mask=None, frames=None, *extra):
    def make(w: Path):
        return ["--export", export(w) if export else _export_copy(w),
                "--input", frames(w) if frames else w / "clip" / "JPEGImages",
                "--mask", mask(w) if mask else w / "clip" / "Annotations" / "00000.png", *extra]
    return make


def _mask(w: Path, arr) -> Path:
    write_mask(w / "m.png", np.asarray(arr, np.uint8))
    return w / "m.png"


PARITY_CASES = {
    "ok": _parity(None, None, None, "--frames", "3", "--json", "{w}/out.json"),
    "export missing": _parity(lambda w: w / "nope"),
    "export is a file": _parity(lambda w: _write(w / "f", b"x")),
    "export empty": _parity(lambda w: (w / "empty").mkdir() or w / "empty"),
    "zero-byte manifest": _parity(lambda w: _write(_export_copy(w) / "manifest.json", b"").parent),
    "garbage manifest": _parity(lambda w: _write(_export_copy(w) / "manifest.json", b"{not json").parent),
    "manifest of another format": _parity(lambda w: _edit_manifest(w, lambda m: m.update(format="x"))),
    "manifest without a spec": _parity(lambda w: _edit_manifest(w, lambda m: m.pop("spec"))),
    "manifest with a bad spec": _parity(lambda w: _edit_manifest(w, lambda m: m["spec"].update(top_k=0))),
    "edited graph": _parity(lambda w: truncate(_export_copy(w) / "decoder.onnx", 0.9).parent),
    "truncated graph, hash updated": _parity(_truncated_graph_with_its_hash),
    "missing graph": _parity(lambda w: (_export_copy(w) / "readout.onnx").unlink() or _export_copy(w)),
    "missing frames": _parity(None, None, lambda w: w / "nope"),
    "zero-byte frame": _parity(None, None, lambda w: _write(w / "clip" / "JPEGImages" / "00001.jpg", b"").parent),
    "mask of another size": _parity(None, lambda w: _mask(w, np.ones((10, 10)))),
    "empty mask": _parity(None, lambda w: _mask(w, np.zeros(EXPORT_SIZE))),
    "too many objects": _parity(None, lambda w: _mask(w, np.arange(EXPORT_SIZE[0] * EXPORT_SIZE[1]).reshape(
        EXPORT_SIZE) % 5)),
    "jpeg mask": _parity(None, lambda w: _write(w / "m.jpg", (w / "clip" / "JPEGImages" / "00000.jpg").read_bytes())),
    "zero frames": _parity(None, None, None, "--frames", "0"),
    "negative tolerance": _parity(None, None, None, "--tolerance", "-1"),
    "garbage checkpoint": _parity(None, None, None, "--checkpoint", "{w}/g.pth"),
    "gt folder empty": _parity(None, None, None, "--gt", "{w}/emptygt"),
    "json into a folder": _parity(None, None, None, "--frames", "2", "--json", "{w}/clip"),
}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return shared_export(tmp_path_factory, "cutie-test").directory


def _world(tmp_path: Path, graphs: Path | None = None) -> Path:
    world = tmp_path / "w"
    world.mkdir()
    frames, masks = make_clip(4, *EXPORT_SIZE, 2, seed=3)
    write_clip(world / "clip", frames, masks)
    if graphs is not None:
        shutil.copytree(graphs, world / "graphs")
    (world / "g.pth").write_bytes(b"\x80\x04junk" * 50)
    (world / "emptygt").mkdir()
    return world


@pytest.mark.parametrize("name", list(PARITY_CASES))
def test_parity_fuzz(name, graphs, tmp_path, capfd, monkeypatch):
    world = _world(tmp_path, graphs)
    monkeypatch.chdir(world)
    args = [str(a).replace("{w}", str(world)) for a in PARITY_CASES[name](world)]
    rc, _ = _check(capfd, ["parity", "--quiet", *args], world, allowed=("out.json",))
    assert rc == (0 if name == "ok" else 2), name
