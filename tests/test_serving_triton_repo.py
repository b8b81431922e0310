"""s3rt triton-repo: the repository it writes, its config.pbtxt checked with Triton's ModelConfig
protobuf, and the Python-backend model's logic driven without a server (a stand-in for Triton's
`triton_python_backend_utils`). The real server: tests/test_serving_triton.py."""

import json
import types

import numpy as np
import pytest

from s3rt.cli import main as cli
from s3rt.model import build_model
from s3rt.runtime.tracker import Tracker
from s3rt.serving.triton_model import TritonPythonModel
from s3rt.serving.triton_repo import RepoError, RepoOptions, config_pbtxt, parse_config, write_repository
from s3rt.synthetic import make_clip

pytest.importorskip("tritonclient.grpc.model_config_pb2")


def test_config_is_a_valid_model_config_with_the_sequence_batcher():
    from tritonclient.grpc import model_config_pb2 as mc
    cfg = parse_config(config_pbtxt(RepoOptions(max_candidate_sequences=6, idle_timeout_s=2.5, output_prob=True,
                                                preferred_batch_size=[4, 6], instance_kind="gpu", gpus=[0, 1])))
    assert cfg.backend == "python" and cfg.max_batch_size == 6
    sb = cfg.sequence_batching
    assert sb.WhichOneof("strategy_choice") == "oldest"
    assert sb.oldest.max_candidate_sequences == 6 and list(sb.oldest.preferred_batch_size) == [4, 6]
    assert sb.max_sequence_idle_microseconds == 2_500_000
    kinds = {c.name: c.control[0].kind for c in sb.control_input}
    C = mc.ModelSequenceBatching.Control
    assert kinds == {"START": C.CONTROL_SEQUENCE_START, "END": C.CONTROL_SEQUENCE_END,
                     "READY": C.CONTROL_SEQUENCE_READY, "CORRID": C.CONTROL_SEQUENCE_CORRID}
    assert [(g.kind, list(g.gpus)) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, [0]),
                                                                     (mc.ModelInstanceGroup.KIND_GPU, [1])]
    assert {i.name: i.optional for i in cfg.input} == {"IMAGE": False, "MASK": True}
    assert [o.name for o in cfg.output] == ["MASK_OUT", "OBJECT_IDS", "PROB"]
    with pytest.raises(RepoError, match="ModelConfig"):
        parse_config("max_batch_size: -x")


def test_cli_writes_a_repository_and_refuses_bad_options(tmp_path, capsys):
    out = tmp_path / "repo"
    assert cli(["triton-repo", "--preset", "cutie-test", "--out", str(out), "--idle-timeout", "3",
                "--max-candidate-sequences", "4", "--size", "-1"]) == 0
    model = out / "s3rt_stream"
    cfg = parse_config((model / "config.pbtxt").read_text())
    assert cfg.sequence_batching.max_sequence_idle_microseconds == 3_000_000
    assert (model / "1" / "model.py").read_text().count("import TritonPythonModel") == 1
    opts = json.loads((model / "1" / "s3rt_stream.json").read_text())
    assert opts["backend"] == "torch" and opts["tracker"] == {"size": -1, "mem_every": 5}
    assert cli(["triton-repo", "--preset", "cutie-test", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli(["triton-repo", "--preset", "cutie-test", "--out", str(out), "--overwrite"]) == 0
    assert cli(["triton-repo", "--preset", "cutie-test", "--out", str(tmp_path / "x"),
                "--preferred-batch-size", "9"]) == 2
    assert cli(["triton-repo", "--export", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(RepoError, match="exactly one"):
        write_repository(tmp_path / "z", preset="cutie-test", graphs=tmp_path)


def test_repository_from_a_graph_set_copies_it(tmp_path_factory, tmp_path):
    from conftest import shared_export
    exported = shared_export(tmp_path_factory, "cutie-test")
    with pytest.warns(UserWarning, match="--max-streams 8"):
        out = write_repository(tmp_path / "repo", graphs=exported.directory)
    version = out / "s3rt_stream" / "1"
    assert (version / "graphs" / "manifest.json").is_file()
    assert json.loads((version / "s3rt_stream.json").read_text())["backend"] == "onnxruntime"


# ---- the model's logic, with a stand-in for triton_python_backend_utils -----------------------
class _T:
    def __init__(self, name, arr):
        self._name, self._arr = name, np.asarray(arr)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._arr


class _Response:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.err = error

    def has_error(self):
        return self.err is not None


PB = types.SimpleNamespace(Tensor=_T, InferenceResponse=_Response, TritonError=lambda msg: msg,
                           get_input_tensor_by_name=lambda req, name: req.get(name))


def _request(corrid, image, mask=None, start=0, end=0, ready=1):
    req = {"CORRID": _T("CORRID", np.array([[corrid]], np.uint64)), "START": _T("START", [[start]]),
           "END": _T("END", [[end]]), "READY": _T("READY", [[ready]]), "IMAGE": _T("IMAGE", image[None])}
    if mask is not None:
        req["MASK"] = _T("MASK", mask[None].astype(np.int32))
    return req


@pytest.fixture()
def served(tmp_path):
    opts = RepoOptions(idle_timeout_s=600, output_prob=True, tracker={"size": -1, "mem_every": 3})
    out = write_repository(tmp_path / "repo", preset="cutie-test", options=opts)
    m = TritonPythonModel(pb_utils=PB)
    config = {"sequence_batching": {"max_sequence_idle_microseconds": "600000000"},
              "output": [{"name": "MASK_OUT"}, {"name": "OBJECT_IDS"}, {"name": "PROB"}]}
    m.initialize({"model_config": json.dumps(config), "model_repository": str(out / "s3rt_stream"),
                  "model_version": "1"})
    return m


def test_model_serves_streams_like_solo_trackers_and_refuses_bad_requests(served):
    clips = [make_clip(6, 48, 64, 2, seed=60 + k) for k in range(3)]
    solo = [Tracker(build_model("cutie-test"), size=-1, mem_every=3) for _ in clips]
    for t in range(6):
        reqs = [_request(k + 1, f[t], m[0] if t == 0 else None, start=int(t == 0), end=int(t == 5))
                for k, (f, m) in enumerate(clips)]
        reqs.append(_request(0, clips[0][0][t], ready=0))  # a padding request: ignored
        if t == 2:
            reqs += [_request(99, clips[0][0][t]),  # unknown stream, no START
                     _request(7, clips[0][0][t][:40], clips[0][1][0][:40], start=1)]  # first frame: wrong size later
        responses = served.execute(reqs)
        assert len(responses) == len(reqs)
        for k, (f, m) in enumerate(clips):
            want = solo[k].step(f[t], m[0] if t == 0 else None, end=t == 5)
            r = responses[k]
            assert not r.has_error(), r.err
            assert np.array_equal(r.outputs["MASK_OUT"][0], want.mask)
            assert float(np.abs(r.outputs["PROB"][0] - want.prob.numpy()).max()) <= 1e-5
            assert list(r.outputs["OBJECT_IDS"][0]) == want.object_ids
        assert responses[3].outputs == {} and not responses[3].has_error()
        if t == 2:
            assert "no state" in responses[4].err
            assert not responses[5].has_error()
        if t == 3:  # stream 7 sends another size, then an id outside 1..255
            bad = served.execute([_request(7, clips[0][0][t]),
                                  _request(7, clips[0][0][t][:40], np.full((40, 64), 300), ready=1)])
            assert "frame size changed" in bad[0].err and "1..255" in bad[1].err
    assert served.evicted == 0 and sorted(served.pool.streams) == [7]  # the ended streams were freed on END


def test_model_frees_streams_idle_past_the_timeout(served):
    f, m = make_clip(2, 48, 64, 2, seed=70)
    assert not served.execute([_request(5, f[0], m[0], start=1)])[0].has_error()
    served.pool.last_used[5] -= 601
    r = served.execute([_request(6, f[0], m[0], start=1)])
    assert not r[0].has_error() and 5 not in served.pool and served.evicted == 1
    assert "no state" in served.execute([_request(5, f[1])])[0].err
    served.finalize()
    assert len(served.pool) == 0
