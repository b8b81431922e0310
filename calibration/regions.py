"""Which nodes of an exported graph stay in FP32, and why.

The exported graphs carry no module names on their nodes, only on their weights
(`net.mask_decoder.sensory_update.transform.weight`), so the parts the design keeps in FP32 are
found from the graph's structure:

| reason | nodes |
|---|---|
| `gru` | every node that reads a `sensory_update` weight, and everything downstream of them (the gates, up to `new_sensory`) |
| `summarizer` | nodes that read an `object_summarizer` weight, the MatMul half of each of its Linear layers, and everything downstream (up to `summaries`) |
| `prediction` | the final prediction conv (`mask_decoder.pred`) and everything downstream: upsampling, sigmoid, `aggregate`, softmax, `logits` / `prob` |
| `aggregate` | Cutie's `aggregate` elsewhere (the object transformer's masks): a ReduceProd, its `1 - p` input and the Concat/Clip/Div/Log (and Softmax) after it |
| `normalization` | LayerNormalization (and GroupNormalization / InstanceNormalization) |
| `softmax` | Softmax, LogSoftmax and TopK: the softmax statistics and the top-k selection before it |
| `statistics` | reductions (ReduceSum/Mean/Max/Min/L2/Prod/SumSquare), Pow, Sqrt, Exp, Log, Reciprocal: sums of squares and norms overflow or lose their small terms in FP16 |
| `range` | (FP16, from data like ModelOpt AutoCast's IORangeRule) a node whose input or output reached beyond `data_max` on the calibration inputs, or that reads a constant beyond FP16's range |

Everything here works on `onnx.ModelProto` objects and names; nothing is run.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

# reason -> what it means (written into the manifest's calibration record)
REASONS = {
    "gru": "the sensory GRU (sensory_update) and its gates",
    "summarizer": "the object summarizer",
    "prediction": "the final prediction conv and what follows it (aggregate, softmax, logits, prob)",
    "aggregate": "Cutie's aggregate (product of 1-p, clip, log-odds)",
    "normalization": "LayerNorm and other normalisations",
    "softmax": "softmax statistics and top-k",
    "statistics": "reductions, powers, roots, exp/log (sums of squares and norms)",
    "range": "values beyond data_max on the calibration inputs, or constants beyond FP16's range",
    "layout": "data movement (Transpose, Reshape, ...) that reads only FP32 tensors: the Cast to FP16 goes after it",
}
MOVE_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Gather", "Expand", "Tile",
            "Identity"}

NORM_OPS = {"LayerNormalization", "GroupNormalization", "InstanceNormalization", "LpNormalization"}
SOFTMAX_OPS = {"Softmax", "LogSoftmax", "TopK"}
STAT_OPS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceProd",
            "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "Pow", "Sqrt", "Exp", "Log", "Reciprocal"}
# The parts named by their weights: (reason, weight-name fragment).
WEIGHT_REGIONS = (("gru", "sensory_update"), ("summarizer", "object_summarizer"), ("prediction", "mask_decoder.pred."))
_AGGREGATE_FORWARD = {"Concat", "Clip", "Sub", "Div", "Log", "Softmax", "Unsqueeze", "Reshape", "Max", "Min"}


def node_names(model: onnx.ModelProto) -> list[str]:
    """Every node's name; unnamed nodes get one (`<op>_<index>`) so that lists can refer to them."""
    names = []
    seen = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
        names.append(n.name)
    return names


def _consumers(model):
    out = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            if i:
                out[i].append(n)
    return out


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output if o}


def _downstream(seeds, consumers) -> set[str]:
    """Names of the seed nodes and every node downstream of them."""
    done, todo = set(), list(seeds)
    while todo:
        n = todo.pop()
        if n.name in done:
            continue
        done.add(n.name)
        for o in n.output:
            todo.extend(consumers.get(o, []))
    return done


def classify(model: onnx.ModelProto) -> dict[str, str]:
    """node name -> reason, for the nodes the design keeps in FP32 (no data needed)."""
    node_names(model)
    consumers, producers = _consumers(model), _producers(model)
    keep: dict[str, str] = {}

    def mark(names, reason):
        for name in names:
            keep.setdefault(name, reason)

    for reason, fragment in WEIGHT_REGIONS:
        seeds = [n for n in model.graph.node if any(fragment in i for i in n.input)]
        # a Linear exports as MatMul(x, transposed weight constant) + Add(bias): take the MatMul too
        extra = []
        for n in seeds:
            for i in n.input:
                p = producers.get(i)
                if p is not None and p.op_type in ("MatMul", "Gemm"):
                    extra.append(p)
        mark(_downstream(seeds + extra, consumers), reason)

    for n in model.graph.node:
        if n.op_type != "ReduceProd":
            continue
        region = {n.name}
        p = producers.get(n.input[0]) if n.input else None
        if p is not None and p.op_type in ("Sub", "Neg"):  # 1 - p
            region.add(p.name)
        todo, depth = [(n, 0)], {}
        while todo:
            cur, d = todo.pop()
            for o in cur.output:
                for c in consumers.get(o, []):
                    if c.op_type in _AGGREGATE_FORWARD and d < 6 and c.name not in region:
                        region.add(c.name)
                        if c.op_type != "Softmax":
                            todo.append((c, d + 1))
        mark(region, "aggregate")

    for n in model.graph.node:
        if n.op_type in NORM_OPS:
            mark([n.name], "normalization")
        elif n.op_type in SOFTMAX_OPS:
            mark([n.name], "softmax")
        elif n.op_type in STAT_OPS:
            mark([n.name], "statistics")
    return keep


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node values by name."""
    vals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def out_of_range(model: onnx.ModelProto, ranges: dict[str, float], data_max: float,
                 init_max: float = float(np.finfo(np.float16).max)) -> dict[str, str]:
    """node name -> 'range' for nodes whose float inputs or outputs reached beyond `data_max`
    (`ranges`: tensor name -> max |value| seen on the calibration inputs, inf for non-finite),
    or that read a float constant beyond `init_max` (ModelOpt AutoCast's IORangeRule and
    InitializerRangeRule, with its defaults 512 and 65504)."""
    node_names(model)
    consts = constants(model)
    keep = {}
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        tensors = [t for t in list(n.input) + list(n.output) if t]
        if any(ranges.get(t, 0.0) > data_max for t in tensors if t not in consts):
            keep[n.name] = "range"
            continue
        for t in n.input:
            v = consts.get(t)
            if v is not None and v.dtype.kind == "f" and v.size and float(np.abs(v).max()) > init_max:
                keep[n.name] = "range"
                break
    return keep


def layout_followers(model: onnx.ModelProto, keep: dict[str, str], float_tensors: set[str]) -> dict[str, str]:
    """node name -> 'layout' for data-movement nodes whose float inputs all come from FP32
    (kept nodes or graph inputs), in graph order so that chains follow. Moving the Cast past
    them keeps each FP16 region starting at a compute node; it also avoids an ONNX Runtime 1.32
    CPU crash (NchwcTransformer with constant folding) on LayerNorm -> Cast -> Transpose -> MatMul."""
    node_names(model)
    producers = _producers(model)
    consts = set(constants(model))
    fp32 = dict(keep)
    added = {}
    for n in model.graph.node:
        if n.op_type not in MOVE_OPS or n.name in fp32:
            continue
        data = [i for i in n.input[:1] if i and i in float_tensors and i not in consts]
        if data and all(producers.get(i) is None or producers[i].name in fp32 for i in data):
            fp32[n.name] = added[n.name] = "layout"
    return added


def group(keep: dict[str, str]) -> dict[str, list[str]]:
    """reason -> sorted node names (the manifest's `kept_fp32`)."""
    out: dict[str, list[str]] = defaultdict(list)
    for name, reason in keep.items():
        out[reason].append(name)
    return {r: sorted(v) for r, v in sorted(out.items())}
