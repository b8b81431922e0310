"""Splitting the network into ONNX graphs: export wrappers, the I/O contracts with shapes, the
manifest, and the TensorRT operator allow-list (installed as `s3rt.export`)."""

from s3rt.export.exporter import ExportError, export_graphs, memory_tokens, parse_size
from s3rt.export.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest
from s3rt.export.ops import check_model_ops

__all__ = ["export_graphs", "ExportError", "memory_tokens", "parse_size", "Manifest", "ManifestError",
           "load_manifest", "MANIFEST_NAME", "check_model_ops"]
