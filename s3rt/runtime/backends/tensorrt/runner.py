"""The tensorrt backend's runner: the engines of an engine set (opened by `loader.load_engines`)
run on PyTorch CUDA tensors, on PyTorch's current stream.

Each call binds the inputs (made contiguous, in the engine's dtype) and freshly allocated
outputs (PyTorch's caching allocator, on the same stream) with `set_tensor_address`, sets the
input shapes only when the object count (or, for engines built from a graph set with the batch
axis, the call's batch: the number of streams a `StreamPool` call serves) changed since that
engine's last call, and enqueues
`execute_async_v3` on `torch.cuda.current_stream()`. Nothing is copied to the host and nothing
synchronizes, so the tracker's sequence of graphs (encoder, readout, fusion, decoder, mask
encoder) runs back to back on one stream. When the caller is on the legacy default stream (handle
0, PyTorch's default), on which TensorRT adds host synchronisations, the calls run on a stream of
the backend's own instead, ordered with the caller's stream by events (stream="current" turns
this off).

The memory readout runs the project's fused CUDA kernel (`s3rt.runtime.readout_kernel.
cuda_memory_readout`) on the same stream when its library is built (readout="auto" or
"cuda-kernel"), or the readout engine (readout="engine"); `describe()` says which ran.

cuda_graphs=True captures each graph call (engine, or the kernel) in a CUDA graph per object
count and batch, with static input and output buffers: a call copies its inputs into the static buffers,
replays the graph and returns copies of the outputs. A new object count drops the captures and
they are captured again. (Capturing a whole frame as one graph needs the tracker to hand over
its frame; it does not yet.)
"""

from __future__ import annotations

import os

import torch

from s3rt.graphs import GRAPHS, Manifest
from s3rt.runtime.backends.base import Backend
from s3rt.runtime.backends.tensorrt.loader import TrtEngines, load_engines
from s3rt.runtime.backends.tensorrt.plan import (BindingPlan, CudaGraphBook, ShapeState, batch_size, object_count,
                                                 readout_choice)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, engines: str | os.PathLike | TrtEngines, *, device: str | torch.device = "cuda",
                 readout: str = "auto", cuda_graphs: bool = False, stream: str = "auto",
                 graphs: Manifest | None = None, check_graphs: bool = True, verify: bool = True):
        """engines: a folder written by `s3rt build`, or an engine set already opened; device: a
        CUDA device; readout: 'auto' (the CUDA kernel when built, else the readout engine),
        'cuda-kernel' or 'engine'; cuda_graphs: replay each graph call from a CUDA graph; stream:
        'current' (always PyTorch's current stream) or 'auto' (the current stream, unless that is the
        legacy default stream, on which TensorRT synchronises the host: then a stream of the
        backend's own, ordered with the caller's by events); graphs / check_graphs / verify: see
        `load_engines`."""
        if stream not in ("auto", "current"):
            raise ValueError(f"stream must be 'auto' or 'current'; got {stream!r}")
        opened = engines if isinstance(engines, TrtEngines) else load_engines(
            engines, device=device, graphs=graphs, check_graphs=check_graphs, verify=verify)
        m = opened.manifest
        super().__init__(device, m.config(), spec=m.spec, source=str(m.directory))
        self.opened = opened
        self.manifest = m
        self.top_k = m.spec.top_k
        self.objects = m.objects
        self.batches = m.batches  # (min, opt, max) rows of the batch axis, or None (a fixed batch)
        self.readout_impl = readout_choice(readout, *self._kernel_available())
        self.cuda_graphs = bool(cuda_graphs)
        self.stream_mode = stream
        self._stream = None
        self.shapes = ShapeState()
        self.book = CudaGraphBook()
        self._static: dict[tuple[str, int, int], tuple[dict, dict]] = {}
        self._specs = {name: (e.inputs, e.outputs) for name, e in m.engines.items()}

    def _kernel_available(self) -> tuple[bool, str]:
        if self.device.type != "cuda":
            return False, f"the kernel runs on CUDA devices, not {self.device}"
        from s3rt.runtime import readout_kernel

        ok = readout_kernel.is_available(self.device)
        return bool(ok), ok.reason

    # ---- description and checks ------------------------------------------------------------
    def describe(self) -> str:
        graphs = f", CUDA graphs ({self.book.describe()})" if self.cuda_graphs else ""
        return (f"tensorrt {self.opened.tensorrt_version} on {self.device}: {self.manifest.describe()}, "
                f"{self.spec.describe()}, readout: {self.readout_impl}{graphs}")

    def check_stream(self, *, padded_size, batch: int, num_objects: int, memory_tokens: int) -> None:
        # the graph set's limits first (their fix is a new export), then the engines' object profile
        super().check_stream(padded_size=padded_size, batch=batch, num_objects=num_objects,
                             memory_tokens=memory_tokens)
        lo, _, hi = self.objects
        if not lo <= num_objects <= hi:
            fix = self.manifest.build_command(min_objects=min(lo, num_objects), max_objects=max(hi, num_objects))
            raise ValueError(f"this stream has {num_objects} objects, but the engines in {self.source} were built for "
                             f"{lo}..{hi}: {fix}")

    # ---- running -------------------------------------------------------------------------------
    def _run(self, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        in_specs, out_specs = self._specs[graph]
        shapes = {k: tuple(v.shape) for k, v in inputs.items()}
        n = object_count(in_specs, shapes)
        lo, _, hi = self.objects
        if n and not lo <= n <= hi:
            raise ValueError(f"{graph}: {n} objects, but the engines in {self.source} take {lo}..{hi}: "
                             f"{self.manifest.build_command(min_objects=min(lo, n), max_objects=max(hi, n))}")
        b = batch_size(in_specs, shapes)
        if b and self.batches is not None and not self.batches[0] <= b <= self.batches[2]:
            raise ValueError(f"{graph}: batch {b}, but the engines in {self.source} take {self.batches[0]}.."
                             f"{self.batches[2]}: {self.manifest.build_command()}")
        plan = BindingPlan.make(graph, in_specs, out_specs, n, b or None)
        with self._on_device():
            side = self._side_stream()
            if side is None:
                return self._call(graph, plan, inputs)
            # the caller is on the legacy default stream, on which TensorRT adds host synchronisations:
            # run on our own stream, ordered after the caller's work and before its next (events only)
            current = torch.cuda.current_stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                out = self._call(graph, plan, inputs)
            for t in inputs.values():
                if isinstance(t, torch.Tensor) and t.device.type == "cuda":
                    t.record_stream(side)  # allocated on the caller's stream, read on ours
            for t in out.values():
                t.record_stream(current)  # allocated on ours, read on the caller's
            current.wait_stream(side)
            return out

    def _call(self, graph: str, plan: BindingPlan, inputs: dict) -> dict[str, torch.Tensor]:
        if self.cuda_graphs:
            return self._run_captured(graph, plan, inputs)
        feeds = {b.name: self._prepare(graph, b.name, inputs[b.name]) for b in plan.inputs}
        outs = self._allocate(graph, plan)
        self._enqueue(graph, plan, feeds, outs)
        return self._results(outs)

    def _side_stream(self):
        """None: run on PyTorch's current stream (stream='current', or the caller chose a stream);
        else this backend's own stream (stream='auto' and the caller is on the legacy default
        stream, handle 0)."""
        if self.stream_mode == "current" or self.device.type != "cuda":
            return None
        if torch.cuda.current_stream(self.device).cuda_stream != 0:
            return None
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return self._stream

    def _on_device(self):
        """TensorRT runs on the current CUDA device: make it ours for the call."""
        import contextlib

        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _kernel_readout(self, feeds: dict[str, torch.Tensor], outs: dict[str, torch.Tensor]) -> None:
        from s3rt.runtime.readout_kernel import cuda_memory_readout

        key = feeds["key"]
        b, _, h, w = key.shape
        outs["usage"].zero_()
        out = outs["readout"].view(b, outs["readout"].shape[1], outs["readout"].shape[2], h * w)
        cuda_memory_readout(key.flatten(2), feeds["selection"].flatten(2), feeds["mem_key"], feeds["mem_shrinkage"],
                            feeds["mem_values"], feeds["mem_valid"], top_k=self.top_k, usage=outs["usage"],
                            out=out, out_dtype=out.dtype)

    def _enqueue(self, graph: str, plan: BindingPlan, feeds: dict, outs: dict) -> None:
        """Everything on the current stream: the kernel readout, or one engine."""
        if graph == "readout" and self.readout_impl == "cuda-kernel":
            self._kernel_readout(feeds, outs)
            return
        context: "trt.IExecutionContext" = self.opened.contexts[graph]  # noqa: F821 (for the API check)
        if plan.dynamic and self.shapes.needs_update(graph, plan.shape_key):
            for b in plan.inputs:
                if not context.set_input_shape(b.name, b.shape):
                    raise RuntimeError(f"{graph}: TensorRT refused input shape {b.shape} for {b.name} (engines in "
                                       f"{self.source}, {self.manifest.describe()})")
            self.shapes.updated(graph, plan.shape_key)
        for name, t in feeds.items():
            context.set_tensor_address(name, t.data_ptr())
        for name, t in outs.items():
            context.set_tensor_address(name, t.data_ptr())
        if not context.execute_async_v3(self._stream_handle()):
            raise RuntimeError(f"{graph}: TensorRT execute_async_v3 failed (engines in {self.source}; its log says "
                               "why)")

    def _stream_handle(self) -> int:
        """PyTorch's current stream on our device (the kernel readout uses it too)."""
        return torch.cuda.current_stream(self.device).cuda_stream

    def _prepare(self, graph: str, name: str, t: torch.Tensor) -> torch.Tensor:
        want = self.opened.dtypes[graph][name]
        if t.device != self.device:
            t = t.to(self.device)
        if t.dtype != want:
            t = t.to(want)
        return t.contiguous()

    def _allocate(self, graph: str, plan: BindingPlan) -> dict[str, torch.Tensor]:
        dt = self.opened.dtypes[graph]
        return {b.name: torch.empty(b.shape, dtype=dt[b.name], device=self.device) for b in plan.outputs}

    @staticmethod
    def _results(outs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # the tracker's state is FP32; FP16 engine outputs are widened (on the stream, no sync)
        return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in outs.items()}

    # ---- CUDA graphs ---------------------------------------------------------------------------
    def _run_captured(self, graph: str, plan: BindingPlan, inputs: dict) -> dict[str, torch.Tensor]:
        key = (graph, plan.num_objects, plan.batch)
        captured = self.book.lookup(graph, plan.num_objects, plan.batch)
        if captured is None:
            self._static = {k: v for k, v in self._static.items() if k[1] in (0, plan.num_objects)}
            feeds = {b.name: self._prepare(graph, b.name, inputs[b.name]).clone() for b in plan.inputs}
            outs = self._allocate(graph, plan)
            self._enqueue(graph, plan, feeds, outs)  # warm-up (TensorRT needs one enqueue after a shape change)
            capture_stream = torch.cuda.Stream(self.device)
            capture_stream.wait_stream(torch.cuda.current_stream(self.device))
            cuda_graph = torch.cuda.CUDAGraph()
            # thread_local: TensorRT and the kernel library call CUDA outside PyTorch during the capture
            with torch.cuda.graph(cuda_graph, stream=capture_stream, capture_error_mode="thread_local"):
                self._enqueue(graph, plan, feeds, outs)
            torch.cuda.current_stream(self.device).wait_stream(capture_stream)
            self._static[key] = (feeds, outs)
            self.book.store(graph, plan.num_objects, cuda_graph, plan.batch)
            captured = cuda_graph
        feeds, outs = self._static[key]
        for b in plan.inputs:
            feeds[b.name].copy_(inputs[b.name].to(self.device, non_blocking=True), non_blocking=True)
        captured.replay()
        self.book.replayed()
        return {k: v.clone() for k, v in self._results(outs).items()}


__all__ = ["TensorRTBackend", "GRAPHS"]
