"""The ONNX Runtime backend: runs the five exported graphs (`s3rt export`).

    backend = OnnxRuntimeBackend("exports/cutie-480p")                    # CPU
    backend = OnnxRuntimeBackend(d, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], device="cuda")
    tracker = Tracker(backend=backend, **backend.tracker_options())

The manifest is read and checked (files, sha256, expected preset / checkpoint) before any
session is made. The graphs have fixed shapes apart from the object axis, so `check_stream`
refuses, before any work, a stream whose padded size, batch, object count or memory capacity
differs from the export, and says which option to change.

Tensors: on CPU the inputs are handed to ONNX Runtime as numpy views of the torch tensors (no
copy when contiguous) and the outputs are written by ONNX Runtime straight into freshly
allocated torch tensors through I/O binding; on CUDA the same binding uses device pointers, so
nothing goes through the host.

Threads: the tracker's own PyTorch work between graph calls (padding, merging, softmax of the
masks) is light; on a small CPU run it with `torch.set_num_threads(1)`, or PyTorch's idle
OpenMP threads compete with ONNX Runtime's (measured on 2 cores at 480p: 1.10 s per frame with
one torch thread, 1.30-1.45 s with two).

ONNX Runtime silently falls back to the CPU when a requested execution provider cannot load
(for example CUDA without a driver); this backend compares `session.get_providers()` with the
request and warns (or raises with strict_providers=True).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from s3rt.export.wrappers import eval_dim
from s3rt.runtime.backends.base import Backend
from s3rt.runtime.graphs import GRAPHS

_NP_DTYPES = {"float32": np.float32, "bool": np.bool_}
_TORCH_DTYPES = {"float32": torch.float32, "bool": torch.bool}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class ProviderFallbackError(RuntimeError):
    """A requested ONNX Runtime execution provider is not active (strict_providers=True)."""


def _provider_name(p) -> str:
    return p[0] if isinstance(p, (tuple, list)) else str(p)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, export_dir: str | os.PathLike, providers=("CPUExecutionProvider",), *,
                 strict_providers: bool = False, device: str | torch.device = "cpu", threads: int | None = None,
                 session_options=None, preset: str | None = None, checkpoint=None, verify: bool = True,
                 io_binding: bool = True, spinning: bool = False):
        """export_dir: a folder written by `s3rt export`. providers: ONNX Runtime execution
        providers in priority order (names or (name, options) pairs). strict_providers: raise
        instead of warning when a requested provider is not active. device: where the tracker
        keeps its tensors ('cpu', or 'cuda' with the CUDA / TensorRT providers). threads: intra-op
        threads (default: ONNX Runtime's, one per physical core). session_options: a ready
        onnxruntime.SessionOptions (overrides `threads`). preset / checkpoint: what the graphs
        must have been exported from (ManifestError otherwise). verify: check the files' sha256.
        spinning: let ONNX Runtime's worker threads spin after each call (off by default: the
        tracker runs PyTorch code between graph calls, which spinning workers starve; on 2 cores
        that made small frames 7x slower)."""
        from s3rt.export.manifest import load_manifest

        super().__init__(device)
        self.manifest = load_manifest(export_dir, verify=verify, preset=preset, checkpoint=checkpoint)
        self.export_dir = Path(export_dir)
        self.model_config = self.manifest.config()
        self.top_k = self.manifest.top_k
        self.strict_providers = strict_providers
        self.io_binding = io_binding

        import onnxruntime as ort

        self._ort = ort
        requested = [p for p in providers] if providers else ["CPUExecutionProvider"]
        self.requested_providers = [_provider_name(p) for p in requested]
        available = ort.get_available_providers()
        missing = [p for p in self.requested_providers if p not in available]
        if missing:
            kept = [p for p in requested if _provider_name(p) in available] or ["CPUExecutionProvider"]
            self._fallback(missing, f"not available in this onnxruntime {ort.__version__} (available: "
                                    f"{', '.join(available)})", [_provider_name(p) for p in kept])
            requested = kept
        if session_options is None:
            session_options = ort.SessionOptions()
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session_options.log_severity_level = 3
            if threads:
                session_options.intra_op_num_threads = int(threads)
            if not spinning:
                session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session_options = session_options
        self.sessions = {}
        for name in GRAPHS:
            self.sessions[name] = ort.InferenceSession(str(self.manifest.graph_path(name)), session_options,
                                                       providers=requested)
        active = self.sessions["encoder"].get_providers()
        self.providers = active
        inactive = [p for p in self.requested_providers if p not in active and p not in missing]
        if inactive:
            self._fallback(inactive, "failed to start (ONNX Runtime's log says why)", active)
        self._on_gpu = active[0] in _GPU_PROVIDERS
        if self.device.type == "cuda" and not self._on_gpu:
            warnings.warn(f"device={self.device} but the graphs run on {active[0]}: every graph call copies its "
                          "tensors through the host", stacklevel=2)
        self._specs = {name: (self.manifest.graphs[name].inputs, self.manifest.graphs[name].outputs)
                       for name in GRAPHS}

    def _fallback(self, providers: list[str], why: str, instead: list[str]) -> None:
        where = "the CPU" if instead == ["CPUExecutionProvider"] else ", ".join(instead)
        msg = (f"onnxruntime: requested execution provider(s) {', '.join(providers)} {why}; the graphs run on "
               f"{where} instead. Install the matching onnxruntime build (e.g. onnxruntime-gpu with a CUDA "
               "driver) or request only the providers you have")
        if self.strict_providers:
            raise ProviderFallbackError(msg + " (strict_providers=True)")
        warnings.warn(msg + " (pass strict_providers=True to make this an error)", RuntimeWarning, stacklevel=3)

    # ---- Backend interface -------------------------------------------------------------
    def describe(self) -> str:
        m = self.manifest
        return (f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)}) on {self.device}: {m.preset} "
                f"{m.padded_size[0]}x{m.padded_size[1]}, up to {m.max_objects} objects, {m.memory_tokens} memory "
                f"tokens, batch {m.batch}, fp32")

    def tracker_options(self) -> dict:
        """Tracker keyword arguments that fit these graphs (memory frames, long-term, flip, top-k)."""
        return self.manifest.tracker_options()

    def check_stream(self, *, image_size, batch, num_objects, memory_tokens) -> None:
        m = self.manifest
        H, W = m.padded_size
        where = f"the graphs in {self.export_dir}"
        if tuple(image_size) != (H, W):
            h, w = image_size
            raise ValueError(
                f"this stream pads frames to {h}x{w}, but {where} were exported for {H}x{W}: export with "
                f"--size {h}x{w}, or give frames that pad to {H}x{W} (resize them, e.g. the tracker's size / "
                f"--size option, so that the padded frame is {H}x{W})")
        if batch != m.batch:
            raise ValueError(
                f"this stream runs batch {batch} ({'with' if batch == 2 else 'without'} flip augmentation), but "
                f"{where} have batch {m.batch}: " + ("export with --flip-aug" if batch == 2 else
                                                    "run with flip augmentation (--flip-aug) or export without it"))
        if num_objects > m.max_objects:
            raise ValueError(f"this stream has {num_objects} objects, but {where} take at most {m.max_objects}: "
                             f"export with --max-objects {num_objects} (or more)")
        if memory_tokens != m.memory_tokens:
            hw = (H // 16) * (W // 16)
            frames, extra = divmod(memory_tokens, hw)
            have = f"{m.memory_frames} memory frames" + (f" + {m.long_term_tokens} long-term tokens"
                                                          if m.long_term_tokens else "")
            want = f"{frames} memory frames" + (f" + {extra} long-term tokens" if extra else "")
            raise ValueError(
                f"this stream's memory holds {memory_tokens} tokens ({want}), but {where} were exported for "
                f"{m.memory_tokens} ({have}): export with --memory-frames {frames}"
                + (f" --long-term-tokens {extra}" if extra else "")
                + f", or run with --max-mem-frames {m.memory_frames}"
                + (f" and long-term memory of {m.long_term_tokens} tokens" if m.long_term_tokens else
                   " and no long-term memory"))

    def run(self, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.check_graph(graph)
        in_specs, out_specs = self._specs[graph]
        sess = self.sessions[graph]
        missing = [s["name"] for s in in_specs if s["name"] not in inputs]
        if missing:
            raise KeyError(f"{graph}: missing inputs {missing}; the graph takes {[s['name'] for s in in_specs]}")
        feeds = {s["name"]: self._prepare(inputs[s["name"]], s) for s in in_specs}
        n = self._num_objects(graph, feeds)
        for spec in in_specs:
            want = tuple(eval_dim(d, n) for d in spec["shape"])
            if tuple(feeds[spec["name"]].shape) != want:
                raise ValueError(f"{graph}: input {spec['name']} has shape {tuple(feeds[spec['name']].shape)}, but the "
                                 f"exported graph takes {want} ({self.manifest.directory}/manifest.json)")
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
            shape = [eval_dim(d, n) for d in spec["shape"]]
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

    # ---- helpers -------------------------------------------------------------------------
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
                    n = int(feeds[spec["name"]].shape[axis])
                    if not 1 <= n <= self.manifest.max_objects:
                        raise ValueError(f"{graph}: {n} objects, but the graphs take 1..{self.manifest.max_objects}"
                                         f": export with --max-objects {n}")
                    return n
        return 1
