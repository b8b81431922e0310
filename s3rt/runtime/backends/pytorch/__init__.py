"""The torch backend: the reference network's graph modules, run eagerly."""

from s3rt.runtime.backends.pytorch.runner import READOUTS, TorchBackend

__all__ = ["TorchBackend", "READOUTS", "create"]


def create(*, model=None, graphs=None, device="cpu", **options):
    """Registry entry: `model` (from s3rt.build_model) on `device`; options: fp16, top_k, readout."""
    if model is None:
        raise ValueError("the torch backend needs a model (s3rt.build_model(...))")
    if graphs is not None:
        raise ValueError("the torch backend runs the PyTorch model, not exported graphs: drop the graph set "
                         "(--export) or choose --backend onnxruntime")
    return TorchBackend(model, device, **options)
