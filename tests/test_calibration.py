"""s3rt calibrate: FP16 and INT8 graph sets from the shared small FP32 export (random weights:
these tests check the pipeline, not accuracy), their manifests, ONNX Runtime runs of both in
the tracker, the recording of calibration inputs, and each refusal."""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from conftest import EXPORT_SIZE, shared_export  # noqa: E402
from s3rt.calibration import (CalibrationClip, CalibrationError, CalibrationOptions, calibrate,  # noqa: E402
                              min_frames, record)
from s3rt.cli import main as cli  # noqa: E402
from s3rt.graphs import GRAPHS, load_manifest  # noqa: E402
from s3rt.synthetic import make_clip, write_clip  # noqa: E402

H, W = EXPORT_SIZE
FRAMES = min_frames(5, 5)  # 22: the memory fills and one more frame reads it
FAST = dict(size=-1, max_samples=6, method="minmax")


def _clip(seed=3, frames=FRAMES, size=(H, W)):
    f, m = make_clip(frames, size[0], size[1], num_objects=2, seed=seed)
    return CalibrationClip(f"synthetic-{seed}", f, m[0], "test")


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return shared_export(tmp_path_factory, "cutie-test").directory


@pytest.fixture(scope="module")
def sets(fp32, tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrated")
    clip = _clip()
    fp16 = calibrate(fp32, root / "fp16", CalibrationOptions(precision="fp16", **FAST), clips=[clip], progress=False,
                     log=lambda *a: None)
    int8 = calibrate(fp32, root / "int8", CalibrationOptions(precision="int8", **FAST), clips=[clip], progress=False,
                     log=lambda *a: None)
    return {"fp16": fp16, "int8": int8}


def test_recording_holds_memory_frames_and_full_memory(fp32):
    rec = record(fp32, [_clip(frames=FRAMES + 4)], size=-1, max_samples=100)
    s = rec.summary()
    assert set(s) == set(GRAPHS)
    assert s["mask_encoder"]["memory_frames"] == s["mask_encoder"]["samples"] >= 5  # 0, 5, 10, 15, 20, 25
    assert s["readout"]["full_memory"] > 0 and s["encoder"]["full_memory"] > 0  # later frames read a full memory
    assert s["mask_encoder"]["first_frames"] == 1
    enc = rec.samples["encoder"][0]
    assert enc.inputs["image"].shape == (1, 3, H, W) and enc.inputs["image"].dtype == np.float32
    assert set(enc.outputs) >= {"key", "f16"}
    assert rec.samples["readout"][-1].inputs["mem_valid"].all()


def test_fp16_manifest(sets, fp32):
    m = sets["fp16"]
    src = load_manifest(fp32)
    assert m.spec == src.spec and m.checkpoint == src.checkpoint and m.seed == src.seed
    assert m.precisions == {g: "fp16" for g in GRAPHS}
    assert m.derived_from["manifest_sha256"] and m.derived_from["precisions"] == {g: "fp32" for g in GRAPHS}
    cal = m.calibration
    assert cal["precision"] == "fp16" and cal["tools"]["onnxruntime"] and cal["fp16"]["keep_io_types"]
    assert cal["calibration_set"]["frames"] == FRAMES and len(cal["calibration_set"]["sha256"]) == 64
    kept = {g: set(e.kept_fp32) for g, e in m.graphs.items()}
    assert {"gru", "prediction"} <= kept["decoder"]
    assert {"gru", "summarizer"} <= kept["mask_encoder"]
    assert {"normalization", "softmax", "aggregate"} <= kept["fusion"]
    assert "softmax" in kept["readout"]
    for g, e in m.graphs.items():  # FP32 at the boundaries: the same I/O as the FP32 set
        assert e.inputs == src.graphs[g].inputs and e.outputs == src.graphs[g].outputs
        assert e.converter and all(a["finite"] and a["max_rel"] < 0.02 for a in e.accuracy.values()), (g, e.accuracy)
    model = onnx.load(str(m.graph_path("decoder")))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
    assert set(types.values()) == {onnx.TensorProto.FLOAT}
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    pred = [n for n in model.graph.node if n.op_type == "Conv" and any("mask_decoder.pred." in i for i in n.input)]
    assert pred and all(i.data_type == onnx.TensorProto.FLOAT for i in model.graph.initializer
                        if i.name in pred[0].input)  # the prediction conv stays FP32
    # written to disk as JSON and read back like any graph set
    raw = json.loads((m.directory / "manifest.json").read_text())
    assert raw["graphs"]["decoder"]["kept_fp32"]["gru"] and raw["derived_from"]["directory"]


def test_int8_manifest_and_qdq(sets):
    m = sets["int8"]
    assert m.precisions == {"encoder": "int8", "readout": "fp16", "fusion": "fp16", "decoder": "fp16",
                            "mask_encoder": "int8"}
    cal = m.calibration
    assert cal["int8"]["method"] == "minmax" and cal["int8"]["graphs"] == ["encoder", "mask_encoder"]
    for g in ("encoder", "mask_encoder"):
        q = m.graphs[g].quantized
        assert q["nodes"] > 0 and q["symmetric"] and q["zero_point_types"] == ["int8"]
        assert q["per_channel_weights"] > 0 and q["int8_weights"] == q["nodes"]
        assert all(a["finite"] and a["rel_l2"] < 0.2 for a in m.graphs[g].accuracy.values())
    assert set(m.graphs["mask_encoder"].kept_fp32) >= {"gru", "summarizer"}
    model = onnx.load(str(m.graph_path("mask_encoder")))
    dq_inputs = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    gru = [n for n in model.graph.node if n.op_type == "Conv" and any("sensory_update" in i for i in n.input)]
    assert gru and not any(i in dq_inputs or i.endswith("_DequantizeLinear_Output") for n in gru for i in n.input)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_onnxruntime_tracks_with_reduced_precision(sets, fp32, precision):
    import torch

    from s3rt import Tracker

    frames, masks = make_clip(8, H, W, num_objects=2, seed=11)
    ref = Tracker(backend="onnxruntime", graphs=fp32, size=-1)
    low = Tracker(backend="onnxruntime", graphs=sets[precision].directory, size=-1)
    assert precision in low.backend.describe()
    for i, f in enumerate(frames):
        a = ref.step(f, masks[0] if i == 0 else None)
        b = low.step(f, masks[0] if i == 0 else None)
        assert torch.isfinite(b.prob).all()
        assert float((a.prob - b.prob).abs().max()) < (0.05 if precision == "fp16" else 0.5)


def test_cli_writes_a_set_and_refuses_bad_input(fp32, tmp_path, capsys):
    clip_dir = tmp_path / "clip"
    f, m = make_clip(FRAMES, H, W, num_objects=2, seed=5)
    write_clip(clip_dir, f, m)
    out = tmp_path / "out"
    assert cli(["calibrate", "--export", str(fp32), "--precision", "int8", "--calib", str(clip_dir), "--size", "-1",
                "--max-samples", "4", "--method", "minmax", "--other-precision", "fp32", "--quiet",
                "--out", str(out)]) == 0
    m2 = load_manifest(out)
    assert m2.precisions["readout"] == "fp32" and m2.calibration["calibration_set"]["clips"][0]["name"] == "clip"
    capsys.readouterr()

    def refused(*argv, target=None):
        target = target or tmp_path / "refused"
        code = cli(["calibrate", "--export", str(fp32), "--size", "-1", "--quiet", "--out", str(target), *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused*"))
        return err

    assert "too short" in refused("--precision", "fp16", "--calib", "synthetic:1:10")
    empty = tmp_path / "empty"
    (empty / "JPEGImages").mkdir(parents=True)
    (empty / "Annotations").mkdir()
    assert "no frames" in refused("--precision", "fp16", "--calib", str(empty))
    big = tmp_path / "big"
    f2, m3 = make_clip(FRAMES, H + 32, W, num_objects=1, seed=2)
    write_clip(big, f2, m3)
    assert f"exported for {H}x{W}" in refused("--precision", "fp16", "--calib", str(big))
    assert "nothing to quantize" in refused("--precision", "int8", "--int8-graphs", "readout")
    assert "already holds a graph set" in refused("--precision", "fp16", target=out)
    assert "already a reduced-precision set" in cli_err(capsys, ["calibrate", "--export", str(out), "--precision",
                                                                 "fp16", "--out", str(tmp_path / "refused")])
    # a graph set whose files do not match its manifest
    edited = tmp_path / "edited"
    shutil.copytree(fp32, edited)
    with open(edited / "readout.onnx", "ab") as fh:
        fh.write(b"\0")
    err = cli_err(capsys, ["calibrate", "--export", str(edited), "--precision", "fp16", "--out",
                           str(tmp_path / "refused")])
    assert "does not match the manifest" in err


def cli_err(capsys, argv):
    code = cli(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_int8_cpu_target_uses_uint8_activations(fp32, tmp_path):
    m = calibrate(fp32, tmp_path / "cpu", CalibrationOptions(precision="int8", int8_target="cpu",
                                                             other_precision="fp32", int8_graphs=("encoder",), **FAST),
                  clips=[_clip()], progress=False, log=lambda *a: None)
    q = m.graphs["encoder"].quantized
    assert q["target"] == "cpu" and "uint8" in q["zero_point_types"] and not q["symmetric"]
    assert m.calibration["int8"]["target"] == "cpu" and "TensorRT does not" in m.calibration["int8"]["activations"]
    assert all(a["finite"] and a["rel_l2"] < 0.2 for a in m.graphs["encoder"].accuracy.values())


def test_bad_options_are_one_line(fp32, tmp_path, capsys):
    for argv, words in ((["--int8-ops", "Softmax"], "cannot be quantized"), (["--int8-ops", "Add"], "with weights"),
                        (["--int8-graphs", "decoder,nope"], "unknown graph")):
        err = cli_err(capsys, ["calibrate", "--export", str(fp32), "--precision", "int8", "--out",
                               str(tmp_path / "x"), *argv])
        assert words in err
    assert not (tmp_path / "x").exists()


def test_empty_set_and_other_size_are_refused_in_the_library(fp32, tmp_path):
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(fp32, tmp_path / "a", CalibrationOptions(**FAST), clips=[], progress=False)
    with pytest.raises(CalibrationError, match="pad to"):
        calibrate(fp32, tmp_path / "a", CalibrationOptions(**FAST), clips=[_clip(size=(H, W + 32))], progress=False)
    assert not (tmp_path / "a").exists()


def test_old_fp32_manifests_read_unchanged(fp32):
    raw = json.loads((fp32 / "manifest.json").read_text())
    assert "derived_from" not in raw and "kept_fp32" not in raw["graphs"]["encoder"]
    m = load_manifest(fp32)
    assert m.derived_from is None and not m.is_derived and m.graphs["encoder"].kept_fp32 is None


def test_one_onnxruntime_distribution_in_this_venv():
    """The package uses one ONNX Runtime distribution (onnxruntime; onnxruntime-gpu instead of it on
    a GPU machine): two packages providing onnxruntime/ in one venv overwrite each other's files."""
    from importlib import metadata

    owners = sorted({d.metadata["Name"] for d in metadata.distributions()
                     if any(str(f).replace("\\", "/") == "onnxruntime/__init__.py" for f in (d.files or []))})
    assert len(owners) == 1, (f"packages providing onnxruntime/: {owners}; keep one: pip uninstall -y {' '.join(owners)} "
                              "and install one of them")


def test_large_graphs_keep_their_weights_in_a_side_file(fp32, tmp_path, monkeypatch):
    import s3rt.calibration.graphset as graphset
    from s3rt import Tracker

    monkeypatch.setattr(graphset, "EXTERNAL_DATA_THRESHOLD", 0)  # every graph as if it were over 100 MiB
    m = calibrate(fp32, tmp_path / "ext", CalibrationOptions(precision="fp16", **FAST), clips=[_clip()],
                  progress=False, log=lambda *a: None)
    assert all(m.graphs[g].data_file and (m.directory / m.graphs[g].data_file).is_file()
               for g in ("encoder", "decoder", "mask_encoder"))
    assert all(a["finite"] for e in m.graphs.values() for a in e.accuracy.values())
    frames, masks = make_clip(3, H, W, num_objects=1, seed=2)
    t = Tracker(backend="onnxruntime", graphs=m.directory, size=-1)
    for i, f in enumerate(frames):
        t.step(f, masks[0] if i == 0 else None)


def test_parity_judges_reduced_sets_by_relative_error_and_mask_agreement(sets, fp32):
    """An INT8 set is judged by the reduced-precision criteria (relative L2 per reduced graph, mean
    mask IoU), its FP32 graphs still by the tolerance; each criterion can fail on its own."""
    from s3rt.parity import REDUCED_CRITERIA, ParityOptions, ReducedCriteria, format_report, run_parity

    frames, masks = make_clip(6, H, W, num_objects=2, seed=11)
    int8 = sets["int8"].directory
    lenient = run_parity(int8, frames, masks[0], options=ParityOptions(
        size=-1, reduced=ReducedCriteria(graph_rel_l2=10.0, mean_mask_iou=0.0)))
    assert lenient["precision"] == "int8" and lenient["passed"], lenient["failures"]
    precisions = load_manifest(int8).precisions
    for name, g in lenient["graphs"].items():
        assert ("rel_l2_limit" in g) == (precisions[name] != "fp32")
        assert 0 < g["rel_l2"] < 10 if precisions[name] == "int8" else True
    text = format_report(lenient)
    assert "INT8 criteria" in text and "rel L2" in text and "result: PASS" in text
    assert 0 <= lenient["jf_vs_reference"]["J&F"] <= 1 and "against the FP32 reference's" in text

    strict = run_parity(int8, frames, masks[0], options=ParityOptions(
        size=-1, reduced=ReducedCriteria(graph_rel_l2=1e-9, mean_mask_iou=1.01)))
    assert not strict["passed"]
    assert any("mean mask IoU" in f for f in strict["failures"])
    assert any(f.startswith("graph encoder") and "relative L2 error" in f for f in strict["failures"])

    default = run_parity(int8, frames, masks[0], options=ParityOptions(size=-1))
    assert default["criteria"] == {"graph_rel_l2": REDUCED_CRITERIA["int8"].graph_rel_l2,
                                   "mean_mask_iou": REDUCED_CRITERIA["int8"].mean_mask_iou,
                                   "jf_drop": REDUCED_CRITERIA["int8"].jf_drop}
    fp32_report = run_parity(fp32, frames, masks[0], options=ParityOptions(size=-1))
    assert fp32_report["criteria"] is None and fp32_report["precision"] == "fp32"
    assert fp32_report["jf_vs_reference"] is None


def test_parity_cli_refuses_reduced_criteria_for_an_fp32_set(fp32, tmp_path, capsys):
    frames, masks = make_clip(3, H, W, num_objects=1, seed=2)
    names = write_clip(tmp_path / "clip", frames, masks)
    first = tmp_path / "clip" / "Annotations" / f"{names[0]}.png"
    code = cli(["parity", "--export", str(fp32), "--input", str(tmp_path / "clip"), "--mask", str(first),
                "--size", "-1", "--min-mean-iou", "0.9", "--quiet"])
    assert code == 2
    assert "reduced-precision sets" in capsys.readouterr().err
