"""Which ONNX operators the exported graphs may use: an allow-list for TensorRT 10 / 11.

The list is the ONNX-TensorRT parser's support matrix (onnx-tensorrt `docs/operators.md`,
TensorRT 10.x, opsets 9..24), narrowed by the project's own rules (docs/architecture.md):

- no data-dependent shapes and no control flow: NonZero, Unique, Compress, Loop, If, Scan and
  the sequence ops are refused (a graph must have static shapes apart from the object axis,
  so engines bind once and a frame can be captured in a CUDA graph);
- no Einsum (the parser accepts it, but explicit MatMuls fuse better; the exporter rewrites
  the summarizer's einsum as MatMuls);
- ScatterElements / ScatterND only without a reduction (TensorRT's scatter layer has none;
  ScatterElements-add goes through a plugin that fails when there are more indices than
  outputs, NVIDIA/TensorRT#3650, and ScatterND reductions are rejected by the parser);
- TopK with a constant K below 3840 and sorted=1; GridSample on 4-D inputs only;
  Resize without antialiasing and with the supported modes; convolution and pooling in
  1-D (the parser lifts them to 2-D), 2-D or 3-D, pooling without dilation; Reduce*/Squeeze/Unsqueeze axes constant; no DOUBLE tensors.

`check_model_ops(model)` returns the violations as readable strings (empty = fine); the
exporter refuses a graph with any, and the tests run it on every exported graph.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

# ONNX ops the TensorRT 10 parser supports (support matrix, "Y"), minus the ones refused above.
TENSORRT_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DepthToSpace DequantizeLinear Div Dropout Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod
Mul Neg Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear Range Reciprocal ReduceL1
ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize RMSNormalization RNN Round ScaledTanh ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
Unsqueeze Where Xor
""".split())

# Supported by TensorRT but refused here, with the reason shown to the user.
REFUSED_OPS = {
    "Einsum": "write the contraction as MatMul (explicit MatMuls fuse better in TensorRT)",
    "NonZero": "data-dependent output shape",
    "Unique": "unsupported by TensorRT and data-dependent",
    "Compress": "unsupported by TensorRT and data-dependent",
    "Loop": "control flow: keep graphs straight-line",
    "If": "control flow: keep graphs straight-line",
    "Scan": "control flow: keep graphs straight-line",
}

_REDUCE_OPS = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
               "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"}
_RESIZE_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
TOPK_MAX_K = 3840
MIN_OPSET, MAX_OPSET = 17, 24  # opset 17+: native LayerNormalization; TensorRT 10.13+ parses up to 24


@dataclass(frozen=True)
class OpReport:
    op_counts: dict[str, int]
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Constants:
    """Values of initializers and Constant nodes, to check that an input is build-time constant."""

    def __init__(self, graph: onnx.GraphProto):
        self.values: dict[str, np.ndarray | None] = {}
        for init in graph.initializer:
            # External data may not be loaded: only note that the name is constant.
            try:
                self.values[init.name] = numpy_helper.to_array(init) if init.data_location != 1 else None
            except Exception:  # noqa: BLE001 - a missing external file is checked elsewhere
                self.values[init.name] = None
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                value = _attr(node, "value")
                self.values[node.output[0]] = numpy_helper.to_array(value) if value is not None else None

    def is_constant(self, name: str) -> bool:
        return name in self.values

    def value(self, name: str):
        return self.values.get(name)


def _value_ranks(model: onnx.ModelProto) -> dict[str, int]:
    ranks = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
    for init in g.initializer:
        ranks[init.name] = len(init.dims)
    return ranks


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)}
    types.update({init.name: init.data_type for init in g.initializer})
    return types


def check_model_ops(model: onnx.ModelProto | str, *, allow_einsum: bool = False) -> OpReport:
    """Check every node of `model` (a ModelProto or a path) against the TensorRT allow-list and
    its restrictions. Shape information (value_info) is used where present: run
    `onnx.shape_inference.infer_shapes` first for the rank checks to see every tensor."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    g = model.graph
    consts = _Constants(g)
    ranks = _value_ranks(model)
    types = _value_types(model)
    violations: list[str] = []
    counts = Counter(n.op_type for n in g.node)

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        violations.append(f"opset {opset}: use an opset in {MIN_OPSET}..{MAX_OPSET}")
    for o in model.opset_import:
        if o.domain not in ("", "ai.onnx"):
            violations.append(f"custom operator domain {o.domain!r}: TensorRT would need a plugin")
    if model.functions:
        names = ", ".join(sorted({f.name for f in model.functions}))
        violations.append(f"model-local functions ({names}): inline them before building an engine")

    for name, elem in types.items():
        if elem in (onnx.TensorProto.DOUBLE, onnx.TensorProto.STRING, onnx.TensorProto.COMPLEX64,
                    onnx.TensorProto.COMPLEX128):
            violations.append(f"tensor {name!r} has type {onnx.TensorProto.DataType.Name(elem)}, which TensorRT "
                              "does not support")

    for node in g.node:
        op, label = node.op_type, f"{node.op_type} node {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            violations.append(f"{label}: custom domain {node.domain!r}")
            continue
        if op in REFUSED_OPS and not (op == "Einsum" and allow_einsum):
            violations.append(f"{label}: {REFUSED_OPS[op]}")
            continue
        if op not in TENSORRT_OPS and op != "Einsum":
            violations.append(f"{label}: not in the TensorRT operator list")
            continue
        if op == "TopK":
            k_name = node.input[1] if len(node.input) > 1 else ""
            k = consts.value(k_name) if consts.is_constant(k_name) else None
            if not consts.is_constant(k_name):
                violations.append(f"{label}: K must be a constant (initializer), it is computed")
            elif k is not None and int(np.asarray(k).reshape(-1)[0]) >= TOPK_MAX_K:
                violations.append(f"{label}: K={int(np.asarray(k).reshape(-1)[0])} must be below {TOPK_MAX_K}")
            if _attr(node, "sorted", 1) != 1:
                violations.append(f"{label}: sorted must be 1")
        elif op == "GridSample":
            r = ranks.get(node.input[0])
            if r is not None and r != 4:
                violations.append(f"{label}: TensorRT supports 4-D GridSample only (input rank {r})")
        elif op in ("ScatterElements", "ScatterND"):
            red = _attr(node, "reduction", b"none")
            red = red.decode() if isinstance(red, bytes) else red
            if red != "none":
                violations.append(f"{label}: reduction={red!r} is not TensorRT-safe; scatter into a dense "
                                  "tensor without reduction (or compare-and-sum) instead")
        elif op == "Resize":
            if _attr(node, "antialias", 0):
                violations.append(f"{label}: antialiasing is not supported")
            mode = _attr(node, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in ("nearest", "linear"):
                violations.append(f"{label}: mode {mode!r} (TensorRT: nearest or linear)")
            ct = _attr(node, "coordinate_transformation_mode", b"half_pixel")
            ct = ct.decode() if isinstance(ct, bytes) else ct
            if ct not in _RESIZE_COORD_MODES:
                violations.append(f"{label}: coordinate_transformation_mode {ct!r} is not supported")
            if mode == "nearest":
                nm = _attr(node, "nearest_mode", b"round_prefer_floor")
                nm = nm.decode() if isinstance(nm, bytes) else nm
                if nm not in _NEAREST_MODES:
                    violations.append(f"{label}: nearest_mode {nm!r} is not supported")
            kar = _attr(node, "keep_aspect_ratio_policy", b"stretch")
            kar = kar.decode() if isinstance(kar, bytes) else kar
            if kar != "stretch":
                violations.append(f"{label}: keep_aspect_ratio_policy must be 'stretch'")
        elif op in ("AveragePool", "MaxPool", "LpPool"):
            r = ranks.get(node.input[0])
            if r is not None and r not in (3, 4, 5):  # the parser lifts 1-D pooling to 2-D
                violations.append(f"{label}: 1-D, 2-D or 3-D pooling only (input rank {r})")
            dil = _attr(node, "dilations")
            if dil and any(d != 1 for d in dil):
                violations.append(f"{label}: dilations must be 1")
            if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
                violations.append(f"{label}: the Indices output is not supported")
        elif op in ("Conv", "ConvTranspose"):
            r = ranks.get(node.input[0])
            if r is not None and r not in (3, 4, 5):  # the parser lifts 1-D convolutions to 2-D
                violations.append(f"{label}: 1-D, 2-D or 3-D convolutions only (input rank {r})")
        elif op in _REDUCE_OPS or op in ("Squeeze", "Unsqueeze"):
            if len(node.input) > 1 and node.input[1] and not consts.is_constant(node.input[1]):
                violations.append(f"{label}: axes must be a constant")
        elif op == "CumSum":
            if not consts.is_constant(node.input[1]):
                violations.append(f"{label}: axis must be a constant")
        elif op == "OneHot":
            if not consts.is_constant(node.input[1]):
                violations.append(f"{label}: depth must be a constant")
        elif op == "LayerNormalization":
            if len([o for o in node.output if o]) > 1:
                violations.append(f"{label}: only the first output (Y) is supported")
        elif op == "Dropout":
            if len(node.input) > 2 and node.input[2] and not consts.is_constant(node.input[2]):
                violations.append(f"{label}: training_mode must be a constant False")
    return OpReport(dict(sorted(counts.items())), violations)
