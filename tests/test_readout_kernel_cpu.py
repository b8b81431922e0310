"""The readout kernel's own source (kernels/memory_readout.cuh), compiled for the CPU with
kernels/cpu/cuda_on_cpu.h, against the reference `s3rt.model.memory_readout.memory_readout`.

The harness runs every CUDA thread as a fiber with real barriers and warp exchanges, so this tests
the kernels' indexing, tiling, top-k, merge across splits, softmax, gather and atomics. It is built
with g++ into a cache folder by the `harness` fixture (skipped when g++ is absent)."""

from __future__ import annotations

import ctypes
import os
import shutil

import numpy as np
import pytest
import torch

from s3rt.model.memory_readout import memory_readout, similarity
import readout_oracles as oracles
from s3rt.runtime import readout_kernel as rk
from s3rt.runtime import readout_kernel_cpu as rkc

CASES = oracles.parity_cases(quick=True)


def _need_cxx():
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        pytest.skip(f"{cxx} not found on PATH: cannot build the CPU kernel harness")


@pytest.fixture(scope="module")
def harness() -> rkc.CpuHarness:
    _need_cxx()
    return rkc.cpu_harness()


@pytest.fixture(scope="module")
def selftest_lib():
    _need_cxx()
    path = rkc.build_cpu_library("cpu/emulator_selftest.cpp", "libs3rt_emulator_selftest.so")
    lib = ctypes.CDLL(str(path))
    return lib


def run(h: rkc.CpuHarness, inputs: dict, top_k: int, usage=None, **kw):
    return h.readout(inputs["query_key"], inputs["query_selection"], inputs["mem_key"], inputs["mem_shrinkage"],
                     inputs["mem_values"], inputs["valid"], top_k, usage, **kw)


# --------------------------------------------------------------------------- parity with the reference

@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_reference(harness, case):
    inputs = oracles.make_case_inputs(case)
    usage = np.zeros((case.B, case.M), np.float32)
    out = run(harness, inputs, case.top_k, usage, num_splits=case.num_splits)
    assert out.shape == (case.B, case.N, case.V, case.P) and out.dtype == np.float32
    atol = 1e-3 if case.key_offset else 2e-5  # |S| ~ 10^3: FP32 similarity limits both sides, see below
    rep = oracles.compare_to_reference(out, usage, inputs, case.top_k, atol=atol,
                                  usage_groups=case.M // case.ties if case.ties else 0)
    if case.ties:
        # duplicated slots have identical values: any choice among exact ties gives the same output
        assert rep["near_tie_pixels"] == 0
    # random continuous inputs: a near-tie at the k-th place is (almost) never expected here
    assert rep["near_tie_pixels"] <= 1


def test_fewer_valid_than_k_uses_only_valid_slots(harness):
    case = oracles.ReadoutCase("few", M=500, P=37, N=2, n_valid=3, num_splits=3, seed=5)
    inputs = oracles.make_case_inputs(case)
    usage = np.zeros((1, case.M), np.float32)
    run(harness, inputs, 30, usage, num_splits=3)
    valid = inputs["valid"].numpy()
    assert np.all(usage[~valid] == 0), "an invalid slot got weight"
    np.testing.assert_allclose(usage[valid].sum(), case.P, rtol=1e-5)  # every pixel's weights sum to 1


def test_no_valid_slot_reads_zero(harness):
    case = oracles.ReadoutCase("none", M=100, P=10, N=1, seed=6)
    inputs = oracles.make_case_inputs(case)
    inputs["valid"][:] = False
    usage = np.zeros((1, case.M), np.float32)
    out = run(harness, inputs, 30, usage)
    assert np.all(out == 0) and np.all(usage == 0)


@pytest.mark.parametrize("splits", [1, 2, 4, 16])
def test_result_independent_of_splits(harness, splits):
    case = oracles.ReadoutCase("splits", M=1000, P=37, N=2, seed=7)
    inputs = oracles.make_case_inputs(case)
    u1 = np.zeros((1, case.M), np.float32)
    us = np.zeros((1, case.M), np.float32)
    base = run(harness, inputs, 30, u1, num_splits=1)
    out = run(harness, inputs, 30, us, num_splits=splits)
    assert harness.plan(1, case.P, case.M, 30, splits)[0] == splits
    np.testing.assert_array_equal(u1 > 0, us > 0)  # the same slots are selected
    np.testing.assert_allclose(out, base, rtol=1e-6, atol=1e-6)


def test_ties_go_to_the_lowest_slot_index(harness):
    # 4 copies of 60 distinct slots; copy c of slot d sits at c*60 + d, across tiles and splits
    case = oracles.ReadoutCase("ties", M=240, P=37, N=1, ties=4, seed=8)
    inputs = oracles.make_case_inputs(case)
    usage = np.zeros((1, case.M), np.float32)
    run(harness, inputs, 1, usage, num_splits=3)  # k = 1: each pixel takes exactly one slot
    assert usage[0, 60:].sum() == 0 and np.isclose(usage.sum(), case.P)
    usage = np.zeros((1, case.M), np.float32)
    run(harness, inputs, 30, usage, num_splits=3)
    per_copy = usage[0].reshape(4, 60)  # [copy, distinct slot]
    assert np.all(np.diff(per_copy, axis=0) <= 1e-6), "a later copy got more weight than an earlier one"


def test_usage_accumulates(harness):
    case = oracles.ReadoutCase("usage", M=200, P=37, N=1, seed=9)
    inputs = oracles.make_case_inputs(case)
    usage = np.zeros((1, case.M), np.float32)
    run(harness, inputs, 30, usage)
    once = usage.copy()
    run(harness, inputs, 30, usage)
    np.testing.assert_allclose(usage, 2 * once, rtol=1e-6)
    np.testing.assert_allclose(once.sum(), case.P, rtol=1e-5)


def test_fp16_inputs_and_output(harness):
    case = oracles.ReadoutCase("fp16", M=257, P=37, N=2, dtype="float16", seed=10)
    inputs = oracles.make_case_inputs(case)
    assert inputs["mem_key"].dtype == torch.float16
    out16 = run(harness, inputs, 30, out_dtype=np.float16, num_splits=2)
    assert out16.dtype == np.float16
    ref, _ = oracles.reference_readout(inputs, 30)  # FP32 on the same fp16-rounded values
    np.testing.assert_allclose(out16.astype(np.float32), ref.numpy(), rtol=2e-3, atol=2e-3)
    # fp32 keys with fp16 values work as well
    mixed = dict(inputs, **{k: inputs[k].float() for k in ("query_key", "query_selection", "mem_key",
                                                             "mem_shrinkage")})
    out = run(harness, mixed, 30)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=2e-5)


def test_slot_major_values_layout(harness):
    case = oracles.ReadoutCase("layout", M=300, P=37, N=3, seed=11)
    inputs = oracles.make_case_inputs(case)
    cf = run(harness, inputs, 30)
    B, N, V, M = inputs["mem_values"].shape
    sm = inputs["mem_values"].reshape(B, N * V, M).transpose(1, 2).contiguous()  # [B, M, N*V]
    out = harness.readout(inputs["query_key"], inputs["query_selection"], inputs["mem_key"],
                          inputs["mem_shrinkage"], sm, inputs["valid"], 30, values_layout="slot_major",
                          num_objects=N)
    np.testing.assert_array_equal(out, cf)


def test_extreme_similarities_need_max_subtraction(harness):
    case = next(c for c in CASES if c.name == "extreme")
    inputs = oracles.make_case_inputs(case)
    sim = similarity(inputs["mem_key"], inputs["mem_shrinkage"], inputs["query_key"], inputs["query_selection"])
    assert sim.max() < -200
    # the official softmax (exp without subtracting the maximum) underflows to 0/0 here
    top = torch.topk(sim, case.top_k, dim=1).values
    assert torch.all(torch.exp(top).sum(1) == 0)
    assert torch.isnan(torch.exp(top) / torch.exp(top).sum(1, keepdim=True)).all()
    out = run(harness, inputs, case.top_k)
    assert np.isfinite(out).all()
    ref = memory_readout(inputs["query_key"], inputs["query_selection"], inputs["mem_key"], inputs["mem_shrinkage"],
                         inputs["mem_values"], inputs["valid"], top_k=case.top_k)
    assert torch.isfinite(ref).all()
    # |S| ~ 10^3: FP32 carries ~1e-4 absolute error in S, so both FP32 paths are ~1e-4 from float64
    truth = oracles.float64_readout(inputs, case.top_k)
    assert (torch.from_numpy(out).double() - truth).abs().max() < 1e-3
    assert (ref.double() - truth).abs().max() < 1e-3


def test_argument_errors(harness):
    case = oracles.ReadoutCase("args", M=50, P=8, N=1, seed=12)
    i = oracles.make_case_inputs(case)
    args = [i["query_key"], i["query_selection"], i["mem_key"], i["mem_shrinkage"], i["mem_values"], i["valid"]]
    with pytest.raises(ValueError, match="top_k"):
        harness.readout(*args, 0)
    with pytest.raises(ValueError, match="top_k"):
        harness.readout(*args, 65)
    with pytest.raises(ValueError, match="mem_shrinkage"):
        harness.readout(*args[:3], i["mem_shrinkage"][:, :, :10], *args[4:], 30)
    with pytest.raises(ValueError, match="query_selection"):
        harness.readout(args[0], args[1].half(), *args[2:], 30)
    with pytest.raises(ValueError, match="key dim"):
        harness.readout(args[0][:, :48], args[1][:, :48], args[2][:, :48], *args[3:], 30)
    with pytest.raises(ValueError, match="num_objects"):
        harness.readout(*args, 30, values_layout="slot_major")
    with pytest.raises(ValueError, match="valid"):
        harness.readout(*args[:5], i["valid"][:, :10], 30)
    # the C API checks on its own too: a workspace that is too small
    lib = harness.lib
    rc = lib.s3rt_readout_cpu_launch(*(ctypes.c_void_p(8) for _ in range(7)), None, 1, 64, 8, 50, 1, 32, 30,
                                     0, 0, 0, 0, 1, ctypes.c_void_p(8), 8, 1)
    assert rc == rk.INVALID_ARGUMENT
    assert "workspace" in lib.s3rt_readout_error_string(rc).decode()


def test_plan(harness):
    # automatic: about two blocks per SM, at least 4 tiles of 64 slots per split
    splits, k, ws = harness.plan(1, 1620, 8100, 30, None, sm_count=132)
    assert (splits, k) == (11, 30) and ws == 1620 * splits * 30 * 8
    assert harness.plan(1, 1620, 100, 30, None, sm_count=132)[0] == 1
    assert harness.plan(1, 10, 29, 30, 4)[:2] == (1, 29)  # k = min(top_k, M); a split is >= 64 slots
    assert harness.plan(1, 10, 1000, 30, 5)[0] == 4  # splits hold whole 64-slot tiles: 5 x 200 -> 4 x 256
    with pytest.raises(ValueError, match="sizes"):
        harness.plan(1, 0, 10, 30)


# --------------------------------------------------------------------------- the emulation itself

def test_emulated_warp_intrinsics(selftest_lib):
    out = np.zeros(64 * 8, np.int64)
    assert selftest_lib.selftest_shfl(out.ctypes.data_as(ctypes.c_void_p)) == 0
    out = out.reshape(64, 8)
    lane = np.arange(64) % 32
    warp = np.arange(64) // 32
    assert np.all(out[:, 0] == 496)
    assert np.all(out[:, 1] == 5 * 7 + warp)
    assert np.all(out[:, 2] == np.where(lane + 3 < 32, lane + 3, lane))
    assert np.all(out[:, 3] == np.where(lane >= 2, lane - 2, lane))
    ballot = sum(1 << l for l in range(32) if l % 3 == 0)
    assert np.all(out[:, 4] == ballot)
    assert np.all(out[:, 5] == 1) and np.all(out[:, 6] == 0)
    assert np.all(out[:, 7] == (1 << 40) + (lane ^ 1))


def test_emulated_shared_memory_and_atomics(selftest_lib):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 1000)).astype(np.float32)
    y = np.zeros(6, np.float32)
    fn = selftest_lib.selftest_reduce
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    assert fn(x.ctypes.data, y.ctypes.data, 6, 1000, 2) == 0
    np.testing.assert_allclose(y, x.sum(1), rtol=1e-5, atol=1e-4)
    acc = np.zeros(4, np.float32)
    count = np.zeros(1, np.int32)
    fn = selftest_lib.selftest_atomics
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    assert fn(acc.ctypes.data, count.ctypes.data, 40, 2) == 0
    assert count[0] == 40 * 128 and np.all(acc == 40 * 32 * 0.5)  # exact: sums of 0.5 in FP32


@pytest.mark.parametrize("which,pattern", [(0, "deadlock"), (1, "divergent warp"), (2, "mask")])
def test_emulator_reports_divergent_barriers(selftest_lib, which, pattern):
    scratch = np.zeros(64, np.int32)
    msg = ctypes.create_string_buffer(512)
    fn = selftest_lib.selftest_fault
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    rc = fn(which, scratch.ctypes.data, msg, 512)
    assert rc != 0
    assert pattern in msg.value.decode()


def test_emulated_half_conversion(selftest_lib):
    rng = np.random.default_rng(1)
    x = np.concatenate([
        rng.standard_normal(20000) * 10.0 ** rng.integers(-9, 6, 20000),
        [0.0, -0.0, 65504.0, 65519.0, 65520.0, -70000.0, np.inf, -np.inf, 6e-8, 2.9e-8, 3.0e-8, 1e-9,
         2.0 ** -14, 2.0 ** -24, 1.5 * 2.0 ** -24, 0.1, 1 / 3],
    ]).astype(np.float32)
    bits = np.zeros(x.size, np.uint16)
    back = np.zeros(x.size, np.float32)
    fn = selftest_lib.selftest_half
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    fn(x.ctypes.data, bits.ctypes.data, back.ctypes.data, x.size)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    np.testing.assert_array_equal(bits, want.view(np.uint16))  # round to nearest even, overflow to inf
    np.testing.assert_array_equal(back, want.astype(np.float32))


# --------------------------------------------------------------------------- the CUDA library without a GPU

def test_cuda_wrapper_rejects_cpu_tensors():
    t = torch.zeros(1, 64, 4)
    with pytest.raises(ValueError, match="query_key must be a CUDA tensor"):
        rk.cuda_memory_readout(t, t, t, torch.zeros(1, 1, 4), torch.zeros(1, 1, 8, 4))


def test_cuda_library_loads_and_reports_missing_driver():
    try:
        lib = rk.load_library()
    except rk.ReadoutKernelUnavailable as exc:
        avail = rk.is_available()
        assert not avail and avail.reason
        pytest.skip(f"CUDA library not built: {exc}")
    assert lib.s3rt_readout_abi_version() == rk.ABI_VERSION
    splits = ctypes.c_int()
    k = ctypes.c_int()
    ws = ctypes.c_longlong()
    assert lib.s3rt_readout_plan(1, 1620, 8100, 30, 0, 132, ctypes.byref(splits), ctypes.byref(k),
                                 ctypes.byref(ws)) == 0
    assert splits.value == 11
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/test_readout_kernel_cuda.py covers it")
    avail = rk.is_available()
    assert not avail and "CUDA" in avail.reason
    sm = ctypes.c_int()
    code = lib.s3rt_readout_device_check(0, ctypes.byref(sm))
    assert code != 0  # e.g. 35, cudaErrorInsufficientDriver, or 100, no device
    # a launch with (fake) pointers gets past the argument checks and fails cleanly in CUDA
    fake = {name: 256 for name in ("query_key", "query_selection", "mem_key", "mem_shrinkage", "mem_values", "out")}
    with pytest.raises(RuntimeError, match="CUDA error"):
        rk.launch_raw(lib, fake, dict(B=1, C=64, P=8, M=100, N=1, V=16), num_splits=1, workspace=256,
                      workspace_bytes=8 * 30 * 8)
    with pytest.raises(ValueError, match="workspace"):
        rk.launch_raw(lib, fake, dict(B=1, C=64, P=8, M=100, N=1, V=16), num_splits=1, workspace=256,
                      workspace_bytes=8)
