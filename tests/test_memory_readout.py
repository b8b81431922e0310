"""The reference memory readout against a direct implementation of the formula
(model_notes 2.4), the fixed-capacity form against the official dense form, and the
scaled-dot-product-attention identity as a cross-check."""

import math

import pytest
import torch
import torch.nn.functional as F

from s3rt.model.memory_readout import memory_readout, similarity, topk_softmax_dense


def random_memory(B, C, M, P, N, V, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(B, C, P, generator=g)
    qe = torch.rand(B, C, P, generator=g)
    mk = torch.randn(B, C, M, generator=g)
    ms = 1 + torch.rand(B, 1, M, generator=g) * 3
    mv = torch.randn(B, N, V, M, generator=g)
    return [t.to(dtype) for t in (qk, qe, mk, ms, mv)]


def direct_readout(qk, qe, mk, ms, mv, valid, k):
    """Loops over pixels: S = -(s/sqrt(C)) * sum_c e (k - q)^2, top-k, softmax, weighted values."""
    B, C, P = qk.shape
    N, V, M = mv.shape[1:]
    out = torch.zeros(B, N, V, P, dtype=torch.float64)
    for b in range(B):
        for p in range(P):
            diff = (mk[b].double() - qk[b, :, p:p + 1].double()) ** 2  # [C,M]
            s = -(ms[b, 0].double() / math.sqrt(C)) * (qe[b, :, p:p + 1].double() * diff).sum(0)
            if valid is not None:
                s = s.masked_fill(~valid[b], -math.inf)
            vals, idx = s.topk(min(k, M))
            w = torch.exp(vals - vals.max())
            w = w / w.sum()
            out[b, :, :, p] = (mv[b][:, :, idx].double() * w).sum(-1)
    return out


@pytest.mark.parametrize("B,C,M,P,N,k", [(1, 64, 100, 17, 1, 30), (2, 16, 45, 30, 3, 30), (1, 8, 7, 5, 2, 30),
                                         (1, 16, 200, 9, 4, 1), (1, 16, 150, 12, 2, 64)])
def test_readout_matches_direct_formula(B, C, M, P, N, k):
    qk, qe, mk, ms, mv = random_memory(B, C, M, P, N, 8, seed=M)
    valid = torch.rand(B, M, generator=torch.Generator().manual_seed(1)) > 0.3
    valid[:, 0] = True
    got = memory_readout(qk, qe, mk, ms, mv, valid, top_k=k)
    torch.testing.assert_close(got.double(), direct_readout(qk, qe, mk, ms, mv, valid, k), rtol=1e-4, atol=1e-5)


def test_fixed_capacity_equals_official_dense_readout_on_valid_prefix():
    qk, qe, mk, ms, mv = random_memory(1, 64, 300, 40, 2, 16)
    n_valid = 180
    # the official code only ever sees the valid slots, concatenated
    sim = similarity(mk[..., :n_valid], ms[..., :n_valid], qk, qe)
    affinity = topk_softmax_dense(sim, 30)
    dense = (mv[..., :n_valid].reshape(1, -1, n_valid) @ affinity).view(1, 2, 16, 40)
    valid = torch.zeros(1, 300, dtype=torch.bool)
    valid[:, :n_valid] = True
    # shuffle slot order: top-k and softmax are order-free
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    got, usage = memory_readout(qk, qe, mk[..., perm], ms[..., perm], mv[..., perm], valid[:, perm], return_usage=True)
    torch.testing.assert_close(got, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(usage[:, perm.argsort()][:, :n_valid], affinity.sum(2), rtol=1e-5, atol=1e-5)
    assert torch.all(usage[~valid[:, perm]] == 0)


def test_invalid_slots_never_win_even_with_best_similarity():
    qk, qe, mk, ms, mv = random_memory(1, 16, 50, 10, 1, 4)
    mk[..., :10] = qk[..., :1]  # the invalid slots would be the closest
    valid = torch.ones(1, 50, dtype=torch.bool)
    valid[:, :10] = False
    _, usage = memory_readout(qk, qe, mk, ms, mv, valid, return_usage=True)
    assert torch.all(usage[:, :10] == 0)
    # fewer valid than k: only the valid ones carry weight and weights sum to 1
    valid = torch.zeros(1, 50, dtype=torch.bool)
    valid[:, [3, 7, 9]] = True
    _, usage = memory_readout(qk, qe, mk, ms, mv, valid, return_usage=True)
    assert set(usage.nonzero()[:, 1].tolist()) <= {3, 7, 9}
    torch.testing.assert_close(usage.sum(), torch.tensor(10.0))


def test_extreme_similarities_stay_finite_in_fp16_inputs():
    qk, qe, mk, ms, mv = random_memory(1, 64, 64, 8, 1, 4)
    mk = mk * 40  # every S far below -17: exp without the max subtracted underflows to 0/0
    sim = similarity(mk, ms, qk, qe)
    assert sim.max() < -200
    naive = torch.exp(sim.topk(30, dim=1).values.half())
    assert torch.all(naive.sum(1) == 0)
    got = memory_readout(qk.half(), qe.half(), mk.half(), ms.half(), mv.half())
    assert torch.isfinite(got).all()


def test_sdpa_identity():
    """S(n, p) = <K~_n, Q~_p> / sqrt(C) with K~ = s [-k^2, k, 1] and Q~ = [e, 2 e q, -sum e q^2];
    the full-softmax readout is then exactly SDPA (model_notes 2.4)."""
    qk, qe, mk, ms, mv = random_memory(1, 64, 120, 33, 2, 8)
    k_aug = ms.transpose(1, 2) * torch.cat([-mk.pow(2), mk, torch.ones(1, 1, 120)], 1).transpose(1, 2)  # [1,M,129]
    q_aug = torch.cat([qe, 2 * qe * qk, -(qe * qk.pow(2)).sum(1, keepdim=True)], 1).transpose(1, 2)  # [1,P,129]
    sim = similarity(mk, ms, qk, qe)
    torch.testing.assert_close((q_aug @ k_aug.transpose(1, 2) / 8).transpose(1, 2), sim, rtol=1e-4, atol=1e-3)
    values = mv.reshape(1, 16, 120).transpose(1, 2)  # [1,M,N*V]
    sdpa = F.scaled_dot_product_attention(q_aug, k_aug, values, scale=1 / 8)  # [1,P,N*V]
    full = memory_readout(qk, qe, mk, ms, mv, top_k=120)
    torch.testing.assert_close(sdpa.transpose(1, 2).reshape(1, 2, 8, 33), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m, p, with_selection", [(1, 1, True), (37, 50, True), (300, 97, False), (1620, 64, True)])
def test_inplace_similarity_and_affinity_are_bitwise_the_reference(m, p, with_selection):
    """The in-place formulation (the torch backend's dense readout) gives exactly the reference's
    values, not merely close ones, with and without a selection term and invalid slots."""
    g = torch.Generator().manual_seed(m + p)
    mk, ms = torch.randn(2, 16, m, generator=g), torch.rand(2, 1, m, generator=g) + 1
    qk = torch.randn(2, 16, p, generator=g)
    qe = torch.rand(2, 16, p, generator=g) if with_selection else None
    ref = similarity(mk, ms, qk, qe)
    got = similarity(mk, ms, qk, qe, inplace=True)
    assert torch.equal(ref, got)
    got[:, : m // 3] = float("-inf")  # invalid slots, as the readout masks them
    ref = got.clone()
    for k in (None, 30):
        assert torch.equal(topk_softmax_dense(ref, k), topk_softmax_dense(got.clone(), k, inplace=True))
