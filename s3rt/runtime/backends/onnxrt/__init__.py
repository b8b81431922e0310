"""The ONNX Runtime backend: `loader` opens a graph set, `runner` runs it."""

from s3rt.runtime.backends.onnxrt.loader import GraphLoadError, OrtSessions, ProviderFallbackError, load_sessions
from s3rt.runtime.backends.onnxrt.runner import OnnxRuntimeBackend

__all__ = ["OnnxRuntimeBackend", "OrtSessions", "GraphLoadError", "ProviderFallbackError", "load_sessions", "create"]


def create(*, model=None, graphs=None, device="cpu", providers=("CPUExecutionProvider",), **options):
    """Registry entry: the graphs of `graphs` (a folder from `s3rt export`) in ONNX Runtime."""
    if graphs is None:
        raise ValueError("the onnxruntime backend needs a graph set: graphs=<a folder written by s3rt export> "
                         "(--export DIR)")
    return OnnxRuntimeBackend(graphs, providers, device=device, **options)
