"""The fused top-k memory readout kernel (kernels/memory_readout.cu) from Python.

Two builds of the same device code (kernels/memory_readout.cuh):
- the CUDA library `libs3rt_readout.so` (CMake, see CMakeLists.txt), called on PyTorch CUDA tensors
  by `cuda_memory_readout`, on the caller's stream;
- the CPU harness `libs3rt_readout_cpu.so` (`s3rt.runtime.readout_kernel_cpu`: g++ with
  kernels/cpu/cuda_on_cpu.h, built on demand), called on NumPy arrays. It runs every CUDA thread
  as a fiber with faithful barriers and warp shuffles, so the kernels are tested without a GPU.

Both compute exactly `s3rt.model.memory_readout.memory_readout` (top-k over valid slots, FP32
max-subtracted softmax, gather of the values of all objects, optional usage), with one documented
difference: ties between equal similarities go to the lower slot index (torch.topk leaves it
unspecified), and with no valid slot at all the readout is 0 (the reference gives NaN).

Layouts: the keys and queries as the reference; values either [B, N, V, M] ("channels_first",
the reference / ONNX layout) or [B, M, N*V] ("slot_major": one slot's values are contiguous, so the
kernel's gather is coalesced; the preferred layout for the runtime's own memory buffers).
Output: [B, N, V, P] in float32 (default) or float16; accumulation is always FP32.

This module holds the ABI, the library loader and the argument checks; the test cases and
oracles live with the tests (tests/readout_oracles.py).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

ABI_VERSION = 1
LIB_NAME = "libs3rt_readout.so"
CPU_LIB_NAME = "libs3rt_readout_cpu.so"
ENV_LIB = "S3RT_READOUT_LIB"
MAX_TOP_K = 64
SUPPORTED_KEY_DIMS = (16, 32, 64)
LAYOUTS = {"channels_first": 0, "slot_major": 1}
INVALID_ARGUMENT = -1

_PACKAGE_DIR = Path(__file__).resolve().parent  # s3rt/runtime
_REPO_ROOT = _PACKAGE_DIR.parents[1]
KERNEL_SOURCE_DIR = _REPO_ROOT / "kernels"

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1}
_NP_DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}


class ReadoutKernelUnavailable(RuntimeError):
    """The CUDA readout library cannot be used here (not built, no GPU, no driver)."""


class Availability(NamedTuple):
    ok: bool
    reason: str

    def __bool__(self) -> bool:  # `if is_available():` works, `.reason` says why not
        return self.ok


# --------------------------------------------------------------------------- ctypes declarations

_P = ctypes.c_void_p
_I = ctypes.c_int
_LL = ctypes.c_longlong
_LAUNCH_COMMON = [_P, _P, _P, _P, _P, _P, _P, _P,  # qk, qe, mk, ms, mv, valid, out, usage
                  _I, _I, _I, _I, _I, _I, _I,  # B, C, P, M, N, V, top_k
                  _I, _I, _I, _I,  # key dtype, value dtype, out dtype, layout
                  _I, _P, _LL]  # num_splits, workspace, workspace bytes


def _declare_common(lib: ctypes.CDLL) -> None:
    lib.s3rt_readout_abi_version.argtypes = []
    lib.s3rt_readout_abi_version.restype = _I
    lib.s3rt_readout_plan.argtypes = [_I, _I, _I, _I, _I, _I, ctypes.POINTER(_I), ctypes.POINTER(_I),
                                      ctypes.POINTER(_LL)]
    lib.s3rt_readout_plan.restype = _I
    lib.s3rt_readout_error_string.argtypes = [_I]
    lib.s3rt_readout_error_string.restype = ctypes.c_char_p


def _declare_cuda(lib: ctypes.CDLL) -> None:
    _declare_common(lib)
    lib.s3rt_readout_launch.argtypes = _LAUNCH_COMMON + [_I, _P]  # device, stream
    lib.s3rt_readout_launch.restype = _I
    lib.s3rt_readout_device_check.argtypes = [_I, ctypes.POINTER(_I)]
    lib.s3rt_readout_device_check.restype = _I


def _declare_cpu(lib: ctypes.CDLL) -> None:
    _declare_common(lib)
    lib.s3rt_readout_cpu_launch.argtypes = _LAUNCH_COMMON + [_I]  # num_threads
    lib.s3rt_readout_cpu_launch.restype = _I


def _error_string(lib: ctypes.CDLL, code: int) -> str:
    msg = lib.s3rt_readout_error_string(code)
    return msg.decode(errors="replace") if msg else f"error {code}"


def _plan(lib: ctypes.CDLL, B: int, P: int, M: int, top_k: int, num_splits: int | None, sm_count: int):
    splits, k, ws = _I(), _I(), _LL()
    rc = lib.s3rt_readout_plan(B, P, M, top_k, num_splits or 0, sm_count, ctypes.byref(splits), ctypes.byref(k),
                               ctypes.byref(ws))
    if rc != 0:
        raise ValueError(f"readout kernel: {_error_string(lib, rc)}")
    return splits.value, k.value, ws.value


# --------------------------------------------------------------------------- the CUDA library

def library_candidates() -> list[Path]:
    """Where the CUDA library is looked for, in order: $S3RT_READOUT_LIB, <repo>/build/,
    next to this module, next to the package."""
    out = []
    env = os.environ.get(ENV_LIB)
    if env:
        out.append(Path(env))
    out += [_REPO_ROOT / "build" / LIB_NAME, _PACKAGE_DIR / LIB_NAME, _PACKAGE_DIR.parent / LIB_NAME]
    return out


_cuda_lib: ctypes.CDLL | None = None
_cuda_lib_error: str | None = None


def load_library(path: str | os.PathLike | None = None) -> ctypes.CDLL:
    """Load (once) and return the CUDA library; ReadoutKernelUnavailable says why not."""
    global _cuda_lib, _cuda_lib_error
    if path is None and _cuda_lib is not None:
        return _cuda_lib
    candidates = [Path(path)] if path is not None else library_candidates()
    if path is None and os.environ.get(ENV_LIB) and not candidates[0].is_file():
        raise ReadoutKernelUnavailable(f"${ENV_LIB} points to {candidates[0]}, which does not exist")
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        _cuda_lib_error = (f"{LIB_NAME} not found (looked at {', '.join(str(c) for c in candidates)}); build it "
                           f"with `cmake -S . -B build && cmake --build build` or set ${ENV_LIB}")
        raise ReadoutKernelUnavailable(_cuda_lib_error)
    try:
        lib = ctypes.CDLL(str(found))
        _declare_cuda(lib)
    except (OSError, AttributeError) as exc:
        raise ReadoutKernelUnavailable(f"cannot load {found}: {exc}") from exc
    abi = lib.s3rt_readout_abi_version()
    if abi != ABI_VERSION:
        raise ReadoutKernelUnavailable(f"{found} has ABI version {abi}, this s3rt expects {ABI_VERSION}: rebuild it")
    if path is None:
        _cuda_lib = lib
    return lib


def is_available(device: int | torch.device | None = None) -> Availability:
    """Whether `cuda_memory_readout` can run here; `.reason` explains when it cannot."""
    try:
        lib = load_library()
    except ReadoutKernelUnavailable as exc:
        return Availability(False, str(exc))
    index = _device_index(device)
    sms = _I()
    rc = lib.s3rt_readout_device_check(index, ctypes.byref(sms))
    if not torch.cuda.is_available():
        lib_says = "the library sees a device" if rc == 0 else f"the library reports: {_error_string(lib, rc)} " \
                                                                f"(CUDA error {rc})"
        return Availability(False, "PyTorch sees no CUDA device (torch.cuda.is_available() is False; torch "
                                   f"{torch.__version__}); {lib_says}")
    if rc != 0:
        return Availability(False, f"the readout library cannot use CUDA device {index}: "
                                   f"{_error_string(lib, rc)} (CUDA error {rc})")
    return Availability(True, f"{LIB_NAME} ready on cuda:{index} ({sms.value} SMs)")


def _device_index(device) -> int:
    if device is None:
        return torch.cuda.current_device() if torch.cuda.is_available() else 0
    if isinstance(device, int):
        return device
    device = torch.device(device)
    return device.index if device.index is not None else torch.cuda.current_device()


def _check_tensor(name: str, t, shape: tuple, dtypes: tuple, device: torch.device | None):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor, got one on {t.device}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, but query_key is on {device}: put every input on one device")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")


def _shapes(query_key, query_selection, mem_key, mem_shrinkage, mem_values, values_layout, num_objects):
    """Sizes (B, C, P, M, N, V) and the expected values shape from the inputs (tensors or arrays)."""
    if values_layout not in LAYOUTS:
        raise ValueError(f"values_layout must be one of {sorted(LAYOUTS)}, got {values_layout!r}")
    if len(query_key.shape) != 3:
        raise ValueError(f"query_key must be [B, C, P], got shape {list(query_key.shape)}")
    B, C, P = (int(x) for x in query_key.shape)
    if C not in SUPPORTED_KEY_DIMS:
        raise ValueError(f"key dim C={C} is not supported by the kernel (supported: {SUPPORTED_KEY_DIMS})")
    if len(mem_key.shape) != 3:
        raise ValueError(f"mem_key must be [B, C, M], got shape {list(mem_key.shape)}")
    M = int(mem_key.shape[2])
    vs = tuple(int(x) for x in mem_values.shape)
    if values_layout == "channels_first":
        if len(vs) != 4:
            raise ValueError(f"mem_values must be [B, N, V, M] for the channels_first layout, got shape {list(vs)}")
        N, V = vs[1], vs[2]
        if num_objects is not None and num_objects != N:
            raise ValueError(f"num_objects={num_objects} disagrees with mem_values' N={N}")
        vshape = (B, N, V, M)
    else:
        if num_objects is None:
            raise ValueError("the slot_major layout [B, M, N*V] needs num_objects")
        if len(vs) != 3 or vs[2] % num_objects:
            raise ValueError(f"mem_values must be [B, M, N*V] with N*V divisible by num_objects={num_objects} for "
                             f"the slot_major layout, got shape {list(vs)}")
        N, V = num_objects, vs[2] // num_objects
        vshape = (B, M, N * V)
    return B, C, P, M, N, V, vshape


def cuda_memory_readout(query_key, query_selection, mem_key, mem_shrinkage, mem_values, valid=None, top_k: int = 30,
                        usage=None, stream=None, *, values_layout: str = "channels_first",
                        num_objects: int | None = None, out=None, out_dtype: torch.dtype = torch.float32,
                        num_splits: int | None = None) -> torch.Tensor:
    """The readout on PyTorch CUDA tensors with the CUDA kernel; returns out [B, N, V, P].

    query_key, query_selection [B,C,P]; mem_key [B,C,M]; mem_shrinkage [B,1,M] (all float32, or all
    float16); mem_values [B,N,V,M] (or [B,M,N*V] with values_layout="slot_major" and num_objects),
    float32 or float16; valid [B,M] bool/uint8 or None (all valid). `usage` [B,M] float32, if given,
    gets each slot's summed softmax weight ADDED in place (long-term memory counting). `stream`: a
    torch.cuda.Stream, a raw cudaStream_t (int) or None (the current stream). `out` may be given
    (contiguous [B,N,V,P] of out_dtype). `num_splits` overrides the automatic split of the memory.
    """
    if not isinstance(query_key, torch.Tensor) or query_key.device.type != "cuda":
        where = query_key.device if isinstance(query_key, torch.Tensor) else type(query_key).__name__
        raise ValueError(f"query_key must be a CUDA tensor, got {where}")
    device = query_key.device
    B, C, P, M, N, V, vshape = _shapes(query_key, query_selection, mem_key, mem_shrinkage, mem_values, values_layout,
                                       num_objects)
    key_dtypes = (torch.float32, torch.float16)
    _check_tensor("query_key", query_key, (B, C, P), key_dtypes, device)
    kd = query_key.dtype
    _check_tensor("query_selection", query_selection, (B, C, P), (kd,), device)
    _check_tensor("mem_key", mem_key, (B, C, M), (kd,), device)
    _check_tensor("mem_shrinkage", mem_shrinkage, (B, 1, M), (kd,), device)
    _check_tensor("mem_values", mem_values, vshape, key_dtypes, device)
    if valid is not None:
        _check_tensor("valid", valid, (B, M), (torch.bool, torch.uint8), device)
    if usage is not None:
        _check_tensor("usage", usage, (B, M), (torch.float32,), device)
    if out_dtype not in _DTYPE_CODES:
        raise ValueError(f"out_dtype must be torch.float32 or torch.float16, got {out_dtype}")
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise ValueError(f"top_k must be in 1..{MAX_TOP_K}, got {top_k}")

    lib = load_library()
    index = device.index if device.index is not None else torch.cuda.current_device()
    if stream is None:
        tstream = torch.cuda.current_stream(device)
    elif isinstance(stream, torch.cuda.Stream):
        tstream = stream
    elif isinstance(stream, int):
        tstream = torch.cuda.ExternalStream(stream, device=device)
    else:
        raise ValueError(f"stream must be a torch.cuda.Stream, a raw cudaStream_t (int) or None, got "
                         f"{type(stream).__name__}")
    sm_count = torch.cuda.get_device_properties(index).multi_processor_count
    splits, _, ws_bytes = _plan(lib, B, P, M, int(top_k), num_splits, sm_count)
    with torch.cuda.device(index), torch.cuda.stream(tstream):
        workspace = torch.empty(max(ws_bytes, 8), dtype=torch.uint8, device=device)
        if out is None:
            out = torch.empty((B, N, V, P), dtype=out_dtype, device=device)
        else:
            _check_tensor("out", out, (B, N, V, P), (out_dtype,), device)
        rc = lib.s3rt_readout_launch(
            query_key.data_ptr(), query_selection.data_ptr(), mem_key.data_ptr(), mem_shrinkage.data_ptr(),
            mem_values.data_ptr(), valid.data_ptr() if valid is not None else None, out.data_ptr(),
            usage.data_ptr() if usage is not None else None,
            B, C, P, M, N, V, int(top_k), _DTYPE_CODES[kd], _DTYPE_CODES[mem_values.dtype], _DTYPE_CODES[out_dtype],
            LAYOUTS[values_layout], splits, workspace.data_ptr(), ws_bytes, index, tstream.cuda_stream)
    if rc == INVALID_ARGUMENT:
        raise ValueError(f"readout kernel rejected its arguments: {_error_string(lib, rc)}")
    if rc != 0:
        raise RuntimeError(f"readout kernel launch failed on cuda:{index}: {_error_string(lib, rc)} (CUDA error {rc})")
    return out


def launch_raw(lib: ctypes.CDLL, pointers: dict, sizes: dict, *, top_k=30, key_dtype=0, value_dtype=0, out_dtype=0,
               values_layout=0, num_splits=1, workspace=None, workspace_bytes=0, device=0, stream=None) -> None:
    """Launch with raw device pointers (ints), e.g. from another framework; raises on failure.
    `pointers`: query_key, query_selection, mem_key, mem_shrinkage, mem_values, valid, out, usage;
    `sizes`: B, C, P, M, N, V."""
    g = pointers.get
    rc = lib.s3rt_readout_launch(g("query_key"), g("query_selection"), g("mem_key"), g("mem_shrinkage"),
                                 g("mem_values"), g("valid"), g("out"), g("usage"),
                                 sizes["B"], sizes["C"], sizes["P"], sizes["M"], sizes["N"], sizes["V"], top_k,
                                 key_dtype, value_dtype, out_dtype, values_layout, num_splits, workspace,
                                 workspace_bytes, device, stream)
    if rc == INVALID_ARGUMENT:
        raise ValueError(f"readout kernel rejected its arguments: {_error_string(lib, rc)}")
    if rc != 0:
        raise RuntimeError(f"readout kernel launch failed: {_error_string(lib, rc)} (CUDA error {rc})")
