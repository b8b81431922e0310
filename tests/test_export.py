"""Export: the five graphs and the manifest, onnx.checker, the TensorRT operator allow-list, and
per-graph parity of ONNX Runtime against the torch backend (the reference per-frame steps)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from s3rt.export import ExportError, export_graphs
from s3rt.export.exporter import export_one
from s3rt.graphs import GRAPHS, GraphSetSpec, config_from_dict, config_to_dict, example_inputs, graph_io, load_manifest
from s3rt.export.ops import check_model_ops
from s3rt.export.substitutions import einsum_as_matmul
from s3rt.model import build_model, get_config
from s3rt.model.memory_readout import memory_readout
from s3rt.runtime.backends.onnxrt import OnnxRuntimeBackend
from s3rt.runtime.backends.pytorch import TorchBackend

from conftest import EXPORT_MAX_OBJECTS as MAX_OBJECTS, EXPORT_SIZE as SIZE, shared_export  # noqa: E402

PRESETS = ("cutie-test", "s3-test")


@pytest.fixture(scope="module", params=PRESETS)
def exported(request, tmp_path_factory):
    return shared_export(tmp_path_factory, request.param)


def test_manifest_records_the_export(exported):
    m = load_manifest(exported.directory)
    cfg = get_config(m.preset)
    raw = json.loads((exported.directory / "manifest.json").read_text())
    assert raw["format"] == "s3rt-export"
    spec = raw["spec"]
    assert spec["preset"] == m.preset and raw["model_config"] == config_to_dict(cfg)
    assert config_from_dict(raw["model_config"]) == cfg
    assert spec["padded_size"] == list(SIZE) and raw["batch"] == 1 and spec["max_objects"] == MAX_OBJECTS
    assert spec["max_mem_frames"] == 5 and spec["long_term_tokens"] == 0 and spec["flip_aug"] is False
    assert raw["memory_tokens"] == (SIZE[0] // 16) * (SIZE[1] // 16) * 5 == m.spec.memory_tokens
    assert spec["top_k"] == 30 and raw["checkpoint"] == "random, seed 0" and raw["seed"] == 0
    assert m.spec == GraphSetSpec.for_model(cfg, SIZE, max_objects=MAX_OBJECTS)
    assert raw["opset"] >= 17 and "dynamo=True" in raw["exporter"]
    assert raw["s3rt_version"] and raw["axes"] == {"num_objects": [1, MAX_OBJECTS]}
    assert set(raw["graphs"]) == set(GRAPHS)
    for name, g in raw["graphs"].items():
        assert g["file"] == f"{name}.onnx" and (exported.directory / g["file"]).is_file()
        assert g["precision"] == "fp32" and g["exporter"] == "dynamo" and len(g["sha256"]) == 64
        assert [t["name"] for t in g["inputs"]] == list(GRAPHS[name].inputs)
        assert [t["name"] for t in g["outputs"]] == list(GRAPHS[name].outputs)
        for t in g["inputs"] + g["outputs"]:
            assert t["dtype"] == ("bool" if t["name"] == "mem_valid" else "float32")
            assert t["shape"][0] == 1
        assert g["export_check"]["max_rel"] < 1e-5
    shapes = {t["name"]: t["shape"] for g in raw["graphs"].values() for t in g["inputs"] + g["outputs"]}
    assert shapes["mem_values"] == [1, "num_objects", cfg.value_dim, raw["memory_tokens"]]
    assert shapes["prob"] == [1, "num_objects + 1", *SIZE]
    assert shapes["image"] == [1, 3, *SIZE]


def test_graphs_pass_checker_allow_list_and_open_everywhere(exported):
    import onnxruntime as ort

    for name in GRAPHS:
        path = exported.directory / f"{name}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
        report = check_model_ops(model)
        assert report.ok, report.violations
        assert "Einsum" not in report.op_counts and "NonZero" not in report.op_counts
        for node in model.graph.node:
            if node.op_type == "ScatterElements":
                assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "reduction")) == b"none"
        # graph I/O carry the symbolic object axis
        dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        for spec in exported.graphs[name].inputs:
            assert dims[spec["name"]] == spec["shape"]
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    readout = onnx.load(str(exported.directory / "readout.onnx"))
    topk = [n for n in readout.graph.node if n.op_type == "TopK"]
    assert len(topk) == 1 and topk[0].input[1] in {i.name for i in readout.graph.initializer}
    polygraphy = Path(sys.executable).with_name("polygraphy")
    cmd = [str(polygraphy)] if polygraphy.exists() else [sys.executable, "-m", "polygraphy"]
    for name in ("readout", "fusion"):
        r = subprocess.run(cmd + ["inspect", "model", str(exported.directory / f"{name}.onnx")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "num_objects" in r.stdout


def test_each_graph_matches_the_torch_backend(exported):
    """ONNX Runtime vs the reference per-frame steps (torch backend) on random inputs, 1..3 objects."""
    cfg = exported.config()
    model = build_model(cfg, seed=exported.seed)
    if cfg.is_s3_encoder:
        model.pixel_encoder.set_export_mode(True)
    ref = TorchBackend(model, top_k=exported.spec.top_k, readout="reference")
    ort_backend = OnnxRuntimeBackend(exported.directory, spinning=False)
    io = graph_io(cfg, SIZE, 1, exported.memory_tokens)
    for name in GRAPHS:
        for n in (1, 2, MAX_OBJECTS):
            inputs = example_inputs(io[name][0], n, seed=10 + n)
            a, b = ref.run(name, inputs), ort_backend.run(name, inputs)
            for out in GRAPHS[name].outputs:
                assert a[out].shape == b[out].shape, (name, out)
                d = (a[out] - b[out]).abs()
                assert bool((d <= 1e-5 + 1e-5 * a[out].abs()).all()), (name, out, n, float(d.max()))
                assert float(d.max()) / max(float(a[out].abs().max()), 1e-6) < 1e-5, (name, out, n)


@pytest.mark.parametrize("valid_slots", [1, 7, 40, None])
def test_readout_graph_equals_the_reference_readout(exported, valid_slots):
    """Including fewer valid slots than top-k (invalid slots must get weight 0) and usage."""
    ort_backend = OnnxRuntimeBackend(exported.directory, spinning=False)
    cfg, M = exported.config(), exported.memory_tokens
    g = torch.Generator().manual_seed(3)
    h, w = SIZE[0] // 16, SIZE[1] // 16
    x = {"key": torch.randn(1, cfg.key_dim, h, w, generator=g), "selection": torch.rand(1, cfg.key_dim, h, w, generator=g),
         "mem_key": torch.randn(1, cfg.key_dim, M, generator=g), "mem_shrinkage": 1 + torch.rand(1, 1, M, generator=g),
         "mem_values": torch.randn(1, 2, cfg.value_dim, M, generator=g),
         "mem_valid": torch.ones(1, M, dtype=torch.bool)}
    if valid_slots is not None:
        x["mem_valid"][:] = False
        x["mem_valid"][0, torch.randperm(M, generator=g)[:valid_slots]] = True
    ref, usage = memory_readout(x["key"].flatten(2), x["selection"].flatten(2), x["mem_key"], x["mem_shrinkage"],
                                x["mem_values"], x["mem_valid"], top_k=exported.spec.top_k, return_usage=True)
    got = ort_backend.run("readout", x)
    assert torch.allclose(got["readout"], ref.view(1, 2, cfg.value_dim, h, w), atol=1e-5, rtol=1e-5)
    assert torch.allclose(got["usage"], usage, atol=1e-5, rtol=1e-5)
    assert not bool(got["usage"][~x["mem_valid"]].any())
    assert abs(float(got["usage"].sum()) - h * w) < 1e-3  # every pixel's weights sum to 1


@pytest.mark.parametrize("eq,a,b", [("bnhwq,bnhwc->bnqc", (1, 2, 3, 4, 5), (1, 2, 3, 4, 6)),
                                    ("ij,jk->ik", (3, 4), (4, 5)), ("bij,bkj->bki", (2, 3, 4), (2, 5, 4)),
                                    ("ijk,jl->li", (2, 3, 4), (3, 5))])
def test_einsum_as_matmul_is_einsum(eq, a, b):
    x, y = torch.randn(a), torch.randn(b)
    assert torch.allclose(einsum_as_matmul(eq, x, y), torch.einsum(eq, x, y), atol=1e-5)


def _tiny_model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_allow_list_flags_what_tensorrt_cannot_run():
    f = TensorProto.FLOAT
    x = helper.make_tensor_value_info("x", f, [2, 3])
    y = helper.make_tensor_value_info("y", f, [2, 3])
    ok = _tiny_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    assert check_model_ops(ok).ok
    einsum = _tiny_model([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")], [x], [y])
    assert any("Einsum" in v for v in check_model_ops(einsum).violations)
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, [2, 3])
    scatter = _tiny_model([helper.make_node("ScatterElements", ["x", "i", "x"], ["y"], axis=1, reduction="add")],
                          [x, idx], [y])
    assert any("reduction" in v for v in check_model_ops(scatter).violations)
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    vals = helper.make_tensor_value_info("v", f, [2, None])
    inds = helper.make_tensor_value_info("ix", TensorProto.INT64, [2, None])
    topk = _tiny_model([helper.make_node("TopK", ["x", "k"], ["v", "ix"], axis=1)], [x, k], [vals, inds])
    assert any("K must be a constant" in v for v in check_model_ops(topk).violations)
    k_const = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    topk_ok = _tiny_model([helper.make_node("TopK", ["x", "k"], ["v", "ix"], axis=1)], [x], [vals, inds], [k_const])
    assert check_model_ops(topk_ok).ok
    nz = _tiny_model([helper.make_node("NonZero", ["x"], ["i"])], [x], [idx])
    assert any("data-dependent" in v for v in check_model_ops(nz).violations)
    x5 = helper.make_tensor_value_info("x5", f, [1, 1, 2, 2, 2])
    g5 = helper.make_tensor_value_info("g5", f, [1, 2, 2, 2, 3])
    y5 = helper.make_tensor_value_info("y5", f, [1, 1, 2, 2, 2])
    gs = _tiny_model([helper.make_node("GridSample", ["x5", "g5"], ["y5"])], [x5, g5], [y5])
    assert any("4-D GridSample" in v for v in check_model_ops(gs).violations)


def test_size_must_be_a_padded_resolution(tmp_path):
    with pytest.raises(ExportError, match=r"multiples of 32.*--size 64x96"):
        export_graphs("s3-test", tmp_path / "x", size="64x80", progress=False)
    with pytest.raises(ExportError, match="HxW"):
        export_graphs("cutie-test", tmp_path / "x", size="64", progress=False)
    assert not (tmp_path / "x").exists()
    from s3rt.cli import main

    assert main(["export", "--preset", "cutie-test", "--size", "60x96", "--out", str(tmp_path / "y")]) == 2


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    import s3rt.export.exporter as ex

    calls = []

    def failing(graph, *a, **k):
        calls.append(graph)
        if graph == "readout":
            raise ex.ExportError("boom")
        return real(graph, *a, **k)

    real = ex.export_one
    monkeypatch.setattr(ex, "export_one", failing)
    with pytest.raises(ExportError, match="boom"):
        export_graphs("cutie-test", tmp_path / "out", size=SIZE, progress=False)
    assert calls == ["encoder", "readout"]
    assert list(tmp_path.iterdir()) == []


def test_falls_back_to_torchscript_and_records_it(tmp_path, monkeypatch):
    import s3rt.export.exporter as ex

    def no_dynamo(*a, **k):
        raise RuntimeError("dynamo cannot export this")

    monkeypatch.setattr(ex, "_export_dynamo", no_dynamo)
    model = build_model("cutie-test")
    cfg = model.cfg
    spec = GraphSetSpec.for_model(cfg, SIZE, max_objects=MAX_OBJECTS)
    entry = export_one("encoder", model, spec, tmp_path, opset=18)
    assert entry.exporter == "torchscript"
    assert entry.export_check["max_rel"] < 1e-5
    assert check_model_ops(onnx.load(str(tmp_path / "encoder.onnx"))).ok
    # When both exporters fail, the error names both reasons.
    with pytest.raises(ExportError, match="dynamo cannot export this.*torchscript"):
        export_one("decoder", model, spec, tmp_path, opset=18)


def test_large_weights_go_to_a_side_file(tmp_path):
    model = build_model("cutie-test")
    spec = GraphSetSpec.for_model(model.cfg, SIZE, max_objects=1)
    entry = export_one("encoder", model, spec, tmp_path, opset=18, external_data=True, verify=False)
    assert entry.data_file == "encoder.onnx.data" and (tmp_path / entry.data_file).stat().st_size > 1e6
    assert (tmp_path / "encoder.onnx").stat().st_size < 1e6
    onnx.checker.check_model(str(tmp_path / "encoder.onnx"), full_check=True)
    # max_objects=1: no dynamic axis at all
    assert all(np.all([d.dim_param == "" for d in i.type.tensor_type.shape.dim])
               for i in onnx.load(str(tmp_path / "encoder.onnx"), load_external_data=False).graph.input)


def test_one_matmul_similarity_is_the_reference_similarity():
    from s3rt.graphs.modules import ReadoutGraph
    from s3rt.model.memory_readout import similarity

    g = torch.Generator().manual_seed(0)
    qk, qe = torch.randn(2, 16, 40, generator=g), torch.rand(2, 16, 40, generator=g)
    mk, ms = torch.randn(2, 16, 70, generator=g), 1 + torch.rand(2, 1, 70, generator=g)
    ref = similarity(mk, ms, qk, qe).transpose(1, 2)
    assert torch.allclose(ReadoutGraph.similarity_pm(qk, qe, mk, ms), ref, atol=1e-5, rtol=1e-5)
