"""The CPU harness of the readout kernel: the same device source (kernels/memory_readout.cuh)
compiled with g++ and kernels/cpu/cuda_on_cpu.h, which runs every CUDA thread as a fiber with
faithful barriers and warp shuffles, so the kernels are tested on machines without a GPU.
Built on demand into a cache folder; called on NumPy arrays."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from s3rt.runtime.readout_kernel import (_NP_DTYPE_CODES, ABI_VERSION, CPU_LIB_NAME, INVALID_ARGUMENT,
                                         KERNEL_SOURCE_DIR, LAYOUTS, _declare_cpu, _error_string, _plan, _shapes)

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
