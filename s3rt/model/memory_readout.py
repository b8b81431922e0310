"""The reference memory readout: Cutie's top-k readout at inference (its `get_affinity` + `readout`).

Similarity is Cutie's anisotropic L2: S(n, p) = -(s_n / sqrt(C_k)) * sum_c e_pc (k_nc - q_pc)^2.
Each query pixel keeps its top-k memory slots, takes a softmax over them and reads the values.
Two forms live here:
- `similarity` + `topk_softmax_dense`: the official computation, with a dense memory x pixels
  affinity (used for long-term consolidation and as the ground truth in tests);
- `memory_readout`: the form every backend implements, over a fixed-capacity memory with a
  valid mask. It gathers the k selected values instead of multiplying by a mostly-zero
  matrix, and subtracts the per-pixel maximum before `exp` (identical in exact arithmetic;
  the official code skips it and NaNs in FP16 when every similarity is below about -17).
"""

from __future__ import annotations

import math

import torch


def similarity(mem_key, mem_shrinkage, query_key, query_selection, *, inplace: bool = False):
    """mem_key [B,C,M], mem_shrinkage [B,1,M] or None, query_key / query_selection [B,C,P]
    -> S [B,M,P], computed the way the official `get_similarity` does (three matmuls).

    inplace (inference only): the same operations on one [B,M,P] buffer, bit for bit the same
    values (two_ab - a_sq - b_sq equals -a_sq + two_ab - b_sq exactly: negation is exact);
    out of place every step allocates and faults in a fresh M x P tensor (53 MB at 8100 memory
    tokens x 1620 pixels)."""
    ck = mem_key.shape[1]
    mk = mem_key.transpose(1, 2)
    if query_selection is not None:
        a_sq = mk.pow(2) @ query_selection
        two_ab = mk @ (query_key * query_selection)
        b_sq = (query_selection * query_key.pow(2)).sum(1, keepdim=True)
    else:
        a_sq = mk.pow(2).sum(2).unsqueeze(2)
        two_ab = mk @ query_key
        b_sq = 0
    if inplace:
        sim = two_ab.mul_(2).sub_(a_sq).sub_(b_sq)
        if mem_shrinkage is not None:
            sim.mul_(mem_shrinkage.transpose(1, 2))
        return sim.div_(math.sqrt(ck))
    sim = -a_sq + 2 * two_ab - b_sq
    if mem_shrinkage is not None:
        sim = sim * mem_shrinkage.transpose(1, 2)
    return sim / math.sqrt(ck)


def topk_softmax_dense(sim: torch.Tensor, top_k: int | None, *, inplace: bool = False):
    """Official `do_softmax`: top-k over the memory axis (dim 1), softmax of the kept values,
    scattered into a dense affinity [B,M,P]. `top_k=None` is the full softmax. inplace
    (inference only, as the official `inplace=True`): the affinity is written over `sim`."""
    if top_k is None:
        return torch.softmax(sim, dim=1)
    values, indices = torch.topk(sim, k=min(top_k, sim.shape[1]), dim=1)
    weights = torch.softmax(values, dim=1)
    return (sim.zero_() if inplace else torch.zeros_like(sim)).scatter_(1, indices, weights)


def memory_readout(
    query_key: torch.Tensor,
    query_selection: torch.Tensor,
    mem_key: torch.Tensor,
    mem_shrinkage: torch.Tensor,
    mem_values: torch.Tensor,
    valid: torch.Tensor | None = None,
    top_k: int = 30,
    return_usage: bool = False,
):
    """Read a fixed-capacity memory.

    query_key, query_selection [B,C,P]; mem_key [B,C,M]; mem_shrinkage [B,1,M];
    mem_values [B,N,V,M]; valid [B,M] (bool; None = all valid).
    Returns readout [B,N,V,P] and, with `return_usage`, usage [B,M] = sum over pixels of each
    slot's softmax weight. Invalid slots get -inf similarity, so they are chosen only when
    fewer than k slots are valid, and then with weight exactly 0. At least one slot must be valid.
    Accumulates in FP32 whatever the input dtype.
    """
    B, N, V, M = mem_values.shape
    sim = similarity(mem_key.float(), mem_shrinkage.float(), query_key.float(), query_selection.float())
    if valid is not None:
        sim = sim.masked_fill(~valid.bool().unsqueeze(2), float("-inf"))
    k = min(top_k, M)
    values, indices = torch.topk(sim, k=k, dim=1)  # [B,k,P]
    weights = torch.softmax(values, dim=1)  # max-subtracted softmax; -inf entries -> 0
    # gathered[b, j, p, :] = values of slot indices[b, j, p], for all objects and channels
    flat_values = mem_values.float().reshape(B, N * V, M).transpose(1, 2)  # [B,M,N*V]
    gathered = flat_values[torch.arange(B, device=sim.device)[:, None, None], indices]  # [B,k,P,N*V]
    out = (gathered * weights.unsqueeze(3)).sum(1)  # [B,P,N*V]
    out = out.transpose(1, 2).reshape(B, N, V, -1)
    if not return_usage:
        return out
    usage = torch.zeros(B, M, dtype=torch.float32, device=sim.device)
    usage.scatter_add_(1, indices.reshape(B, -1), weights.reshape(B, -1))
    return out, usage
