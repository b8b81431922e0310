"""Running graphs in ONNX Runtime on recorded inputs: the value ranges of every tensor (the
FP16 reference run) and a converted graph's outputs against the FP32 graph's."""

from __future__ import annotations

import math

import numpy as np
import onnx


def _session(model: onnx.ModelProto, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def tensor_ranges(model: onnx.ModelProto, samples: list[dict], types: dict[str, int]) -> dict[str, float]:
    """max |value| of every float tensor of `model` over `samples` (inf where one is not
    finite): the reference run that decides which nodes must stay FP32."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in m.graph.output}
    names = []
    for n in m.graph.node:
        for o in n.output:
            if o and types.get(o) == onnx.TensorProto.FLOAT and o not in have and n.op_type != "Constant":
                m.graph.output.append(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
                have.add(o)
    names = [o.name for o in m.graph.output]
    sess = _session_unoptimized(m)
    ranges: dict[str, float] = {}
    for s in samples:
        feeds = {i.name: s[i.name] for i in m.graph.input}
        for name, v in zip(names, sess.run(names, feeds)):
            v = np.asarray(v)
            if v.dtype.kind != "f" or v.size == 0:
                continue
            r = float(np.abs(v).max()) if np.isfinite(v).all() else math.inf
            ranges[name] = max(ranges.get(name, 0.0), r)
    for i in m.graph.input:  # graph inputs
        for s in samples:
            v = np.asarray(s[i.name])
            if v.dtype.kind == "f" and v.size:
                r = float(np.abs(v).max()) if np.isfinite(v).all() else math.inf
                ranges[i.name] = max(ranges.get(i.name, 0.0), r)
    return ranges


def _session_unoptimized(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def compare_outputs(model: onnx.ModelProto, samples) -> dict:
    """Run `model` on recorded samples (calibration.record.Sample) and compare each output with
    the FP32 graph's: max |Δ| relative to the output's scale (max |FP32|), relative L2 error,
    and whether every value is finite."""
    sess = _session(model)
    names = [o.name for o in model.graph.output]
    acc: dict[str, dict] = {}
    for s in samples:
        feeds = {i.name: s.inputs[i.name] for i in model.graph.input}
        for name, got in zip(names, sess.run(names, feeds)):
            ref = np.asarray(s.outputs[name], dtype=np.float64)
            got = np.asarray(got, dtype=np.float64)
            a = acc.setdefault(name, {"max_abs": 0.0, "max_rel": 0.0, "rel_l2": 0.0, "finite": True, "calls": 0})
            a["calls"] += 1
            if not np.isfinite(got).all():
                a["finite"] = False
                a["max_abs"] = a["max_rel"] = a["rel_l2"] = math.inf
                continue
            d = np.abs(ref - got)
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            max_abs = float(d.max()) if d.size else 0.0
            norm = float(np.linalg.norm(ref))
            a["max_abs"] = max(a["max_abs"], max_abs)
            a["max_rel"] = max(a["max_rel"], max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf))
            a["rel_l2"] = max(a["rel_l2"], float(np.linalg.norm(ref - got)) / norm if norm > 0 else 0.0)
    return acc
