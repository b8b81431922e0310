"""INT8 graphs: explicit, symmetric Q/DQ (QuantizeLinear / DequantizeLinear) as TensorRT's
strongly typed networks want them, calibrated on recorded inputs.

The tool is ONNX Runtime's static quantizer (`onnxruntime.quantization.quantize_static`,
QDQ format), which ships inside the one ONNX Runtime distribution the package installs. It is
also what NVIDIA ModelOpt's INT8 ONNX path runs underneath (modelopt/onnx/quantization/int8.py
calls `quantize_static` with "TensorRT-guided" options); the options below are those:

- int8 activations and weights, symmetric (zero point 0), weights per output channel
  (Conv axis 0, ConvTranspose axis 1, MatMul/Gemm on the weight's output axis);
- Q/DQ on the inputs of the chosen ops only, not on their outputs (`OpTypesToExcludeOutputQuantization`
  = every op type; TensorRT fuses Q/DQ into the following op), biases stay FP32 (`QuantizeBias`
  False); `qdq_outputs=True` also quantizes the outputs, which ONNX Runtime's CPU provider needs
  to fuse DQ -> Conv -> Q into its int8 QLinearConv kernel (faster on a CPU, one more rounding);
- calibration `minmax` (the max of |x|, symmetric), `entropy` (ModelOpt's default) or `percentile`.

Only the nodes passed in `nodes` are quantized (the caller picks them: op types, and never the
GRU, the summarizer or the prediction head); the rest of the graph stays as it was (FP32).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path

import onnx

from s3rt.calibration.regions import constants, node_names

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
WEIGHTED_OP_TYPES = DEFAULT_OP_TYPES
# weight-less ops that may go INT8 too (--int8-ops): quantizing the residual Add, pooling and
# concatenation keeps a whole convolutional trunk in int8 (ONNX Runtime's CPU kernels need that to
# gain speed; TensorRT recommends Q/DQ on the residual Add's inputs for the same fusion)
EXTRA_OP_TYPES = ("Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Mul", "Relu", "Resize")
OP_TYPES = DEFAULT_OP_TYPES + EXTRA_OP_TYPES


def quantizable_nodes(model: onnx.ModelProto, op_types, exclude=()) -> list[str]:
    """Nodes of `op_types` to quantize, minus `exclude`: Conv/ConvTranspose/Gemm/MatMul only with
    a constant weight input (a MatMul of two activations, e.g. attention, is not taken), the
    weight-less types (EXTRA_OP_TYPES) all."""
    node_names(model)
    consts = constants(model)
    exclude = set(exclude)
    out = []
    for n in model.graph.node:
        if n.op_type not in op_types or n.name in exclude:
            continue
        if n.op_type not in WEIGHTED_OP_TYPES:
            out.append(n.name)
            continue
        weight = n.input[1] if len(n.input) > 1 else ""
        if weight in consts and consts[weight].dtype.kind == "f":
            out.append(n.name)
    return out


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over recorded inputs."""

    def __init__(self, samples, input_names):
        self._it = iter([{k: s[k] for k in input_names} for s in samples])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not used by quantize_static
        raise NotImplementedError


TARGETS = ("tensorrt", "cpu")


def quantize(model: onnx.ModelProto, samples: list[dict], nodes: list[str], *, method: str = "entropy",
             qdq_outputs: bool = False, target: str = "tensorrt", exclude=(),
             workdir: str | os.PathLike | None = None) -> onnx.ModelProto:
    """The model with Q/DQ before `nodes` (see the module docstring), calibrated on `samples`
    (dicts of input name -> float32/bool numpy arrays).

    target 'cpu': ONNX Runtime's x86 format instead of TensorRT's: uint8 activations with a zero
    point (asymmetric), int8 symmetric per-channel weights, Q/DQ on inputs and outputs, every op
    type ONNX Runtime can quantize except the `exclude` nodes. Its CPU int8 kernels use the u8 x s8
    dot-product instructions; symmetric int8 activations run no faster than FP32 there. TensorRT
    does not take it (zero points must be 0)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not nodes:
        raise ValueError("no node to quantize")
    if not samples:
        raise ValueError("no calibration samples")
    node_names(model)
    op_types = sorted({n.op_type for n in model.graph.node if n.name in set(nodes)})
    every_type = sorted({n.op_type for n in model.graph.node})
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "DedicatedQDQPair": False,
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
        "MatMulConstBOnly": True,
        "CalibMovingAverage": False,
    }
    if not qdq_outputs:
        extra["OpTypesToExcludeOutputQuantization"] = every_type
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    act_type = QuantType.QInt8
    quantize_nodes, op_arg, exclude_arg = list(nodes), op_types, None
    if target == "cpu":
        act_type = QuantType.QUInt8
        extra["ActivationSymmetric"] = False
        extra.pop("OpTypesToExcludeOutputQuantization", None)
        quantize_nodes, op_arg, exclude_arg = None, None, list(exclude)
    input_names = [i.name for i in model.graph.input]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process goes to the root logger
    try:
        return _quantize_in(model, samples, workdir, input_names, op_arg, quantize_nodes, exclude_arg, act_type, calib,
                            extra)
    finally:
        root.setLevel(level)


def _quantize_in(model, samples, workdir, input_names, op_arg, quantize_nodes, exclude_arg, act_type, calib, extra):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(dir=workdir, prefix=".s3rt-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        large = model.ByteSize() > 1_800_000_000
        onnx.save(model, src, save_as_external_data=large)
        with contextlib.redirect_stdout(io.StringIO()):  # the entropy calibrator prints its progress
            quantize_static(str(src), str(dst), _Reader(samples, input_names), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=op_arg, nodes_to_quantize=quantize_nodes,
                            nodes_to_exclude=exclude_arg, per_channel=True, reduce_range=False,
                            activation_type=act_type, weight_type=QuantType.QInt8, calibrate_method=calib,
                            use_external_data_format=large, extra_options=extra)
        return onnx.load(str(dst))


def qdq_summary(model: onnx.ModelProto) -> dict:
    """What the Q/DQ graph holds: Q and DQ counts, int8 weights, and whether every scale's zero
    point is 0 (symmetric) and weight scales are per channel."""
    consts = constants(model)
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    zps = [consts[n.input[2]] for n in q + dq if len(n.input) > 2 and n.input[2] in consts]
    weights = [n for n in dq if n.input[0] in consts]
    per_channel = [n for n in weights if consts[n.input[1]].size > 1]
    return {"quantize_linear": len(q), "dequantize_linear": len(dq),
            "symmetric": bool(zps) and all(int(abs(z).max()) == 0 for z in zps if z.size),
            "zero_point_types": sorted({str(z.dtype) for z in zps}),
            "int8_weights": len(weights), "per_channel_weights": len(per_channel)}
