"""The fused top-k memory readout kernel (kernels/memory_readout.cu) from Python.

Two builds of the same device code (kernels/memory_readout.cuh):
- the CUDA library `libs3rt_readout.so` (CMake, see CMakeLists.txt), called on PyTorch CUDA tensors
  by `cuda_memory_readout`, on the caller's stream;
- the CPU harness `libs3rt_readout_cpu.so` (g++ with kernels/cpu/cuda_on_cpu.h, built on demand by
  `build_cpu_harness`), called on NumPy arrays by `cpu_memory_readout`. It runs every CUDA thread
  as a fiber with faithful barriers and warp shuffles, so the kernels are tested without a GPU.

Both compute exactly `s3rt.model.memory_readout.memory_readout` (top-k over valid slots, FP32
max-subtracted softmax, gather of the values of all objects, optional usage), with one documented
difference: ties between equal similarities go to the lower slot index (torch.topk leaves it
unspecified), and with no valid slot at all the readout is 0 (the reference gives NaN).

Layouts: the keys and queries as the reference; values either [B, N, V, M] ("channels_first",
the reference / ONNX layout) or [B, M, N*V] ("slot_major": one slot's values are contiguous, so the
kernel's gather is coalesced; the preferred layout for the runtime's own memory buffers).
Output: [B, N, V, P] in float32 (default) or float16; accumulation is always FP32.

Also here: the parity cases and the comparison used by the tests and by `python -m
s3rt.runtime.readout_kernel --self-test` on a GPU machine.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- the CPU harness

CPU_HARNESS_SOURCES = ("memory_readout.cuh", "s3rt_readout.h", "cpu/cuda_on_cpu.h", "cpu/readout_cpu.cpp")


def _cpu_flags() -> list[str]:
    flags = ["-std=c++17", "-O2", "-fPIC", "-shared", "-pthread", "-U_FORTIFY_SOURCE", "-Wno-unknown-pragmas"]
    if platform.machine() in ("x86_64", "AMD64", "i686"):
        flags.append("-fcf-protection=none")  # the fibers switch stacks with _longjmp
    return flags


def build_cpu_library(main_source: str = "cpu/readout_cpu.cpp", lib_name: str = CPU_LIB_NAME,
                      build_dir: str | os.PathLike | None = None, cxx: str | None = None,
                      source_dir: str | os.PathLike | None = None) -> Path:
    """Compile `kernels/<main_source>` (which includes cuda_on_cpu.h and the kernel header) with
    g++ into a shared library in `build_dir` (default: a cache folder under the system temp dir
    keyed by the sources, flags and compiler) and return its path. Raises FileNotFoundError when
    the compiler or the kernel sources are missing, RuntimeError when compilation fails."""
    cxx = cxx or os.environ.get("CXX") or "g++"
    cxx_path = shutil.which(cxx)
    if cxx_path is None:
        raise FileNotFoundError(f"C++ compiler {cxx!r} not found on PATH (needed to build the CPU kernel harness)")
    src = Path(source_dir) if source_dir is not None else KERNEL_SOURCE_DIR
    sources = tuple(dict.fromkeys(CPU_HARNESS_SOURCES + (main_source,)))
    missing = [s for s in sources if not (src / s).is_file()]
    if missing:
        raise FileNotFoundError(f"kernel sources {missing} not found under {src} (they live in the repository's "
                                f"kernels/ folder, which an installed wheel does not carry)")
    flags = _cpu_flags()
    version = subprocess.run([cxx_path, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    h = hashlib.sha256()
    for s in sources:
        h.update(s.encode() + b"\0" + (src / s).read_bytes())
    h.update(" ".join(flags + version + [cxx_path, platform.machine()]).encode())
    key = h.hexdigest()[:16]
    if build_dir is None:
        build_dir = Path(tempfile.gettempdir()) / "s3rt_kernel_cache" / key
    build_dir = Path(build_dir)
    lib_path = build_dir / lib_name
    stamp = build_dir / (lib_name + ".key")
    if lib_path.is_file() and stamp.is_file() and stamp.read_text() == key:
        return lib_path
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = build_dir / f".{lib_name}.{os.getpid()}.tmp"
    cmd = [cxx_path, *flags, str(src / main_source), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building {lib_name} failed:\n{' '.join(cmd)}\n{proc.stderr[-4000:]}")
    os.replace(tmp, lib_path)  # atomic: a concurrent build never leaves a half-written library
    stamp.write_text(key)
    return lib_path


def build_cpu_harness(build_dir: str | os.PathLike | None = None, cxx: str | None = None,
                      source_dir: str | os.PathLike | None = None) -> Path:
    """Compile the CPU harness (the kernel source, g++) and return the library path (cached)."""
    return build_cpu_library("cpu/readout_cpu.cpp", CPU_LIB_NAME, build_dir, cxx, source_dir)


class CpuHarness:
    """The CPU-compiled kernels, called on NumPy arrays (the kernel's own code path, slowly)."""

    def __init__(self, lib_path: str | os.PathLike):
        self.path = Path(lib_path)
        self.lib = ctypes.CDLL(str(self.path))
        _declare_cpu(self.lib)
        abi = self.lib.s3rt_readout_abi_version()
        if abi != ABI_VERSION:
            raise RuntimeError(f"{self.path} has ABI version {abi}, expected {ABI_VERSION}")

    def plan(self, B, P, M, top_k, num_splits=None, sm_count=0):
        """(splits, effective k, workspace bytes) as the launch will use them."""
        return _plan(self.lib, B, P, M, top_k, num_splits, sm_count)

    def readout(self, query_key, query_selection, mem_key, mem_shrinkage, mem_values, valid=None, top_k=30,
                usage=None, *, values_layout="channels_first", num_objects=None, out_dtype=np.float32,
                num_splits=None, sm_count=0, num_threads=0) -> np.ndarray:
        """Same contract as `cuda_memory_readout`, on NumPy arrays (float32 / float16; valid
        bool / uint8). `usage` (float32 [B,M]) is added to in place. Returns out [B,N,V,P]."""
        arrays = {"query_key": query_key, "query_selection": query_selection, "mem_key": mem_key,
                  "mem_shrinkage": mem_shrinkage, "mem_values": mem_values}
        arrays = {k: _as_numpy(k, v) for k, v in arrays.items()}
        B, C, P, M, N, V, vshape = _shapes(arrays["query_key"], arrays["query_selection"], arrays["mem_key"],
                                           arrays["mem_shrinkage"], arrays["mem_values"], values_layout, num_objects)
        kd = arrays["query_key"].dtype
        if kd not in _NP_DTYPE_CODES:
            raise ValueError(f"query_key must be float32 or float16, got {kd}")
        expect = {"query_key": (B, C, P), "query_selection": (B, C, P), "mem_key": (B, C, M),
                  "mem_shrinkage": (B, 1, M), "mem_values": vshape}
        for k, v in arrays.items():
            if tuple(v.shape) != expect[k]:
                raise ValueError(f"{k} must have shape {list(expect[k])}, got {list(v.shape)}")
            if k != "mem_values" and v.dtype != kd:
                raise ValueError(f"{k} must have the dtype of query_key ({kd}), got {v.dtype}")
        if arrays["mem_values"].dtype not in _NP_DTYPE_CODES:
            raise ValueError(f"mem_values must be float32 or float16, got {arrays['mem_values'].dtype}")
        if valid is not None:
            valid = np.ascontiguousarray(_as_numpy("valid", valid))
            if valid.dtype not in (np.bool_, np.uint8) or valid.shape != (B, M):
                raise ValueError(f"valid must be bool/uint8 [B, M] = {[B, M]}, got {valid.dtype} {list(valid.shape)}")
            valid = valid.view(np.uint8)
        if usage is not None:
            if not isinstance(usage, np.ndarray) or usage.dtype != np.float32 or usage.shape != (B, M) \
                    or not usage.flags.c_contiguous:
                raise ValueError(f"usage must be a contiguous float32 numpy array [B, M] = {[B, M]}")
        out_dtype = np.dtype(out_dtype)
        if out_dtype not in _NP_DTYPE_CODES:
            raise ValueError(f"out_dtype must be float32 or float16, got {out_dtype}")
        splits, _, ws_bytes = self.plan(B, P, M, int(top_k), num_splits, sm_count)
        workspace = np.empty(max(ws_bytes, 8), dtype=np.uint8)
        out = np.empty((B, N, V, P), dtype=out_dtype)
        ptr = lambda a: a.ctypes.data if a is not None else None  # noqa: E731
        rc = self.lib.s3rt_readout_cpu_launch(
            ptr(arrays["query_key"]), ptr(arrays["query_selection"]), ptr(arrays["mem_key"]),
            ptr(arrays["mem_shrinkage"]), ptr(arrays["mem_values"]), ptr(valid), ptr(out), ptr(usage),
            B, C, P, M, N, V, int(top_k), _NP_DTYPE_CODES[kd], _NP_DTYPE_CODES[arrays["mem_values"].dtype],
            _NP_DTYPE_CODES[out_dtype], LAYOUTS[values_layout], splits, ptr(workspace), ws_bytes, num_threads)
        if rc == INVALID_ARGUMENT:
            raise ValueError(f"readout kernel rejected its arguments: {_error_string(self.lib, rc)}")
        if rc != 0:
            raise RuntimeError(f"CPU readout kernel failed: {_error_string(self.lib, rc)} (code {rc})")
        return out


def _as_numpy(name, a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        if a.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU for the CPU harness, got {a.device}")
        a = a.detach().numpy()
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or a CPU tensor, got {type(a).__name__}")
    return np.ascontiguousarray(a)


_cpu_harness: CpuHarness | None = None


def cpu_harness(build_dir=None) -> CpuHarness:
    """Build (cached) and load the CPU harness."""
    global _cpu_harness
    if _cpu_harness is None or build_dir is not None:
        h = CpuHarness(build_cpu_harness(build_dir))
        if build_dir is not None:
            return h
        _cpu_harness = h
    return _cpu_harness


def cpu_memory_readout(*args, **kwargs) -> np.ndarray:
    """`CpuHarness.readout` on the default (cached) build."""
    return cpu_harness().readout(*args, **kwargs)


# --------------------------------------------------------------------------- parity cases

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


def _self_test(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check the CUDA readout kernel against the reference")
    parser.add_argument("--full", action="store_true", help="also the large cases")
    args = parser.parse_args(argv)
    avail = is_available()
    if not avail:
        print(f"readout kernel unavailable: {avail.reason}")
        return 2
    print(avail.reason)
    failures = 0
    for case in parity_cases(quick=not args.full):
        inputs = make_case_inputs(case)
        dev = {k: v.cuda() for k, v in inputs.items()}
        usage = torch.zeros(case.B, case.M, device="cuda")
        out = cuda_memory_readout(dev["query_key"], dev["query_selection"], dev["mem_key"], dev["mem_shrinkage"],
                                  dev["mem_values"], dev["valid"], case.top_k, usage, num_splits=case.num_splits)
        torch.cuda.synchronize()
        try:
            rep = compare_to_reference(out, usage, inputs, case.top_k, usage_groups=case.M // case.ties if case.ties else 0)
            print(f"ok    {case.name}: {rep}")
        except AssertionError as exc:
            failures += 1
            print(f"FAIL  {case.name}: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_self_test())
