"""The ONNX Runtime backend's runner: runs the five graphs of a graph set opened by
`loader.load_sessions`.

    backend = OnnxRuntimeBackend("exports/cutie-480p")                    # CPU
    backend = OnnxRuntimeBackend(d, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], device="cuda")

Tensors: on CPU the inputs are handed to ONNX Runtime as views of the torch tensors (no copy
when contiguous) and the outputs are written by ONNX Runtime straight into freshly allocated
torch tensors through I/O binding; on CUDA the same binding uses device pointers, so nothing
goes through the host.

Threads: the tracker's own PyTorch work between graph calls (padding, merging, softmax of the
masks) is light; on a small CPU run it with `torch.set_num_threads(1)`, or PyTorch's idle
OpenMP threads compete with ONNX Runtime's (measured on 2 cores at 480p: 1.10 s per frame with
one torch thread, 1.30-1.45 s with two).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from s3rt.graphs import eval_dim
from s3rt.runtime.backends.base import Backend
from s3rt.runtime.backends.onnxrt.loader import OrtSessions, load_sessions

_NP_DTYPES = {"float32": np.float32, "bool": np.bool_}
_TORCH_DTYPES = {"float32": torch.float32, "bool": torch.bool}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, graphs: str | os.PathLike | OrtSessions, providers=("CPUExecutionProvider",), *,
                 device: str | torch.device = "cpu", io_binding: bool = True, **load_options):
        """graphs: a folder written by `s3rt export` (opened with `load_sessions(graphs, providers,
        **load_options)`: strict_providers, threads, options, spinning, verify, preset, checkpoint),
        or sessions already opened. device: where the tracker keeps its tensors ('cpu', or 'cuda'
        with the CUDA / TensorRT providers)."""
        opened = graphs if isinstance(graphs, OrtSessions) else load_sessions(graphs, providers, **load_options)
        m = opened.manifest
        super().__init__(device, m.config(), spec=m.spec, source=str(m.directory))
        self.opened = opened
        self.manifest = m
        self.sessions = opened.sessions
        self.providers = opened.providers
        self.io_binding = io_binding
        self._on_gpu = opened.on_gpu
        if self.device.type == "cuda" and not self._on_gpu:
            warnings.warn(f"device={self.device} but the graphs run on {self.providers[0]}: every graph call copies "
                          "its tensors through the host", stacklevel=2)
        self._specs = {name: (g.inputs, g.outputs) for name, g in m.graphs.items()}

    def describe(self) -> str:
        return (f"onnxruntime {self.opened.ort_version} ({', '.join(self.providers)}) on {self.device}: "
                f"{self.spec.describe()}, {'/'.join(sorted(set(self.manifest.precisions.values())))}")

    def _run(self, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        in_specs, out_specs = self._specs[graph]
        sess = self.sessions[graph]
        feeds = {s["name"]: self._prepare(inputs[s["name"]], s) for s in in_specs}
        n = self._num_objects(graph, feeds)
        batch = int(feeds[in_specs[0]["name"]].shape[0])  # axis 0 of every tensor (dynamic in a multi-stream set)
        if not self.io_binding:
            outs = sess.run([s["name"] for s in out_specs], {k: v.numpy() for k, v in feeds.items()})
            return {s["name"]: torch.from_numpy(o).to(self.device) for s, o in zip(out_specs, outs)}
        binding = sess.io_binding()
        dev_type = "cuda" if self._on_gpu else "cpu"
        dev_id = (self.device.index or 0) if self._on_gpu else 0
        for spec in in_specs:
            t = feeds[spec["name"]]
            binding.bind_input(spec["name"], dev_type, dev_id, _NP_DTYPES[spec["dtype"]], list(t.shape), t.data_ptr())
        results = {}
        out_device = self.device if self._on_gpu else torch.device("cpu")
        for spec in out_specs:
            shape = [eval_dim(d, n, batch) for d in spec["shape"]]
            t = torch.empty(shape, dtype=_TORCH_DTYPES[spec["dtype"]], device=out_device)
            binding.bind_output(spec["name"], dev_type, dev_id, _NP_DTYPES[spec["dtype"]], shape, t.data_ptr())
            results[spec["name"]] = t
        if self._on_gpu:
            binding.synchronize_inputs()
        sess.run_with_iobinding(binding)
        if self._on_gpu:
            binding.synchronize_outputs()
        if out_device != self.device:
            results = {k: v.to(self.device) for k, v in results.items()}
        return results

    def _prepare(self, t: torch.Tensor, spec: dict) -> torch.Tensor:
        want = _TORCH_DTYPES[spec["dtype"]]
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(np.asarray(t))
        t = t.detach()
        if t.dtype != want:
            t = t.to(want)
        if self._on_gpu:
            if t.device.type != "cuda":
                t = t.to(self.device)
        elif t.device.type != "cpu":
            t = t.cpu()
        return t.contiguous()

    def _num_objects(self, graph: str, feeds: dict[str, torch.Tensor]) -> int:
        for spec in self._specs[graph][0]:
            for axis, d in enumerate(spec["shape"]):
                if d == "num_objects":
                    return int(feeds[spec["name"]].shape[axis])
        return 1
