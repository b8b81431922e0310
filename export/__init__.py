"""Splitting the network into ONNX graphs (installed as `s3rt.export`): the exporter, the
export-time operator substitutions and the TensorRT operator allow-list. The contracts and
the manifest it writes live in `s3rt.graphs`, which later stages read without this package."""

from s3rt.export.exporter import ExportError, export_graphs
from s3rt.export.ops import check_model_ops

__all__ = ["export_graphs", "ExportError", "check_model_ops"]
