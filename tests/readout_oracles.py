"""Test cases and oracles for the readout kernel (CUDA and CPU harness): random inputs in Cutie's
value ranges, the reference and float64 readouts, and the comparison that tolerates near-ties."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

@dataclass(frozen=True)
class ReadoutCase:
    """Random readout inputs in the value ranges of Cutie: selection in (0,1), shrinkage >= 1."""
    name: str
    M: int
    P: int
    N: int = 1
    top_k: int = 30
    B: int = 1
    C: int = 64
    V: int = 32
    n_valid: int | None = None  # valid slots per batch element (random positions); None = all
    dtype: str = "float32"  # keys, queries and values
    ties: int = 0  # > 0: the memory is `ties` copies of M // ties distinct slots (keys and values)
    key_offset: float = 0.0  # added to memory keys: large -> every similarity far below 0
    num_splits: int | None = None
    seed: int = 0


def make_case_inputs(case: ReadoutCase) -> dict:
    """CPU tensors for a case: query_key, query_selection, mem_key, mem_shrinkage, mem_values, valid."""
    g = torch.Generator().manual_seed(case.seed * 1000003 + case.M * 31 + case.P)
    B, C, M, P, N, V = case.B, case.C, case.M, case.P, case.N, case.V
    distinct = M // case.ties if case.ties else M
    mk = torch.randn(B, C, distinct, generator=g) + case.key_offset
    ms = 1 + torch.rand(B, 1, distinct, generator=g) ** 2 * 2
    mv = torch.randn(B, N, V, distinct, generator=g)
    if case.ties:
        # copy c of distinct slot d sits at c * distinct + d: copies spread over tiles and splits
        reps = -(-M // distinct)
        mk = mk.repeat(1, 1, reps)[..., :M]
        ms = ms.repeat(1, 1, reps)[..., :M]
        mv = mv.repeat(1, 1, 1, reps)[..., :M]
    qk = torch.randn(B, C, P, generator=g)
    qe = torch.sigmoid(torch.randn(B, C, P, generator=g))
    if case.n_valid is None:
        valid = torch.ones(B, M, dtype=torch.bool)
    else:
        valid = torch.zeros(B, M, dtype=torch.bool)
        for b in range(B):
            valid[b, torch.randperm(M, generator=g)[:case.n_valid]] = True
    dt = torch.float16 if case.dtype == "float16" else torch.float32
    return {"query_key": qk.to(dt), "query_selection": qe.to(dt), "mem_key": mk.to(dt),
            "mem_shrinkage": ms.to(dt), "mem_values": mv.to(dt), "valid": valid}


def reference_readout(inputs: dict, top_k: int):
    """The reference (`s3rt.model.memory_readout.memory_readout`) in FP32 on the same (possibly
    fp16-rounded) values: (out [B,N,V,P], usage [B,M])."""
    from s3rt.model.memory_readout import memory_readout

    f = {k: (v.float() if v.is_floating_point() else v) for k, v in inputs.items()}
    return memory_readout(f["query_key"], f["query_selection"], f["mem_key"], f["mem_shrinkage"], f["mem_values"],
                          f["valid"], top_k=top_k, return_usage=True)


def float64_readout(inputs: dict, top_k: int) -> torch.Tensor:
    """Ground truth in float64 with the direct (cancellation-free) similarity
    -(s_n/sqrt(C)) sum_c e_pc (k_nc - q_pc)^2: readout [B,N,V,P] (float64). For judging FP32
    accuracy where similarities are large (both the reference and the kernel are FP32)."""
    d = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    q, e, k, s, v = d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"], d["mem_values"]
    B, C, P = q.shape
    N, V, M = v.shape[1:]
    sq = ((k.unsqueeze(3) - q.unsqueeze(2)) ** 2 * e.unsqueeze(2)).sum(1)  # [B,M,P]
    sim = -(s.transpose(1, 2) / math.sqrt(C)) * sq
    sim = sim.masked_fill(~d["valid"].bool().unsqueeze(2), float("-inf"))
    vals, idx = torch.topk(sim, min(top_k, M), dim=1)
    w = torch.softmax(vals, dim=1)
    flat = v.reshape(B, N * V, M).transpose(1, 2)
    g = flat[torch.arange(B)[:, None, None], idx]  # [B,k,P,NV]
    return (g * w.unsqueeze(3)).sum(1).transpose(1, 2).reshape(B, N, V, P)


def boundary_gaps(inputs: dict, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel [B,P]: the gap between the k-th and (k+1)-th largest valid similarity and the
    k-th similarity's magnitude (float64; gap inf when at most k slots are valid). Where the gap is
    ~0, two slots tie for the last place and either choice is a correct top-k."""
    from s3rt.model.memory_readout import similarity

    d = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    sim = similarity(d["mem_key"], d["mem_shrinkage"], d["query_key"], d["query_selection"])
    sim = sim.masked_fill(~d["valid"].bool().unsqueeze(2), float("-inf"))
    B, M, P = sim.shape
    if top_k >= M:
        inf = torch.full((B, P), math.inf, dtype=torch.float64)
        return inf, torch.zeros(B, P, dtype=torch.float64)
    top = torch.topk(sim, top_k + 1, dim=1).values
    gap = top[:, top_k - 1] - top[:, top_k]
    gap = torch.where(torch.isinf(top[:, top_k]), torch.full_like(gap, math.inf), gap)
    return gap, top[:, top_k - 1].abs().nan_to_num(0.0, posinf=0.0)


def _to_cpu_tensor(x) -> torch.Tensor:
    return x.detach().cpu().float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)).float()


def compare_to_reference(out, usage, inputs: dict, top_k: int, *, atol=2e-5, rtol=1e-4, tie_eps=1e-5,
                         usage_groups: int = 0) -> dict:
    """Check a kernel result against the reference; raises AssertionError with details.
    Pixels whose k-th and (k+1)-th similarities are within `tie_eps` (relative to the similarity's
    magnitude) may legitimately pick a different last slot: they are counted in the report
    (`near_tie_pixels`), not failed. With `usage_groups` (a `ties` case), usage is compared summed
    over the copies of each slot (slot n belongs to group n % usage_groups)."""
    out = _to_cpu_tensor(out)
    ref_out, ref_usage = reference_readout(inputs, top_k)
    assert out.shape == ref_out.shape, f"shape {tuple(out.shape)} != reference {tuple(ref_out.shape)}"
    assert torch.isfinite(out).all(), "kernel output has non-finite values"
    err = (out - ref_out).abs()
    bad = err > atol + rtol * ref_out.abs()  # [B,N,V,P]
    bad_px = bad.any(dim=1).any(dim=1)  # [B,P]
    near_ties = 0
    if bad_px.any():
        gaps, mag = boundary_gaps(inputs, top_k)
        tie_px = gaps <= tie_eps * (1.0 + mag)
        real_bad = bad_px & ~tie_px
        near_ties = int((bad_px & tie_px).sum())
        if real_bad.any():
            b, p = (int(x) for x in real_bad.nonzero()[0])
            raise AssertionError(
                f"{int(real_bad.sum())} pixel(s) differ from the reference beyond atol={atol}, rtol={rtol} and are "
                f"not near-ties; first at b={b}, p={p}: max |diff| {float(err[b, ..., p].max()):.3g}, "
                f"boundary gap {float(gaps[b, p]):.3g}; overall max |diff| {float(err.max()):.3g}")
    report = {"max_abs_err": float(err.max()), "near_tie_pixels": near_ties}
    if usage is not None:
        u, ru = _to_cpu_tensor(usage), ref_usage
        if usage_groups:
            pad = (-u.shape[1]) % usage_groups
            u = torch.nn.functional.pad(u, (0, pad)).reshape(u.shape[0], -1, usage_groups).sum(1)
            ru = torch.nn.functional.pad(ru, (0, pad)).reshape(ru.shape[0], -1, usage_groups).sum(1)
        uerr = (u - ru).abs()
        # a near-tie pixel may move its smallest weight from one slot to another
        utol = 1e-4 * (1 + ru.abs()) + (1.0 if near_ties else 0.0)
        if (uerr > utol).any():
            raise AssertionError(f"usage differs from the reference: max |diff| {float(uerr.max()):.3g}")
        report["usage_max_abs_err"] = float(uerr.max())
    return report


def parity_cases(quick: bool = True) -> list[ReadoutCase]:
    """The cases the CPU and CUDA tests run (quick: CPU-harness sized)."""
    cases = []
    # memory sizes around and off the 64-slot tile, pixel counts off the 64-pixel tile, k = 1/30/64,
    # 1..4 objects, and automatic (one) or several splits of the memory
    for i, (M, P, k) in enumerate((M, P, k) for M in (1, 29, 30, 31, 100, 257, 1000) for P in (1, 37, 200)
                                  for k in (1, 30, 64)):
        splits = (None, 2, 3)[i % 3] if M > 64 else None
        cases.append(ReadoutCase(f"M{M}-P{P}-k{k}", M=M, P=P, N=1 + i % 4, V=16, top_k=k, num_splits=splits,
                                 seed=i))
    cases += [
        ReadoutCase("objects4-splits3", M=500, P=70, N=4, num_splits=3, seed=11),
        ReadoutCase("k64-splits4", M=700, P=37, N=1, top_k=64, num_splits=4, seed=12),
        ReadoutCase("batch2-C16", M=150, P=65, N=2, B=2, C=16, seed=13),
        ReadoutCase("C32", M=150, P=40, N=1, C=32, seed=14),
        ReadoutCase("3-valid-of-500", M=500, P=37, N=2, n_valid=3, num_splits=2, seed=15),
        ReadoutCase("40-valid-of-500-k64", M=500, P=37, N=1, top_k=64, n_valid=40, num_splits=3, seed=16),
        ReadoutCase("ties", M=240, P=37, N=2, ties=4, num_splits=2, seed=17),
        ReadoutCase("fp16", M=257, P=37, N=3, dtype="float16", num_splits=2, seed=18),
        ReadoutCase("fp16-k64", M=300, P=20, N=1, top_k=64, dtype="float16", seed=19),
        ReadoutCase("extreme", M=200, P=37, N=1, key_offset=10.0, seed=20),
    ]
    if not quick:
        cases += [
            ReadoutCase("real-dims", M=8100, P=1620, N=4, V=256, seed=30),
            ReadoutCase("real-dims-fp16", M=8100, P=1620, N=2, V=256, dtype="float16", seed=31),
            ReadoutCase("long-memory", M=26000, P=400, N=1, V=64, n_valid=20000, seed=32),
        ]
    return cases
