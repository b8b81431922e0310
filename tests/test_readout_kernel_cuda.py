"""The CUDA readout kernel (build/libs3rt_readout.so) against the reference, on a GPU.

Same cases as tests/test_readout_kernel_cpu.py (which runs the same kernel source on the CPU), plus
streams, CUDA graphs, layouts and larger sizes. Skipped, with the reason, without a GPU or without
the built library (`cmake -S . -B build && cmake --build build`)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from s3rt.model.memory_readout import memory_readout
import readout_oracles as oracles
from s3rt.runtime import readout_kernel as rk
from s3rt.runtime import readout_kernel_cpu as rkc

pytestmark = pytest.mark.cuda

CASES = oracles.parity_cases(quick=True)
LARGE = [c for c in oracles.parity_cases(quick=False) if c not in CASES]


@pytest.fixture(scope="module")
def cuda_ready():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    avail = rk.is_available()
    if not avail:
        pytest.skip(avail.reason)
    return avail


def to_cuda(inputs: dict) -> dict:
    return {k: v.cuda() for k, v in inputs.items()}


def launch(d: dict, top_k: int, usage=None, **kw):
    out = rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                                 d["mem_values"], d["valid"], top_k, usage, **kw)
    torch.cuda.synchronize()
    return out


def check_case(case: oracles.ReadoutCase):
    inputs = oracles.make_case_inputs(case)
    d = to_cuda(inputs)
    usage = torch.zeros(case.B, case.M, device="cuda")
    out = launch(d, case.top_k, usage, num_splits=case.num_splits)
    atol = 1e-3 if case.key_offset else 2e-5
    rep = oracles.compare_to_reference(out, usage, inputs, case.top_k, atol=atol,
                                  usage_groups=case.M // case.ties if case.ties else 0)
    if case.ties:
        assert rep["near_tie_pixels"] == 0
    return rep


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_reference(cuda_ready, case):
    check_case(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", LARGE, ids=[c.name for c in LARGE])
def test_matches_reference_large(cuda_ready, case):
    check_case(case)


def test_automatic_splits_match_one_split(cuda_ready):
    case = oracles.ReadoutCase("auto", M=5000, P=300, N=2, V=64, seed=3)
    d = to_cuda(oracles.make_case_inputs(case))
    u1 = torch.zeros(1, case.M, device="cuda")
    ua = torch.zeros(1, case.M, device="cuda")
    one = launch(d, 30, u1, num_splits=1)
    auto = launch(d, 30, ua)
    assert torch.equal(u1 > 0, ua > 0)
    torch.testing.assert_close(auto, one, rtol=1e-6, atol=1e-6)


def test_same_selection_as_cpu_harness(cuda_ready):
    """The emulation is faithful: GPU and CPU builds pick exactly the same slots."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: cannot build the CPU harness")
    case = oracles.ReadoutCase("cross", M=1000, P=200, N=2, num_splits=3, seed=4)
    inputs = oracles.make_case_inputs(case)
    u_cpu = np.zeros((1, case.M), np.float32)
    out_cpu = rkc.cpu_memory_readout(inputs["query_key"], inputs["query_selection"], inputs["mem_key"],
                                    inputs["mem_shrinkage"], inputs["mem_values"], inputs["valid"], 30, u_cpu,
                                    num_splits=3)
    u_gpu = torch.zeros(1, case.M, device="cuda")
    out_gpu = launch(to_cuda(inputs), 30, u_gpu, num_splits=3)
    np.testing.assert_array_equal(u_gpu.cpu().numpy() > 0, u_cpu > 0)
    np.testing.assert_allclose(out_gpu.cpu().numpy(), out_cpu, rtol=1e-5, atol=1e-6)


def test_slot_major_layout_and_fp16_output(cuda_ready):
    case = oracles.ReadoutCase("layout", M=3000, P=500, N=3, V=64, seed=5)
    inputs = oracles.make_case_inputs(case)
    d = to_cuda(inputs)
    ref = launch(d, 30)
    B, N, V, M = d["mem_values"].shape
    sm = d["mem_values"].reshape(B, N * V, M).transpose(1, 2).contiguous()
    out = rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"], sm,
                                 d["valid"], 30, values_layout="slot_major", num_objects=N)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out16 = rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                                   d["mem_values"], d["valid"], 30, out_dtype=torch.float16)
    assert out16.dtype == torch.float16
    torch.testing.assert_close(out16.float(), ref, rtol=2e-3, atol=2e-3)


def test_fp16_inputs(cuda_ready):
    case = oracles.ReadoutCase("fp16-big", M=4000, P=600, N=2, V=64, dtype="float16", seed=6)
    check_case(case)


def test_runs_on_the_given_stream(cuda_ready):
    case = oracles.ReadoutCase("stream", M=2000, P=300, N=1, V=64, seed=7)
    inputs = oracles.make_case_inputs(case)
    d = to_cuda(inputs)
    ref = launch(d, 30)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out_side = rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                                          d["mem_values"], d["valid"], 30, stream=side)
    raw = rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                                 d["mem_values"], d["valid"], 30, stream=side.cuda_stream)
    side.synchronize()
    torch.testing.assert_close(out_side, ref, rtol=0, atol=0)
    torch.testing.assert_close(raw, ref, rtol=0, atol=0)


def test_cuda_graph_capture(cuda_ready):
    """Static buffers + the kernel on the capturing stream: one frame can be a CUDA graph."""
    case = oracles.ReadoutCase("graph", M=2000, P=300, N=2, V=64, seed=8)
    inputs = oracles.make_case_inputs(case)
    d = to_cuda(inputs)
    usage = torch.zeros(1, case.M, device="cuda")
    out = torch.empty(1, case.N, case.V, case.P, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up outside the capture
        rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                               d["mem_values"], d["valid"], 30, usage, out=out)
    torch.cuda.current_stream().wait_stream(s)
    usage.zero_()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                               d["mem_values"], d["valid"], 30, usage, out=out)
    out.zero_()
    g.replay()
    torch.cuda.synchronize()
    oracles.compare_to_reference(out, usage, inputs, 30)


def test_matches_memory_readout_on_gpu(cuda_ready):
    """Real sizes (Cutie 480p, 4 objects) against the reference run on the GPU too."""
    case = oracles.ReadoutCase("gpu-ref", M=8100, P=1620, N=4, V=256, n_valid=6000, seed=9)
    inputs = oracles.make_case_inputs(case)
    d = to_cuda(inputs)
    out = launch(d, 30)
    ref = memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"], d["mem_values"],
                         d["valid"], top_k=30)
    err = (out - ref).abs()
    bad_px = (err > 2e-5 + 1e-4 * ref.abs()).any(1).any(1).cpu()  # [B, P]
    if bad_px.any():  # only where the k-th and (k+1)-th similarities (nearly) tie
        gaps, mag = oracles.boundary_gaps(inputs, 30)
        assert (gaps[bad_px] <= 1e-5 * (1 + mag[bad_px])).all(), f"max |diff| {err.max().item():.3g}"


def test_argument_errors(cuda_ready):
    case = oracles.ReadoutCase("args", M=100, P=20, N=1, V=16, seed=10)
    d = to_cuda(oracles.make_case_inputs(case))
    a = [d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"], d["mem_values"], d["valid"]]
    with pytest.raises(ValueError, match="contiguous"):
        rk.cuda_memory_readout(a[0].transpose(1, 2).contiguous().transpose(1, 2), *a[1:])
    with pytest.raises(ValueError, match="mem_values"):
        rk.cuda_memory_readout(*a[:4], a[4][..., :50], a[5])
    with pytest.raises(ValueError, match="mem_key"):
        rk.cuda_memory_readout(a[0], a[1], a[2].half(), *a[3:])
    with pytest.raises(ValueError, match="usage"):
        rk.cuda_memory_readout(*a, 30, torch.zeros(1, case.M, device="cuda", dtype=torch.float64))
    with pytest.raises(ValueError, match="CUDA tensor"):
        rk.cuda_memory_readout(a[0], a[1].cpu(), *a[2:])
    with pytest.raises(ValueError, match="top_k"):
        rk.cuda_memory_readout(*a, 100)
