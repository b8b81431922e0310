"""The torch backend's runner: the graph modules of `s3rt.graphs.modules` (the ones the exporter
exports), run eagerly in FP32, or FP16 autocast on CUDA.

The readout is one of four implementations of the same contract (`readout=`):
- "dense": the official formulation (`similarity`, top-k scattered into a dense memory x pixels
  affinity, one matmul with the values), the default without the CUDA kernel: on a CPU it is
  1.4-2x faster than gathering the k values per pixel (cutie-base 480p: 52 vs 113 ms at 1620
  memory tokens, 308 vs 435 ms at 8100), and, computed in place on one buffer as the official
  code does, faster than the official readout (154 vs 232 ms at 8100 tokens on 2 threads,
  benchmarks/results/vs_official_cpu.md);
- "reference": the reference readout (`VOSNetwork.read_memory`, gathering the k values);
- "graph": the exported readout module, in PyTorch;
- "cuda-kernel": the fused CUDA kernel (`s3rt.runtime.readout_kernel`), the default on CUDA
  when the library is built ("auto").
All four agree to rounding (tests/test_export.py, tests/test_readout_kernel_*.py).

Unlike exported graphs and engines, eager PyTorch is not bound to fixed shapes: the reference and
graph readouts run on the memory up to its last valid slot only (`FilledPrefix`). Slots are
written in order until the memory is full, so early in a clip that is a short prefix; the slots
cut off are all invalid, which the fixed-capacity readout gives weight exactly 0, so the result
is the same (tests/test_tracker.py).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from s3rt.graphs import GRAPHS
from s3rt.graphs.modules import ReferenceReadout, graph_modules
from s3rt.model.memory_readout import similarity, topk_softmax_dense
from s3rt.model.network import VOSNetwork
from s3rt.runtime.backends.base import Backend

READOUTS = ("auto", "dense", "reference", "graph", "cuda-kernel")


class KernelReadout(nn.Module):
    """The readout contract on the fused CUDA kernel."""

    def __init__(self, top_k: int):
        super().__init__()
        self.top_k = int(top_k)

    def forward(self, key, selection, mem_key, mem_shrinkage, mem_values, mem_valid):
        from s3rt.runtime.readout_kernel import cuda_memory_readout

        b, _, h, w = key.shape
        n, v, m = mem_values.shape[1:]
        usage = torch.zeros(b, m, device=key.device, dtype=torch.float32)
        dt = mem_key.dtype  # autocast may hand us FP16 query keys; the memory is FP32
        out = cuda_memory_readout(key.flatten(2).to(dt).contiguous(), selection.flatten(2).to(dt).contiguous(),
                                  mem_key, mem_shrinkage, mem_values, mem_valid, top_k=self.top_k, usage=usage)
        return out.view(b, n, v, h, w).float(), usage


class DenseReadout(nn.Module):
    """The readout contract in the official formulation: a dense [M, P] affinity with the top-k
    softmax weights of each pixel (zero elsewhere), multiplied with the values. In place on one
    [M, P] buffer, as the official `get_similarity` / `do_softmax(inplace=True)` pair (inference
    only). The -inf fill for invalid slots is skipped when every slot is valid (always, on the
    filled prefix without long-term memory)."""

    def __init__(self, top_k: int):
        super().__init__()
        self.top_k = int(top_k)

    def forward(self, key, selection, mem_key, mem_shrinkage, mem_values, mem_valid):
        b, _, h, w = key.shape
        n, v, m = mem_values.shape[1:]
        sim = similarity(mem_key.float(), mem_shrinkage.float(), key.flatten(2).float(), selection.flatten(2).float(),
                         inplace=True)
        if not bool(mem_valid.all()):
            sim.masked_fill_(~mem_valid.unsqueeze(2), float("-inf"))
        affinity = topk_softmax_dense(sim, self.top_k, inplace=True)  # [B,M,P]
        readout = mem_values.float().reshape(b, n * v, m) @ affinity
        return readout.view(b, n, v, h, w), affinity.sum(2)


class FilledPrefix(nn.Module):
    """A readout module run on the memory up to its last valid slot (all slots when that is all)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, key, selection, mem_key, mem_shrinkage, mem_values, mem_valid):
        m = mem_valid.shape[-1]
        valid_slots = mem_valid.any(0).nonzero()
        used = int(valid_slots[-1]) + 1 if valid_slots.numel() else m
        if used >= m:
            return self.inner(key, selection, mem_key, mem_shrinkage, mem_values, mem_valid)
        readout, usage = self.inner(key, selection, mem_key[..., :used], mem_shrinkage[..., :used],
                                    mem_values[..., :used], mem_valid[:, :used])
        full = usage.new_zeros(usage.shape[0], m)
        full[:, :used] = usage
        return readout, full


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: VOSNetwork, device="cpu", *, fp16: bool = False, top_k: int = 30,
                 readout: str = "auto", filled_prefix: bool = True):
        """readout: see the module docstring; filled_prefix: read only the memory up to its last
        valid slot (False: always the whole fixed capacity, as exported graphs do)."""
        super().__init__(device, model.cfg)
        if fp16 and self.device.type != "cuda":
            raise ValueError("fp16 autocast needs device='cuda'; on CPU the torch backend runs FP32")
        self.model = model.to(self.device).eval()
        self.fp16 = fp16
        self.top_k = top_k
        self.readout_impl = self._choose_readout(readout)
        self.modules = graph_modules(self.model, top_k)
        if self.readout_impl == "reference":
            self.modules["readout"] = ReferenceReadout(self.model, top_k)
        elif self.readout_impl == "dense":
            self.modules["readout"] = DenseReadout(top_k)
        elif self.readout_impl == "cuda-kernel":
            self.modules["readout"] = KernelReadout(top_k)  # (skips invalid slots itself)
        self.filled_prefix = filled_prefix and self.readout_impl != "cuda-kernel"
        if self.filled_prefix:
            self.modules["readout"] = FilledPrefix(self.modules["readout"])

    def _choose_readout(self, readout: str) -> str:
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}; got {readout!r}")
        if readout == "cuda-kernel" and self.device.type != "cuda":
            raise ValueError("the CUDA readout kernel needs device='cuda'")
        if readout != "auto":
            if readout == "cuda-kernel":
                from s3rt.runtime import readout_kernel
                ok = readout_kernel.is_available()
                if not ok:
                    raise RuntimeError(f"CUDA readout kernel unavailable: {ok.reason}")
            return readout
        if self.device.type == "cuda":
            from s3rt.runtime import readout_kernel
            if readout_kernel.is_available():
                return "cuda-kernel"
        return "dense"

    def describe(self) -> str:
        precision = "fp16 autocast" if self.fp16 else "fp32"
        prefix = ", filled memory only" if self.filled_prefix else ""
        return f"torch ({precision}) on {self.device}, readout: {self.readout_impl}{prefix}"

    def _autocast(self):
        if self.fp16:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def _run(self, graph, inputs):
        contract = GRAPHS[graph]
        with self._autocast():
            out = self.modules[graph](*(inputs[n] for n in contract.inputs))
        return dict(zip(contract.outputs, out if isinstance(out, tuple) else (out,)))
