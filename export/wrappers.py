"""Thin export wrappers: one nn.Module per graph of `s3rt.runtime.graphs.GRAPHS`.

Each wrapper calls the network's own per-frame step (`VOSNetwork.encode_image`, ...) with the
contract's inputs in the contract's order and returns the contract's outputs in order; the
only code of its own is the readout, which is the reference readout
(`s3rt.model.memory_readout.memory_readout`) written in TensorRT-friendly operators:

- the similarity is the reference `similarity`, laid out pixels x memory [B,P,M] and computed
  as one MatMul (`ReadoutGraph.similarity_pm`), so that TopK runs along the contiguous axis;
- invalid memory slots get -inf (an added bias) before TopK (k = top_k, a constant), so they
  never win;
- the k selected values are gathered with one flat Gather (`index_select` over B*M rows)
  instead of advanced indexing, and summed with their softmax weights by a batched MatMul;
- `usage` (summed softmax weight per memory slot, for long-term memory) is a ScatterElements
  *without* reduction into a dense [B,P,M] tensor, then a sum over pixels. Within one pixel's
  row the k indices are distinct, so no reduction is needed; TensorRT's scatter layer has
  no reduction and ScatterElements-add is not TensorRT-safe. The dense tensor is the size of
  the similarity matrix the graph already holds (about 12 ms of 90 at 480p on 2 cores).

`graph_io(...)` is the contract with shapes: symbolic object axis `num_objects`, everything
else fixed by the export (padded resolution, batch, memory capacity).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from unittest import mock

import torch
import torch.nn as nn

from s3rt.model.config import ModelConfig
from s3rt.model.network import VOSNetwork
from s3rt.runtime.graphs import GRAPHS

OBJECT_AXIS = "num_objects"


# ---------------------------------------------------------------------------- the wrappers
class EncoderGraph(nn.Module):
    def __init__(self, net: VOSNetwork):
        super().__init__()
        self.net = net

    def forward(self, image):
        return tuple(self.net.encode_image(image))


class ReadoutGraph(nn.Module):
    """The memory readout over a fixed-capacity, valid-masked memory (see the module docstring)."""

    def __init__(self, top_k: int):
        super().__init__()
        self.top_k = int(top_k)

    def forward(self, key, selection, mem_key, mem_shrinkage, mem_values, mem_valid):
        b, c, h, w = key.shape
        n, v, m = mem_values.shape[1:]
        p = h * w
        sim = self.similarity_pm(key.flatten(2), selection.flatten(2), mem_key, mem_shrinkage)  # [B,P,M]
        # Invalid slots: + (-inf), a [B,1,M] bias broadcast in one Add (cheaper than a broadcast Where).
        sim = sim + torch.where(mem_valid.unsqueeze(1), 0.0, float("-inf"))
        k = min(self.top_k, m)
        top, idx = torch.topk(sim, k=k, dim=2)  # [B,P,k]
        weights = torch.softmax(top, dim=2)
        flat_values = mem_values.reshape(b, n * v, m).transpose(1, 2).reshape(b * m, n * v)
        rows = idx + (torch.arange(b, device=idx.device) * m).view(b, 1, 1)
        gathered = flat_values.index_select(0, rows.reshape(-1)).view(b * p, k, n * v)
        out = (weights.reshape(b * p, 1, k) @ gathered).view(b, p, n * v)  # weighted sum of the k values
        readout = out.transpose(1, 2).reshape(b, n, v, h, w)
        # A zero base that depends on an input (so it is not folded into a [B,P,M] constant).
        base = (mem_valid.to(sim.dtype) * 0).unsqueeze(1).expand(b, p, m)
        usage = base.scatter(2, idx, weights).sum(1)
        return readout, usage

    @staticmethod
    def similarity_pm(query_key, query_selection, mem_key, mem_shrinkage):
        """The reference `similarity` (-(s_m / sqrt(C)) * sum_c e_pc (k_mc - q_pc)^2), transposed to
        [B,P,M] and computed as ONE MatMul: the three terms of the expanded square and the
        shrinkage / sqrt(C) scale are folded into a [B,M,2C+1] memory-side matrix,
            [s*k^2, s*k, s] @ [-e ; 2*e*q ; -sum_c e*q^2]   (s = shrinkage / sqrt(C)),
        instead of three MatMuls and five passes over the [M,P] matrix. Same sum, other rounding
        (relative differences ~1e-7, as between any two GEMM libraries)."""
        c = mem_key.shape[1]
        scale = mem_shrinkage.transpose(1, 2) / math.sqrt(c)  # [B,M,1]
        mk = mem_key.transpose(1, 2)  # [B,M,C]
        mem_side = torch.cat([mk.pow(2) * scale, mk * scale, scale], 2)  # [B,M,2C+1]
        query_side = torch.cat([-query_selection, 2 * (query_key * query_selection),
                                -(query_selection * query_key.pow(2)).sum(1, keepdim=True)], 1)  # [B,2C+1,P]
        return query_side.transpose(1, 2) @ mem_side.transpose(1, 2)


class FusionGraph(nn.Module):
    def __init__(self, net: VOSNetwork):
        super().__init__()
        self.net = net

    def forward(self, pix_feat, readout, sensory, last_mask, obj_memory):
        fused = self.net.pixel_fusion(pix_feat, readout, sensory, last_mask)
        return self.net.readout_query(fused, obj_memory)


class DecoderGraph(nn.Module):
    def __init__(self, net: VOSNetwork):
        super().__init__()
        self.net = net

    def forward(self, f8, f4, memory_readout, sensory):
        new_sensory, logits, prob = self.net.segment(f8, f4, memory_readout, sensory)
        return logits, prob, new_sensory


class MaskEncoderGraph(nn.Module):
    def __init__(self, net: VOSNetwork):
        super().__init__()
        self.net = net

    def forward(self, image, pix_feat, sensory, masks):
        return tuple(self.net.encode_mask(image, pix_feat, sensory, masks))


def make_wrapper(graph: str, net: VOSNetwork, top_k: int) -> nn.Module:
    if graph == "encoder":
        return EncoderGraph(net).eval()
    if graph == "readout":
        return ReadoutGraph(top_k).eval()
    if graph == "fusion":
        return FusionGraph(net).eval()
    if graph == "decoder":
        return DecoderGraph(net).eval()
    if graph == "mask_encoder":
        return MaskEncoderGraph(net).eval()
    raise KeyError(f"unknown graph {graph!r}; graphs are {', '.join(GRAPHS)}")


# ------------------------------------------------------------------------ I/O with shapes
@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints, or "num_objects" / "num_objects + 1"
    dtype: str  # "float32" or "bool"

    def concrete(self, num_objects: int) -> tuple[int, ...]:
        return tuple(eval_dim(d, num_objects) for d in self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def eval_dim(dim, num_objects: int) -> int:
    """A manifest dimension: an int, 'num_objects' or 'num_objects + c'."""
    if isinstance(dim, int):
        return dim
    text = str(dim).replace(" ", "")
    if text == OBJECT_AXIS:
        return num_objects
    if text.startswith(OBJECT_AXIS + "+") and text[len(OBJECT_AXIS) + 1:].isdigit():
        return num_objects + int(text[len(OBJECT_AXIS) + 1:])
    raise ValueError(f"cannot evaluate the dimension {dim!r} (expected an int, {OBJECT_AXIS!r} or "
                     f"'{OBJECT_AXIS} + c')")


def graph_io(cfg: ModelConfig, padded_size: tuple[int, int], batch: int, memory_tokens: int,
             ) -> dict[str, tuple[list[TensorInfo], list[TensorInfo]]]:
    """The five contracts with shapes, for one export (names from `GRAPHS`)."""
    H, W = padded_size
    h, w = H // 16, W // 16
    B, M, N = batch, memory_tokens, OBJECT_AXIS
    c16, c8, c4 = cfg.ms_dims
    f, b = "float32", "bool"
    shapes = {
        "image": (B, 3, H, W), "f16": (B, c16, h, w), "f8": (B, c8, 2 * h, 2 * w), "f4": (B, c4, 4 * h, 4 * w),
        "pix_feat": (B, cfg.pixel_dim, h, w), "key": (B, cfg.key_dim, h, w), "shrinkage": (B, 1, h, w),
        "selection": (B, cfg.key_dim, h, w),
        "mem_key": (B, cfg.key_dim, M), "mem_shrinkage": (B, 1, M), "mem_values": (B, N, cfg.value_dim, M),
        "mem_valid": (B, M), "readout": (B, N, cfg.value_dim, h, w), "usage": (B, M),
        "sensory": (B, N, cfg.sensory_dim, h, w), "last_mask": (B, N, H, W),
        "obj_memory": (B, N, cfg.num_queries, cfg.embed_dim + 1), "memory_readout": (B, N, cfg.embed_dim, h, w),
        "logits": (B, f"{N} + 1", H, W), "prob": (B, f"{N} + 1", H, W), "new_sensory": (B, N, cfg.sensory_dim, h, w),
        "masks": (B, N, H, W), "values": (B, N, cfg.value_dim, h, w),
        "summaries": (B, N, cfg.num_queries, cfg.embed_dim + 1),
    }
    out = {}
    for name, spec in GRAPHS.items():
        out[name] = ([TensorInfo(i, shapes[i], b if i == "mem_valid" else f) for i in spec.inputs],
                     [TensorInfo(o, shapes[o], f) for o in spec.outputs])
    return out


def example_inputs(inputs: list[TensorInfo], num_objects: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible random inputs (masks in [0,1], shrinkage >= 1, about half the memory valid)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in inputs:
        shape = t.concrete(num_objects)
        if t.dtype == "bool":
            valid = torch.rand(shape, generator=g) > 0.5
            valid[..., 0] = True
            out[t.name] = valid
        elif t.name in ("image", "last_mask", "masks", "selection"):
            out[t.name] = torch.rand(shape, generator=g)
        elif t.name in ("shrinkage", "mem_shrinkage"):
            out[t.name] = 1 + torch.rand(shape, generator=g)
        elif t.name == "obj_memory":
            x = torch.rand(shape, generator=g)
            x[..., -1] = x[..., -1] * 10 + 1  # the area channel
            out[t.name] = x
        else:
            out[t.name] = torch.randn(shape, generator=g)
    return out


# ------------------------------------------------------------- export-time substitutions
_torch_einsum = torch.einsum


def einsum_as_matmul(equation: str, *operands):
    """A two-operand einsum (no ellipsis, no repeated letters) as permute / reshape / MatMul,
    so that the exported graph has no Einsum node. Anything else goes to torch.einsum."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    eq = equation.replace(" ", "")
    if len(operands) != 2 or "..." in eq or "->" not in eq:
        return _torch_einsum(equation, *operands)
    lhs, out_s = eq.split("->")
    parts = lhs.split(",")
    if len(parts) != 2:
        return _torch_einsum(equation, *operands)
    a_s, b_s = parts
    a, b = operands
    if any(len(set(s)) != len(s) for s in (a_s, b_s, out_s)) or a.dim() != len(a_s) or b.dim() != len(b_s):
        return _torch_einsum(equation, *operands)
    # Sum out letters that appear in one operand only and not in the output.
    for which in (0, 1):
        s, other, t = (a_s, b_s, a) if which == 0 else (b_s, a_s, b)
        drop = [i for i, c in enumerate(s) if c not in other and c not in out_s]
        if drop:
            t = t.sum(dim=drop)
            s = "".join(c for i, c in enumerate(s) if i not in drop)
        if which == 0:
            a_s, a = s, t
        else:
            b_s, b = s, t
    batch = [c for c in a_s if c in b_s and c in out_s]
    contracted = [c for c in a_s if c in b_s and c not in out_s]
    a_only = [c for c in a_s if c not in b_s]
    b_only = [c for c in b_s if c not in a_s]
    size = {**{c: a.shape[i] for i, c in enumerate(a_s)}, **{c: b.shape[i] for i, c in enumerate(b_s)}}

    def prod(letters):
        return math.prod(size[c] for c in letters) if letters else 1

    bs = [size[c] for c in batch]
    am = a.permute([a_s.index(c) for c in batch + a_only + contracted]).reshape(*bs, prod(a_only), prod(contracted))
    bm = b.permute([b_s.index(c) for c in batch + contracted + b_only]).reshape(*bs, prod(contracted), prod(b_only))
    res = (am @ bm).reshape(*bs, *[size[c] for c in a_only], *[size[c] for c in b_only])
    order = batch + a_only + b_only
    return res.permute([order.index(c) for c in out_s])


@contextlib.contextmanager
def export_substitutions():
    """Inside: torch.einsum is `einsum_as_matmul` (same math, MatMul nodes instead of Einsum)."""
    with mock.patch.object(torch, "einsum", einsum_as_matmul):
        yield
