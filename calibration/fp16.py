"""FP16 graphs: the nodes outside the kept set compute in FP16, the kept ones in FP32, with Cast
nodes where the two meet and FP32 at every graph input and output.

This is the conversion ModelOpt's AutoCast performs (`modelopt.onnx.autocast`, which NVIDIA
names as the replacement for TensorRT's removed FP16 flag), written here so that it needs
nothing beyond `onnx` and the one ONNX Runtime the package installs (ModelOpt 0.47 pins
onnx 1.21 and onnxruntime-gpu 1.24; see the calibration package's docstring):

- which nodes stay FP32: the design's rules (`regions.classify`) plus AutoCast's data rules
  (`regions.out_of_range`: values beyond `data_max` = 512 on the calibration inputs, constants
  beyond 65504), decided by a reference run on recorded inputs as AutoCast's ReferenceRunner does;
- the graph: float initializers read only by FP16 nodes are stored in FP16 (shared ones get an
  FP16 copy); a tensor crossing between the two precisions gets one Cast per target type;
  graph inputs and outputs stay FP32 (AutoCast's `keep_io_types=True`), so the tracker's state
  buffers keep one dtype per tensor.

Ops that produce types of their own (Cast, Shape, Constant, ConstantOfShape, Range, ...) and ops
with no float tensor are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from s3rt.calibration.regions import constants, node_names

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
# ops left as they are: their output type is not their float input's
FIXED_TYPE_OPS = {"Cast", "CastLike", "Shape", "Size", "Constant", "ConstantOfShape", "Range", "NonZero", "EyeLike",
                  "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                  "If", "Loop", "Scan"}
# float inputs that are not the op's data type and stay FP32
FP32_SLOTS = {"Resize": {1, 2}, "Upsample": {1}}


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """tensor name -> ONNX element type, after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def fp16_candidates(model: onnx.ModelProto, types: dict[str, int]) -> list[str]:
    """Nodes that compute on float tensors and could run in FP16."""
    out = []
    for n in model.graph.node:
        if n.op_type in FIXED_TYPE_OPS:
            continue
        if any(types.get(t) == FLOAT for t in list(n.input) + list(n.output) if t):
            out.append(n.name)
    return out


def convert_to_fp16(model: onnx.ModelProto, keep: set[str] | dict) -> tuple[onnx.ModelProto, dict]:
    """A copy of `model` whose float nodes outside `keep` compute in FP16 (FP32 I/O).
    Returns (model, stats: fp16 / fp32 node counts, casts added)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if any(n.op_type in ("If", "Loop", "Scan") for n in model.graph.node):
        raise ValueError("graphs with subgraphs (If/Loop/Scan) are not supported by the FP16 conversion")
    node_names(model)
    types = elem_types(model)
    half = set(fp16_candidates(model, types)) - set(keep)
    g = model.graph
    graph_outputs = {o.name for o in g.output}
    graph_inputs = {i.name for i in g.input}
    inits = {i.name: i for i in g.initializer}
    consts = constants(model)
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant"}

    # 1. graph outputs made by FP16 nodes: the node writes <name>__fp16, a Cast makes <name>
    renamed = {}
    for n in g.node:
        if n.name in half:
            for k, o in enumerate(n.output):
                if o in graph_outputs and types.get(o) == FLOAT:
                    renamed[o] = o + "__fp16"
                    n.output[k] = renamed[o]
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in renamed:
                n.input[k] = renamed[i]
    for old, new in renamed.items():
        types[new] = types[old]

    # 2. the type each tensor has after conversion
    producer = {o: n for n in g.node for o in n.output if o}
    is_half = {}
    for t, ty in types.items():
        if ty != FLOAT:
            continue
        p = producer.get(t)
        is_half[t] = p is not None and p.name in half and p.op_type != "Constant"

    # float initializers / Constant values read only by FP16 nodes (in FP16 slots) become FP16
    readers: dict[str, list[tuple]] = {}
    for n in g.node:
        for k, i in enumerate(n.input):
            if i:
                readers.setdefault(i, []).append((n, k))

    def wants_half(n, k) -> bool:
        return n.name in half and k not in FP32_SLOTS.get(n.op_type, ())

    for name in list(inits) + list(const_nodes):
        if types.get(name) != FLOAT or name in graph_inputs:
            continue
        uses = readers.get(name, [])
        if uses and all(wants_half(n, k) for n, k in uses):
            arr = consts[name].astype(np.float16)
            if name in inits:
                inits[name].CopyFrom(numpy_helper.from_array(arr, name))
            else:
                for a in const_nodes[name].attribute:
                    if a.name == "value":
                        a.t.CopyFrom(numpy_helper.from_array(arr, name))
            is_half[name] = True

    # 3. Casts where a reader wants the other precision (one per tensor and target type)
    casts: dict[tuple[str, int], str] = {}
    new_nodes = []
    for n in g.node:
        for k, i in enumerate(n.input):
            if not i or types.get(i) != FLOAT and i not in is_half:
                continue
            if types.get(i) != FLOAT:
                continue
            want_half = wants_half(n, k)
            have_half = is_half.get(i, False)
            if want_half == have_half:
                continue
            to = HALF if want_half else FLOAT
            key = (i, to)
            if key not in casts:
                if i in inits and to == HALF and i not in graph_inputs:  # a shared weight: an FP16 copy
                    cname = f"{i}__fp16"
                    g.initializer.append(numpy_helper.from_array(consts[i].astype(np.float16), cname))
                else:
                    cname = f"{i}__to_{'fp16' if to == HALF else 'fp32'}"
                    new_nodes.append((n, helper.make_node("Cast", [i], [cname], to=to, name=f"Cast_{cname}")))
                casts[key] = cname
            n.input[k] = casts[key]
    # insert each Cast right before its first reader (keeps the node list topologically sorted)
    order = list(g.node)
    first_reader = {}
    for reader, cast in new_nodes:
        first_reader.setdefault(id(reader), []).append(cast)
    rebuilt = []
    for n in order:
        rebuilt.extend(first_reader.get(id(n), []))
        rebuilt.append(n)
    for old, new in renamed.items():
        rebuilt.append(helper.make_node("Cast", [new], [old], to=FLOAT, name=f"Cast_{old}__output"))
    del g.node[:]
    g.node.extend(rebuilt)

    # 4. types: drop stale value_info and infer again
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    stats = {"fp16_nodes": len(half), "fp32_nodes": sum(1 for n in order if n.name not in half),
             "casts": len(casts) - sum(1 for (i, to) in casts if i in inits) + len(renamed),
             "fp16_weight_bytes": sum(i.ByteSize() for i in g.initializer if i.data_type == HALF)}
    return model, stats
