"""One nn.Module per graph of `s3rt.graphs.GRAPHS`: what the exporter exports and the torch
backend runs (`graph_modules`).

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

The torch backend may run the readout as the reference itself (`ReferenceReadout`, the
default: it reads only the filled part of the memory when that is a prefix) or as the fused
CUDA kernel; all three agree (tests/test_export.py, tests/test_readout_kernel_*.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from s3rt.graphs.contracts import GRAPHS, check_graph_name
from s3rt.model.network import VOSNetwork


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


class ReferenceReadout(nn.Module):
    """The reference readout (`VOSNetwork.read_memory`) behind the readout contract."""

    def __init__(self, net: VOSNetwork, top_k: int):
        super().__init__()
        self.net = net
        self.top_k = int(top_k)

    def forward(self, key, selection, mem_key, mem_shrinkage, mem_values, mem_valid):
        return self.net.read_memory(key, selection, mem_key, mem_shrinkage, mem_values, mem_valid,
                                    top_k=self.top_k, return_usage=True)


# graph name -> module factory (net, top_k); the one mapping from graphs to the network's steps
GRAPH_MODULES = {
    "encoder": lambda net, top_k: EncoderGraph(net),
    "readout": lambda net, top_k: ReadoutGraph(top_k),
    "fusion": lambda net, top_k: FusionGraph(net),
    "decoder": lambda net, top_k: DecoderGraph(net),
    "mask_encoder": lambda net, top_k: MaskEncoderGraph(net),
}
assert set(GRAPH_MODULES) == set(GRAPHS)


def graph_module(graph: str, net: VOSNetwork, top_k: int) -> nn.Module:
    """The module of one graph: inputs in contract order, outputs as a tuple in contract order."""
    check_graph_name(graph)
    return GRAPH_MODULES[graph](net, top_k).eval()


def graph_modules(net: VOSNetwork, top_k: int) -> dict[str, nn.Module]:
    return {g: graph_module(g, net, top_k) for g in GRAPHS}
