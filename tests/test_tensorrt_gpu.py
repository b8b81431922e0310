"""Real TensorRT engines on a real GPU (marked `tensorrt` and `cuda`; they skip with the reason
anywhere else, which is every development and CI machine): build the cutie-test graph set,
check each engine against the torch reference on the same inputs (FP32, TF32 off), the kernel
readout against the readout engine, CUDA-graph replay against plain execution across an object
count change, the timing cache, a whole clip through `run_parity`, and engines with the batch
axis (a graph set exported with --max-streams 3): each engine against the reference at batch 1, 2
and 3, and a StreamPool on them against solo trackers. benchmarks/gpu_check.sh runs these where
TensorRT is importable."""

import pytest
import torch

from conftest import EXPORT_MAX_OBJECTS, shared_export

pytestmark = [pytest.mark.tensorrt, pytest.mark.cuda]


def _tensorrt_reason():
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    try:
        from s3rt.engine_manifest import import_tensorrt
        import_tensorrt()
    except Exception as e:  # noqa: BLE001 - any reason TensorRT cannot be used is a skip reason
        return f"needs TensorRT: {e}"
    return None


REASON = _tensorrt_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from s3rt.engines import BuildOptions, build_engines  # noqa: E402
from s3rt.graphs import example_inputs, graph_io  # noqa: E402
from s3rt.model import build_model  # noqa: E402
from s3rt.runtime.backends import create_backend  # noqa: E402
from s3rt.runtime.backends.tensorrt.runner import TensorRTBackend  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    export = shared_export(tmp_path_factory, "cutie-test")
    work = tmp_path_factory.mktemp("trt-gpu")
    cache = work / "timing.cache"
    m = build_engines(export.directory, work / "engines", BuildOptions(timing_cache=str(cache)), progress=False)
    return export, m, cache


def _compare(a: dict, b: dict, tol=TOL):
    for k in a:
        x, y = a[k].float().cpu(), b[k].float().cpu()
        assert x.shape == y.shape, k
        err = (x - y).abs().max().item()
        assert err <= tol * max(1.0, y.abs().max().item()), f"{k}: max |Δ| {err:.2e}"


def test_engines_match_the_reference_per_graph(built):
    export, m, cache = built
    assert cache.is_file() and cache.stat().st_size > 0
    model = build_model(export.config(), seed=export.seed or 0)
    ref = create_backend("torch", model=model, device="cuda", top_k=export.spec.top_k, readout="reference")
    trt_engine = TensorRTBackend(m.directory, device="cuda", readout="engine")
    spec = export.spec
    io = graph_io(export.config(), spec.padded_size, spec.batch, spec.memory_tokens)
    for n in (1, EXPORT_MAX_OBJECTS, 2):
        for graph, (inputs, _) in io.items():
            x = {k: v.cuda() for k, v in example_inputs(inputs, n, seed=n).items()}
            _compare(trt_engine.run(graph, x), ref.run(graph, x))


def test_kernel_readout_and_cuda_graphs_agree_with_the_engines(built):
    from s3rt.runtime import readout_kernel

    _, m, _ = built
    plain = TensorRTBackend(m.directory, device="cuda", readout="engine")
    captured = TensorRTBackend(m.directory, device="cuda", readout="engine", cuda_graphs=True)
    spec = plain.spec
    io = graph_io(plain.model_config, spec.padded_size, spec.batch, spec.memory_tokens)
    for n in (2, 2, 3, 1):  # replay, then objects added and deleted: captured again
        for graph, (inputs, _) in io.items():
            x = {k: v.cuda() for k, v in example_inputs(inputs, n, seed=7).items()}
            _compare(captured.run(graph, x), plain.run(graph, x), 1e-6)
    assert captured.book.replays > 0 and captured.book.invalidations >= 2
    if readout_kernel.is_available():
        kernel = TensorRTBackend(m.directory, device="cuda", readout="cuda-kernel")
        x = {k: v.cuda() for k, v in example_inputs(io["readout"][0], 2, seed=3).items()}
        _compare(kernel.run("readout", x), plain.run("readout", x))
        assert "readout: cuda-kernel" in kernel.describe()


def test_a_clip_through_run_parity(built):
    from s3rt.parity import run_parity
    from s3rt.synthetic import make_clip

    export, m, _ = built
    H, W = export.spec.padded_size
    frames, masks = make_clip(12, H, W, num_objects=2, seed=1)
    report = run_parity(export.directory, frames, masks[0], gt_masks=masks,
                        backend=TensorRTBackend(m.directory, device="cuda"))
    assert report["passed"] or report["explained"], report.get("failures")


@pytest.fixture(scope="module")
def built_streams(tmp_path_factory):
    from test_engines import streams_export

    export = streams_export(tmp_path_factory)
    m = build_engines(export.directory, tmp_path_factory.mktemp("trt-gpu-streams") / "engines", BuildOptions(),
                      progress=False)
    return export, m


def test_engines_with_the_batch_axis_match_the_reference_at_every_batch(built_streams):
    export, m = built_streams
    assert m.batches == (1, 3, 3)
    model = build_model(export.config(), seed=export.seed or 0)
    ref = create_backend("torch", model=model, device="cuda", top_k=export.spec.top_k, readout="reference")
    plain = TensorRTBackend(m.directory, device="cuda", readout="engine")
    captured = TensorRTBackend(m.directory, device="cuda", readout="engine", cuda_graphs=True)
    spec = export.spec
    io = graph_io(export.config(), spec.padded_size, spec.graph_batch, spec.memory_tokens)
    for n, batch in ((2, 1), (2, 3), (2, 2), (3, 3), (1, 1)):  # shapes set again on every change
        for graph, (inputs, _) in io.items():
            x = {k: v.cuda() for k, v in example_inputs(inputs, n, seed=n + batch, batch=batch).items()}
            want = ref.run(graph, x)
            _compare(plain.run(graph, x), want)
            _compare(captured.run(graph, x), want)


def test_a_stream_pool_on_engines_with_the_batch_axis(built_streams):
    from s3rt.runtime.tracker import Tracker
    from s3rt.serving import StreamFrame, StreamPool
    from s3rt.synthetic import make_clip

    export, m = built_streams
    H, W = export.spec.padded_size
    clips = [make_clip(10, H, W, num_objects=2, seed=60 + k) for k in range(4)]
    pool = StreamPool(backend="tensorrt", engines=str(m.directory), device="cuda", size=-1, mem_every=3)
    assert pool.max_batch == 3
    for k in range(4):
        pool.open(k)
    got = {k: [] for k in range(4)}
    for t in range(10):
        out = pool.step({k: StreamFrame(f[t], ms[0] if t == 0 else None, end=t == 9)
                         for k, (f, ms) in enumerate(clips)})
        for k, r in out.items():
            got[k].append(r)
    assert max(b for (g, b) in pool.calls if g == "encoder") == 3  # 4 streams: calls of 3 and 1
    for k, (f, ms) in enumerate(clips):
        solo = Tracker(backend="tensorrt", engines=str(m.directory), device="cuda", size=-1, mem_every=3)
        for t in range(10):
            want = solo.step(f[t], ms[0] if t == 0 else None, end=t == 9)
            err = (got[k][t].prob.float().cpu() - want.prob.float().cpu()).abs().max().item()
            assert err <= 1e-4, f"stream {k} frame {t}: max |Δ prob| {err:.2e}"
