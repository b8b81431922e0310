"""The registry of backends. Each backend is a subpackage with a `create(model=, graphs=,
device=, **options)` function (its loader) and a `Backend` subclass (its runner); adding one
means one subpackage and one entry here. Subpackages are imported only when used, so the
registry costs nothing for backends whose libraries are not installed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from s3rt.runtime.backends.base import Backend


@dataclass(frozen=True)
class BackendEntry:
    name: str
    module: str
    needs: str  # "model" (a PyTorch network), "graphs" (a graph set folder) or "engines" (an engine set folder)
    about: str


BACKENDS: dict[str, BackendEntry] = {e.name: e for e in (
    BackendEntry("torch", "s3rt.runtime.backends.pytorch", "model",
                 "the PyTorch reference network, eager (CPU or CUDA; fused CUDA readout kernel when built)"),
    BackendEntry("onnxruntime", "s3rt.runtime.backends.onnxrt", "graphs",
                 "exported graphs in ONNX Runtime (CPU, CUDA or TensorRT execution providers)"),
    BackendEntry("tensorrt", "s3rt.runtime.backends.tensorrt", "engines",
                 "TensorRT engines from s3rt build (CUDA; fused CUDA readout kernel between engines when built)"),
)}


def create_backend(name: str, *, model=None, graphs=None, device="cpu", **options) -> Backend:
    """A ready backend: `name` from BACKENDS, with the model or graph set it needs."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    module = importlib.import_module(BACKENDS[name].module)
    return module.create(model=model, graphs=graphs, device=device, **options)


__all__ = ["Backend", "BACKENDS", "BackendEntry", "create_backend"]
