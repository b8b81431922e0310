"""The TensorRT backend: `loader` opens and checks an engine set (from `s3rt build`), `runner`
runs it on PyTorch CUDA tensors with the fused CUDA readout kernel between engines, `plan` is
its plain-Python bookkeeping."""

from s3rt.runtime.backends.tensorrt.loader import TrtEngines, check_engine_set, load_engines
from s3rt.runtime.backends.tensorrt.plan import READOUT_CHOICES

__all__ = ["TrtEngines", "check_engine_set", "load_engines", "READOUT_CHOICES", "create"]


def create(*, model=None, graphs=None, device="cuda", engines=None, **options):
    """Registry entry: the engines in `engines` (a folder written by `s3rt build`) on `device`.

    graphs: the graph set they were built from (a folder or None); when it is given, the engines
    must have been built from exactly those graphs. For convenience `graphs` may itself be the
    engine folder (it holds engines.json). Options: readout ('auto', 'cuda-kernel', 'engine'),
    cuda_graphs, check_graphs, verify."""
    from pathlib import Path

    from s3rt.engine_manifest import ENGINE_MANIFEST_NAME
    from s3rt.graphs import load_manifest
    from s3rt.runtime.backends.tensorrt.runner import TensorRTBackend

    if model is not None:
        raise ValueError("the tensorrt backend runs engines, not a PyTorch model: pass engines=<a folder written by "
                         "s3rt build> (--engines DIR)")
    if engines is None and graphs is not None and (Path(graphs) / ENGINE_MANIFEST_NAME).is_file():
        engines, graphs = graphs, None
    if engines is None:
        raise ValueError("the tensorrt backend needs an engine set: engines=<a folder written by s3rt build> "
                         "(--engines DIR; build one with s3rt build --graphs GRAPHS --out DIR)")
    source = load_manifest(graphs, verify=False) if graphs is not None else None
    return TensorRTBackend(engines, device=device, graphs=source, **options)
