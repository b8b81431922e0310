"""The stream pool on ONNX Runtime: a graph set exported with a batch axis (--max-streams) runs
several streams per call, each stream equal to a solo Tracker on the same graph set (FP32,
max |Δ prob| <= 1e-5); a graph set of one stream per call (the default) still serves a pool."""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from conftest import EXPORT_MAX_OBJECTS, EXPORT_SIZE, shared_export  # noqa: E402
from s3rt.graphs import BATCH_AXIS, GraphSetSpec, SpecError  # noqa: E402
from s3rt.serving import StreamFrame, StreamPool  # noqa: E402
from s3rt.synthetic import make_clip  # noqa: E402
from test_serving_pool import _assert_same, _only, run_pool, run_solo  # noqa: E402

H, W = EXPORT_SIZE


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    from s3rt.export import export_graphs
    out = tmp_path_factory.getbasetemp() / f"export-cutie-test-{H}x{W}-streams3"
    return export_graphs("cutie-test", out, size=EXPORT_SIZE, max_objects=EXPORT_MAX_OBJECTS, max_streams=3,
                         progress=False, reuse=True)


def _events():
    out = {}
    for k, (seed, n, start) in enumerate([(40, 8, 0), (41, 6, 1), (42, 7, 0), (43, 5, 2)]):
        f, m = make_clip(n, H, W, num_objects=2 + k % 2, seed=seed)
        ev = {start + t: StreamFrame(f[t], m[0] if t == 0 else None, end=t == n - 1) for t in range(n)}
        out[k] = ev
    f, m = make_clip(8, H, W, num_objects=3, seed=44)  # objects added and deleted
    ev = {t: StreamFrame(f[t], _only(m[0], [1]) if t == 0 else None) for t in range(8)}
    added = sorted(int(i) for i in set(np.unique(m[2])) - {0, 1})
    assert added
    ev[2] = StreamFrame(f[2], _only(m[2], added), objects=added)
    ev[5] = ("delete", [added[0]], StreamFrame(f[5]))
    out[4] = ev
    return out


def _run(backend_of, events):
    pool, got = run_pool(None, events, backend=backend_of())
    return pool, got, run_solo(None, events, backend_of=backend_of)


def test_graph_set_with_a_batch_axis_records_it(multi):
    assert multi.spec.max_streams == 3 and multi.spec.max_batch == 3
    data = json.loads((multi.directory / "manifest.json").read_text())
    assert data["spec"]["max_streams"] == 3
    image = data["graphs"]["encoder"]["inputs"][0]
    assert image["shape"][0] == BATCH_AXIS
    assert data["graphs"]["readout"]["export_check"]["batch"] == [1, 3]
    assert "--max-streams 3" in multi.spec.export_command()
    old = {k: v for k, v in multi.spec.to_dict().items() if k != "max_streams"}
    assert GraphSetSpec.from_dict(old).max_streams == 1  # manifests from before the field
    with pytest.raises(SpecError, match="max-streams"):
        GraphSetSpec("cutie-test", (64, 96), max_streams=0)


def test_onnxruntime_pool_batches_streams_and_equals_solo_trackers(multi):
    from s3rt.runtime.backends.onnxrt import OnnxRuntimeBackend
    sessions = OnnxRuntimeBackend(multi.directory).opened
    pool, got, want = _run(lambda: OnnxRuntimeBackend(sessions), _events())
    _assert_same(got, want)
    assert max(b for (g, b) in pool.calls if g == "encoder") == 3  # 5 streams, calls of at most 3
    assert pool.calls[("fusion", 2)] + pool.calls[("fusion", 3)] > 0


def test_onnxruntime_refuses_a_batch_over_the_graph_set(multi):
    from s3rt.runtime.backends.onnxrt import OnnxRuntimeBackend
    backend = OnnxRuntimeBackend(multi.directory)
    import torch
    with pytest.raises(ValueError, match="batch of 1..3"):
        backend.run("encoder", {"image": torch.zeros(4, 3, H, W)})
    with pytest.raises(ValueError, match=r"max_batch=4"):
        StreamPool(backend=backend, max_batch=4)


def test_a_one_stream_graph_set_serves_a_pool_one_stream_per_call(tmp_path_factory):
    from s3rt.runtime.backends.onnxrt import OnnxRuntimeBackend
    exported = shared_export(tmp_path_factory, "cutie-test")
    assert exported.spec.max_streams == 1 and exported.spec.graph_batch == 1
    sessions = OnnxRuntimeBackend(exported.directory).opened
    events = {k: v for k, v in _events().items() if k in (0, 1)}
    pool, got, want = _run(lambda: OnnxRuntimeBackend(sessions), events)
    _assert_same(got, want)
    assert {b for (_, b) in pool.calls} == {1}
