"""The tensorrt backend without TensorRT: the registry entry, the loader's checks and one-line
errors (before TensorRT is needed, and when it is missing), the readout choice, binding plans,
input shapes set only when the object count (or, with the batch axis, the batch) changes,
CUDA-graph bookkeeping, the runner's binding logic on a stand-in execution context, and a
StreamPool on the runner over engines with the batch axis (stand-in contexts that compute each
engine's outputs with the torch reference graphs from the addresses the runner bound): every
stream equals its solo tracker and streams share calls. Real engines on a GPU:
tests/test_tensorrt_gpu.py."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import EXPORT_MAX_OBJECTS, shared_export
from s3rt.engine_manifest import EngineManifestError, TensorRTUnavailable, read_engine_manifest
from s3rt.engines import BuildOptions, build_engines
from s3rt.graphs import eval_dim
from s3rt.runtime.backends import BACKENDS, create_backend
from s3rt.runtime.backends.tensorrt import TrtEngines
from s3rt.runtime.backends.tensorrt.plan import (BindingPlan, CudaGraphBook, ShapeState, batch_size, object_count,
                                                 readout_choice)
from s3rt.runtime.backends.tensorrt.runner import TensorRTBackend

H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


class _Builder:
    version, major = "11.4.0.106", 11

    def __init__(self, options, cache):
        pass

    def build(self, onnx_path, profile):
        return b"ENGINE " + Path(onnx_path).name.encode()

    def serialized_timing_cache(self):
        return None


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    src = Path(shared_export(tmp_path_factory, "cutie-test").directory)
    out = tmp_path_factory.mktemp("trt") / "engines"
    build_engines(src, out, BuildOptions(), progress=False, gpu=H100, make_builder=_Builder)
    return out


def has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
        return True
    except ImportError:
        return False


# ------------------------------------------------------------------------------ registry
def test_registry_entry():
    e = BACKENDS["tensorrt"]
    assert e.module == "s3rt.runtime.backends.tensorrt" and e.needs == "engines"


def test_create_refuses_what_it_cannot_run(engine_dir, tmp_path):
    with pytest.raises(ValueError, match="needs an engine set.*s3rt build"):
        create_backend("tensorrt", device="cuda")
    with pytest.raises(ValueError, match="runs engines, not a PyTorch model"):
        create_backend("tensorrt", model=object(), engines=engine_dir)
    with pytest.raises(ValueError, match="runs on a CUDA device, not cpu"):
        create_backend("tensorrt", engines=engine_dir, device="cpu")


def test_a_broken_engine_set_is_reported_before_tensorrt_is_needed(engine_dir, tmp_path):
    broken = tmp_path / "engines"
    shutil.copytree(engine_dir, broken)
    (broken / "decoder.engine").unlink()
    with pytest.raises(EngineManifestError, match="decoder: engine file .* is missing"):
        create_backend("tensorrt", engines=broken, device="cuda")


@pytest.mark.skipif(has_tensorrt(), reason="TensorRT is installed here")
def test_without_tensorrt_one_line_says_what_to_install(engine_dir):
    with pytest.raises(TensorRTUnavailable) as e:
        create_backend("tensorrt", graphs=engine_dir, device="cuda")  # graphs= may be the engine folder
    text = str(e.value)
    assert "\n" not in text and "pip install tensorrt" in text


def test_an_engine_set_records_its_graph_set(engine_dir, tmp_path_factory):
    src = shared_export(tmp_path_factory, "cutie-test")
    m = read_engine_manifest(engine_dir)
    assert m.source["directory"] == str(Path(src.directory).resolve())
    assert {g: r["sha256"] for g, r in m.source["graphs"].items()} == {g: e.sha256 for g, e in src.graphs.items()}


# --------------------------------------------------------------------------------- plans
def test_readout_choice():
    assert readout_choice("auto", True) == "cuda-kernel"
    assert readout_choice("auto", False) == "engine"
    assert readout_choice("engine", True) == "engine"
    with pytest.raises(RuntimeError, match="not built"):
        readout_choice("cuda-kernel", False, "not built")
    with pytest.raises(ValueError, match="readout must be one of"):
        readout_choice("graph", True)


def test_binding_plans_follow_the_manifest(engine_dir):
    m = read_engine_manifest(engine_dir)
    e = m.engines["readout"]
    plan = BindingPlan.make("readout", e.inputs, e.outputs, 2)
    assert plan.dynamic and plan.num_objects == 2
    shapes = {b.name: b.shape for b in plan.inputs}
    assert shapes["mem_values"][1] == 2 and shapes["mem_valid"] == (1, m.spec.memory_tokens)
    assert {b.name: b.dtype for b in plan.inputs}["mem_valid"] == "bool"
    assert object_count(e.inputs, shapes) == 2
    enc = m.engines["encoder"]
    plan = BindingPlan.make("encoder", enc.inputs, enc.outputs, 2)
    assert not plan.dynamic and plan.num_objects == 0
    dec = m.engines["decoder"]
    assert {b.name: b.shape for b in BindingPlan.make("decoder", dec.inputs, dec.outputs, 3).outputs}["prob"][1] == 4


def test_shape_state_and_cuda_graph_book():
    s = ShapeState()
    assert s.needs_update("fusion", 2)
    s.updated("fusion", 2)
    assert not s.needs_update("fusion", 2) and s.needs_update("fusion", 3)
    s.updated("fusion", (3, 1))
    assert s.needs_update("fusion", (3, 2)) and not s.needs_update("fusion", (3, 1))  # (objects, batch) keys
    book = CudaGraphBook()
    assert book.lookup("encoder", 0) is None
    book.store("encoder", 0, "g-enc")
    assert book.lookup("fusion", 2) is None  # first object count: nothing to drop yet
    book.store("fusion", 2, "g-fus2")
    assert book.lookup("fusion", 2) == "g-fus2" and book.invalidations == 0
    assert book.lookup("fusion", 3) is None and book.invalidations == 1  # an object added: capture again
    assert book.captured == {("encoder", 0, 0): "g-enc"}  # the static encoder's capture is kept
    assert book.lookup("encoder", 0) == "g-enc"
    # engines with the batch axis: one capture per batch, side by side for one object count
    book.store("fusion", 3, "g-fus3-b1", 1)
    book.store("fusion", 3, "g-fus3-b2", 2)
    assert book.lookup("fusion", 3, 1) == "g-fus3-b1" and book.lookup("fusion", 3, 2) == "g-fus3-b2"
    assert book.lookup("fusion", 3, 3) is None and book.invalidations == 1
    assert book.lookup("fusion", 2, 1) is None and book.invalidations == 2  # another object count: dropped
    assert set(book.captured) == {("encoder", 0, 0)}


# ----------------------------------------------------------------- the runner's binding
class FakeContext:
    def __init__(self):
        self.shapes, self.addresses, self.enqueued, self.shape_rounds = {}, {}, [], 0

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        self.shape_rounds += 1
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        self.enqueued.append(stream)
        return True


class CpuBackend(TensorRTBackend):
    """The runner on a stand-in context, on the CPU (no stream to ask PyTorch for)."""

    def _stream_handle(self):
        return 1234


def make_backend(engine_dir, fp16_outputs=()):
    m = read_engine_manifest(engine_dir)
    m.directory = Path(engine_dir)
    dt = {"float32": torch.float32, "bool": torch.bool}
    dtypes = {g: {t["name"]: (torch.float16 if t["name"] in fp16_outputs else dt[t["dtype"]])
                  for t in e.inputs + e.outputs} for g, e in m.engines.items()}
    opened = TrtEngines(manifest=m, tensorrt_version="11.4.0.106", contexts={g: FakeContext() for g in m.engines},
                        dtypes=dtypes)
    return CpuBackend(opened, device="cpu")


def inputs_for(backend, graph, n):
    out = {}
    for t in backend.manifest.engines[graph].inputs:
        shape = [eval_dim(d, n) for d in t["shape"]]
        out[t["name"]] = torch.zeros(shape, dtype=torch.bool) if t["dtype"] == "bool" else torch.rand(shape)
    return out


def test_runner_binds_every_tensor_and_sets_shapes_only_when_objects_change(engine_dir):
    b = make_backend(engine_dir, fp16_outputs=("new_sensory",))
    assert b.readout_impl == "engine" and "readout: engine" in b.describe()
    ctx = b.opened.contexts["decoder"]
    x = inputs_for(b, "decoder", 2)
    out = b.run("decoder", x)
    assert out["prob"].shape[1] == 3 and out["new_sensory"].dtype == torch.float32  # FP16 output widened
    assert ctx.enqueued == [1234]
    assert set(ctx.addresses) == set(x) | set(out)
    assert all(ctx.addresses[k] == v.data_ptr() for k, v in x.items())
    rounds = ctx.shape_rounds
    assert ctx.shapes["sensory"][1] == 2
    b.run("decoder", inputs_for(b, "decoder", 2))
    assert ctx.shape_rounds == rounds  # same object count: shapes not set again
    b.run("decoder", inputs_for(b, "decoder", 3))
    assert ctx.shape_rounds > rounds and ctx.shapes["sensory"][1] == 3
    enc = b.opened.contexts["encoder"]
    b.run("encoder", inputs_for(b, "encoder", 1))
    assert enc.shape_rounds == 0  # a static engine never needs shapes


def test_runner_refuses_counts_outside_the_profile(engine_dir, tmp_path):
    b = make_backend(engine_dir)
    b.objects = (2, 2, 3)
    with pytest.raises(ValueError, match=r"1 objects, but the engines in .* take 2..3: s3rt build .*--min-objects 1"):
        b.run("decoder", inputs_for(b, "decoder", 1))
    with pytest.raises(ValueError, match=r"built for 2..3"):
        b.check_stream(padded_size=b.spec.padded_size, batch=1, num_objects=1, memory_tokens=b.spec.memory_tokens)
    with pytest.raises(ValueError, match="pads frames to"):
        b.check_stream(padded_size=(32, 32), batch=1, num_objects=2, memory_tokens=b.spec.memory_tokens)
    assert EXPORT_MAX_OBJECTS == b.spec.max_objects


def test_the_tensorrt_backend_imports_neither_tensorrt_nor_onnx_nor_the_builder():
    import subprocess
    import sys

    code = ("import sys, s3rt.runtime.backends.tensorrt, s3rt.runtime.backends.tensorrt.runner; "
            "print([m for m in ('tensorrt', 'onnx', 's3rt.engines') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


@pytest.mark.skipif(has_tensorrt(), reason="TensorRT is installed here")
def test_create_with_the_graph_set_checks_it_before_tensorrt(engine_dir, tmp_path, tmp_path_factory):
    src = Path(shared_export(tmp_path_factory, "cutie-test").directory)
    with pytest.raises(TensorRTUnavailable):  # the right graph set: every check passes, then TensorRT is needed
        create_backend("tensorrt", graphs=src, engines=engine_dir, device="cuda")
    other = tmp_path / "graphs"
    shutil.copytree(src, other)
    d = json.loads((other / "manifest.json").read_text())
    d["graphs"]["encoder"]["sha256"] = "0" * 64  # as if the encoder had been re-exported
    (other / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(EngineManifestError, match=r"changed since .*encoder.*s3rt build --graphs"):
        create_backend("tensorrt", graphs=other, engines=engine_dir, device="cuda")


def test_stream_option(engine_dir):
    b = make_backend(engine_dir)
    assert b.stream_mode == "auto" and b._side_stream() is None  # CPU stand-in: no stream to change
    with pytest.raises(ValueError, match="stream must be 'auto' or 'current'"):
        CpuBackend(b.opened, device="cpu", stream="own")


# ------------------------------------------------------------- engines with the batch axis
@pytest.fixture(scope="module")
def streams_engine_dir(tmp_path_factory):
    from test_engines import streams_export

    src = Path(streams_export(tmp_path_factory).directory)
    out = tmp_path_factory.mktemp("trt-streams") / "engines"
    build_engines(src, out, BuildOptions(), progress=False, gpu=H100, make_builder=_Builder)
    return out


def test_binding_plans_with_the_batch_axis(streams_engine_dir):
    m = read_engine_manifest(streams_engine_dir)
    assert m.batches == (1, 3, 3)
    enc = m.engines["encoder"]
    plan = BindingPlan.make("encoder", enc.inputs, enc.outputs, 0, 2)
    assert plan.dynamic and plan.batch == 2 and plan.num_objects == 0 and plan.shape_key == (0, 2)
    assert plan.inputs[0].shape == (2, 3, *m.spec.padded_size) and all(b.shape[0] == 2 for b in plan.outputs)
    with pytest.raises(ValueError, match="needs the call's batch"):
        BindingPlan.make("encoder", enc.inputs, enc.outputs, 0)
    e = m.engines["decoder"]
    plan = BindingPlan.make("decoder", e.inputs, e.outputs, 2, 3)
    shapes = {b.name: b.shape for b in plan.inputs}
    assert shapes["sensory"][:2] == (3, 2) and plan.shape_key == (2, 3)
    assert batch_size(e.inputs, shapes) == 3 and object_count(e.inputs, shapes) == 2
    assert batch_size([{"name": "x", "shape": [1, "num_objects"]}], {"x": (1, 2)}) == 0  # a fixed batch


def test_runner_sets_shapes_when_the_batch_changes(streams_engine_dir):
    b = make_backend(streams_engine_dir)
    assert b.batches == (1, 3, 3) and "streams per call 1..3" in b.describe()
    ctx = b.opened.contexts["decoder"]

    def run(n, batch):
        x = {k: torch.cat([v] * batch) for k, v in inputs_for_batch(b, "decoder", n).items()}
        out = b.run("decoder", x)
        assert out["prob"].shape[:2] == (batch, n + 1)
        return ctx.shape_rounds

    r1 = run(2, 1)
    assert ctx.shapes["sensory"][:2] == (1, 2)
    assert run(2, 1) == r1  # same objects and batch: shapes not set again
    r2 = run(2, 3)
    assert r2 > r1 and ctx.shapes["sensory"][:2] == (3, 2)
    r3 = run(3, 3)
    assert r3 > r2 and ctx.shapes["sensory"][:2] == (3, 3)
    enc = b.opened.contexts["encoder"]
    b.run("encoder", {"image": torch.rand(2, 3, *b.spec.padded_size)})
    assert enc.shapes["image"][0] == 2  # the encoder is dynamic now: its batch
    b.batches = (1, 2, 2)  # (engines whose profile stops short of the graph set's batch)
    with pytest.raises(ValueError, match=r"batch 3, but the engines in .* take 1..2: s3rt build"):
        b.run("encoder", {"image": torch.rand(3, 3, *b.spec.padded_size)})
    with pytest.raises(ValueError, match=r"batch of 1..3"):  # over the graph set: the base check
        b.run("encoder", {"image": torch.rand(4, 3, *b.spec.padded_size)})


def inputs_for_batch(backend, graph, n):
    """One row of every input of `graph` (engines with the batch axis)."""
    out = {}
    for t in backend.manifest.engines[graph].inputs:
        shape = [eval_dim(d, n, 1) for d in t["shape"]]
        out[t["name"]] = torch.zeros(shape, dtype=torch.bool) if t["dtype"] == "bool" else torch.rand(shape)
    return out


class TorchContext(FakeContext):
    """An execution context that computes its engine's outputs with the torch reference graphs,
    from the tensors at the addresses the runner bound, after checking that the input shapes the
    runner set are those of the bound tensors."""

    def __init__(self, graph, reference, tensors):
        super().__init__()
        self.graph, self.reference, self.tensors = graph, reference, tensors

    def execute_async_v3(self, stream):
        from s3rt.graphs import GRAPHS

        super().execute_async_v3(stream)
        contract = GRAPHS[self.graph]
        feeds = {n: self.tensors[self.addresses[n]] for n in contract.inputs}
        for n, t in feeds.items():
            assert self.shapes[n] == tuple(t.shape), (self.graph, n, self.shapes[n], tuple(t.shape))
        out = self.reference.run(self.graph, feeds)
        for n in contract.outputs:
            self.tensors[self.addresses[n]].copy_(out[n])
        return True


class ComputingBackend(CpuBackend):
    """The runner with TorchContexts: it records the tensors it binds, by address."""

    def _prepare(self, graph, name, t):
        t = super()._prepare(graph, name, t)
        self.tensors[t.data_ptr()] = t
        return t

    def _allocate(self, graph, plan):
        outs = super()._allocate(graph, plan)
        self.tensors.update({t.data_ptr(): t for t in outs.values()})
        return outs


def test_a_stream_pool_runs_on_engines_with_the_batch_axis(streams_engine_dir):
    from s3rt.model import build_model
    from test_serving_pool import _assert_same
    from test_serving_pool_onnxrt import _events, _run

    reference = create_backend("torch", model=build_model("cutie-test"))  # the weights the graphs were made from
    m = read_engine_manifest(streams_engine_dir)
    m.directory = Path(streams_engine_dir)

    def backend():
        tensors = {}
        dtypes = {g: {t["name"]: {"float32": torch.float32, "bool": torch.bool}[t["dtype"]]
                      for t in e.inputs + e.outputs} for g, e in m.engines.items()}
        opened = TrtEngines(manifest=m, tensorrt_version="11.4.0.106", dtypes=dtypes,
                            contexts={g: TorchContext(g, reference, tensors) for g in m.engines})
        b = ComputingBackend(opened, device="cpu")
        b.tensors = tensors
        return b

    with torch.inference_mode():
        pool, got, want = _run(backend, _events())
    _assert_same(got, want)  # each stream equals its solo tracker on the same engines (FP32, 1e-5)
    assert pool.max_batch == 3
    assert max(b for (g, b) in pool.calls if g == "encoder") == 3  # 5 streams, calls of at most 3
    assert pool.calls[("fusion", 2)] + pool.calls[("fusion", 3)] > 0
    shape_rounds = {g: c.shape_rounds for g, c in pool.backend.opened.contexts.items()}
    assert all(shape_rounds.values())  # every engine had its shapes set (batch and objects vary)
