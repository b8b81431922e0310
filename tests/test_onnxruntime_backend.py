"""The ONNX Runtime backend: per-stream parity with the torch reference over a 30-frame clip,
provider fallback, and the checks that refuse a stream or a graph set before any work."""

import shutil
import warnings

import numpy as np
import pytest
import torch

from s3rt.export import export_graphs
from s3rt.graphs import ManifestError, load_manifest
from s3rt.model import build_model
from s3rt.parity import ParityOptions, run_parity
from s3rt.runtime.backends.onnxrt import OnnxRuntimeBackend, ProviderFallbackError
from s3rt.runtime.tracker import Tracker
from s3rt.synthetic import later_objects, make_clip

from conftest import EXPORT_SIZE as SIZE, shared_export  # noqa: E402


@pytest.fixture(scope="module")
def cutie(tmp_path_factory):
    return shared_export(tmp_path_factory, "cutie-test")


@pytest.fixture(scope="module")
def clip():
    # Objects 1 and 3 are in the first frame; object 2 enters later (given on its first frame).
    return make_clip(30, *SIZE, num_objects=3, seed=0)


class CountingBackend(OnnxRuntimeBackend):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls = 0

    def run(self, graph, inputs):
        self.calls += 1
        return super().run(graph, inputs)


@pytest.mark.parametrize("preset", ["cutie-test", "s3-test"])
def test_stream_parity_over_30_frames(preset, tmp_path_factory, clip):
    exported = shared_export(tmp_path_factory, preset)
    frames, masks = clip
    extra = later_objects(masks)
    assert extra, "the clip should add an object mid-video"
    report = run_parity(exported.directory, frames, masks[0], gt_masks=masks, extra_masks=extra,
                        options=ParityOptions(size=-1))
    s = report["stream"]
    assert s["frames"] == 30 and len(s["per_frame"]) == 30
    assert all(f["max_abs_prob"] <= 1e-4 for f in s["per_frame"]), s["max_abs_prob"]
    assert s["min_mask_iou"] > 0.99
    assert set(report["graphs"]) == {"encoder", "readout", "fusion", "decoder", "mask_encoder"}
    assert all(g["pass"] and g["max_rel"] < 1e-5 for g in report["graphs"].values()), report["graphs"]
    assert report["passed"] and not report["failures"]
    assert report["jf"]["torch"]["J&F"] == pytest.approx(report["jf"]["onnxruntime"]["J&F"], abs=0.01)


def test_tracker_selects_the_backend_by_name(cutie, clip):
    frames, masks = clip
    t = Tracker(backend="onnxruntime", graphs=cutie.directory, size=-1)
    assert isinstance(t.backend, OnnxRuntimeBackend) and t.cfg == cutie.config()
    assert t.backend.spec == cutie.spec and t.top_k == 30 and t.backend.model_config.name == "cutie-test"
    ref = Tracker(build_model("cutie-test"), size=-1)
    for i in range(6):
        a, b = t.step(frames[i], masks[0] if i == 0 else None), ref.step(frames[i], masks[0] if i == 0 else None)
        assert float((a.prob - b.prob).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="needs a graph set"):
        Tracker(backend="onnxruntime")


def test_io_binding_and_plain_run_agree(cutie):
    from s3rt.graphs import example_inputs, graph_io

    a = OnnxRuntimeBackend(cutie.directory, spinning=False)
    b = OnnxRuntimeBackend(cutie.directory, io_binding=False, spinning=False)
    io = graph_io(cutie.config(), SIZE, 1, cutie.memory_tokens)
    for graph in ("readout", "decoder"):
        x = example_inputs(io[graph][0], 2)
        ra, rb = a.run(graph, x), b.run(graph, x)
        for k in ra:
            assert torch.equal(ra[k], rb[k])
    x = example_inputs(io["decoder"][0], 2)
    x["sensory"] = x["sensory"][:, :, :, :-1]
    with pytest.raises(ValueError, match="sensory has shape"):
        a.run("decoder", x)


def test_provider_fallback_warns_or_fails(cutie):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider.*CPU instead"):
        b = OnnxRuntimeBackend(cutie.directory, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert b.providers == ["CPUExecutionProvider"] and "CPUExecutionProvider" in b.describe()
    with pytest.raises(ProviderFallbackError, match="CUDAExecutionProvider.*strict_providers"):
        OnnxRuntimeBackend(cutie.directory, providers=["CUDAExecutionProvider"], strict_providers=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxRuntimeBackend(cutie.directory)  # CPU as requested: no warning


def test_stream_that_does_not_fit_is_refused_before_any_work(cutie, clip):
    frames, masks = clip
    # a frame of another resolution, not resized to the export's
    b = CountingBackend(cutie.directory)
    big = np.zeros((96, 128, 3), np.uint8)
    with pytest.raises(ValueError, match=r"96x128.*made for 64x96.*--size 96x128"):
        Tracker(backend=b, size=-1).step(big, np.pad(masks[0], ((0, 32), (0, 32))))
    assert b.calls == 0
    # more objects than --max-objects
    four = masks[0].copy()
    four[:4, :4], four[-4:, -4:] = 2, 4
    with pytest.raises(ValueError, match="4 objects.*--max-objects 4"):
        Tracker(backend=b, size=-1).step(frames[0], four)
    assert b.calls == 0
    assert b.calls == 0
    # objects added later beyond the limit are refused too, before the tracker's state changes
    t = Tracker(backend=b, size=-1)
    t.step(frames[0], masks[0])
    with pytest.raises(ValueError, match="--max-objects 4"):
        t.step(frames[1], four, [2, 4])
    assert t.object_ids == [1, 3]


def test_graph_sets_that_do_not_match_their_manifest(cutie, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(cutie.directory, d)
    OnnxRuntimeBackend(d)  # intact copy: fine
    with pytest.raises(ManifestError, match="exported from preset 'cutie-test', not 's3-test'.*--preset"):
        OnnxRuntimeBackend(d, preset="s3-test")
    ckpt = tmp_path / "weights.pth"
    torch.save(build_model("cutie-test").state_dict(), ckpt)
    with pytest.raises(ManifestError, match="random, seed 0 weights, not from checkpoint"):
        load_manifest(d, checkpoint=ckpt)
    with open(d / "fusion.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="fusion.onnx does not match the manifest.*edited"):
        OnnxRuntimeBackend(d)
    (d / "fusion.onnx").unlink()
    with pytest.raises(ManifestError, match="fusion.onnx is missing"):
        OnnxRuntimeBackend(d)
    (d / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="no manifest.json"):
        OnnxRuntimeBackend(d)


@pytest.mark.parametrize("option, value, fix", [
    ("max_mem_frames", 3, "--max-mem-frames 3"), ("top_k", 10, "--top-k 10"), ("flip_aug", True, "--flip-aug"),
    ("use_long_term", True, "--long-term-tokens 10000"),
])
def test_options_the_graph_set_cannot_honour_are_refused(cutie, option, value, fix):
    """Unset options follow the graph set; a conflicting one names both values and the export that fits."""
    t = Tracker(backend=OnnxRuntimeBackend(cutie.directory), size=-1)
    assert (t.max_mem_frames, t.top_k, t.flip_aug, t.long_term) == (5, 30, False, None)
    name = {"use_long_term": "--long-term"}.get(option, "--" + option.replace("_", "-"))
    with pytest.raises(ValueError) as e:
        Tracker(backend=OnnxRuntimeBackend(cutie.directory), size=-1, **{option: value})
    msg = str(e.value)
    assert msg.startswith(name) and f"{option}={value}" in msg and "s3rt export" in msg and fix in msg
    Tracker(backend=OnnxRuntimeBackend(cutie.directory), size=-1, **{option: getattr(cutie.spec, option, False)})


def test_long_term_memory_runs_on_the_readout_graph(cutie, clip, tmp_path):
    """--long-term-tokens: the readout graph's `usage` output drives Cutie's consolidation. The
    other four graphs do not depend on the memory capacity, so only the readout is re-exported."""
    import dataclasses

    from s3rt.export.exporter import export_one

    d = tmp_path / "ltm"
    shutil.copytree(cutie.directory, d)
    m = load_manifest(d)
    m.spec = dataclasses.replace(m.spec, max_mem_frames=3, long_term_tokens=96)
    m.graphs["readout"] = export_one("readout", build_model("cutie-test"), m.spec, d, opset=m.opset)
    m.write(d)
    frames, masks = clip
    report = run_parity(d, frames, masks[0], extra_masks=later_objects(masks), options=ParityOptions(size=-1))
    assert report["passed"], report["failures"]
    # the tracker takes long-term memory from the graph set; consolidation happened
    t = Tracker(backend=OnnxRuntimeBackend(d), size=-1)
    assert t.long_term.max_num_tokens == 96 and t.max_mem_frames == 3
    for i in range(16):
        t.step(frames[i], masks[0] if i == 0 else None)
    assert t.banks[0].num_long_term_tokens > 0
    with pytest.raises(ValueError, match="--long-term.*use_long_term=False"):
        Tracker(backend=OnnxRuntimeBackend(d), size=-1, use_long_term=False)


class BrokenFusion(OnnxRuntimeBackend):
    """An 'export error': the fusion graph's output is off by 1e-3."""

    def run(self, graph, inputs):
        out = super().run(graph, inputs)
        if graph == "fusion":
            out["memory_readout"] = out["memory_readout"] + 1e-3
        return out


def test_parity_tells_an_export_error_from_model_sensitivity(cutie, clip):
    frames, masks = clip
    report = run_parity(cutie.directory, frames[:6], masks[0], options=ParityOptions(size=-1),
                        backend=BrokenFusion(cutie.directory, spinning=False))
    assert not report["passed"] and not report["explained"]
    fusion = report["graphs"]["fusion"]
    assert not fusion["pass"] and not fusion["explained"] and fusion["reference_jitter"] < 1e-4
    assert report["stream"]["diagnoses"]
    assert "export or runtime error" in report["stream"]["diagnoses"][0]["verdict"]
    assert "fusion" in report["stream"]["diagnoses"][0]["verdict"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cutie-base", "s3-base"])
def test_full_presets_at_480p(preset, tmp_path):
    """The full presets at DAVIS 480p (854x480 frames padded to 480x864): export (S3's encoder
    with its weights in a side file), then parity per graph and per stream on a short clip.

    With random weights many pixels sit near the model's hard decisions (the object
    transformer's foreground masks, top-k membership, S3's argmax query), where the reference
    itself jumps when its inputs move by 1e-6: there a 1e-7 rounding difference may exceed 1e-4.
    So: the smooth graphs must match to 1e-5 relative; every frame and graph beyond 1e-4 must be
    one the reference is itself discontinuous at (diagnosed on its own inputs); and the streams
    must agree on average."""
    frames, masks = make_clip(7, 480, 854, num_objects=3, seed=0)
    m = export_graphs(preset, tmp_path / "export", size=(480, 864), max_objects=2, progress=False)
    assert (m.graphs["encoder"].data_file is not None) == (preset == "s3-base")
    report = run_parity(m.directory, frames, masks[0], options=ParityOptions(size=480, max_diagnoses=7))
    assert report["objects"] == [1, 3] and report["stream"]["frames"] == 7
    for name in ("encoder", "decoder", "mask_encoder"):
        assert report["graphs"][name]["pass"] and report["graphs"][name]["max_rel"] < 1e-5, report["graphs"][name]
    s = report["stream"]
    assert report["passed"] or report["explained"], (report["failures"], s["diagnoses"])
    assert s["mean_abs_prob"] < 1e-4 and s["min_mask_iou"] > 0.95
