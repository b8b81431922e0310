"""The graph contracts: the five graphs and their I/O, shapes, stride, padding, memory capacity,
the spec a graph set is made for, its manifest, and the modules that compute each graph.

Below the runtime and beside the exporter: the runtime, export, calibration and engine
building all read this package, and it imports only the model and I/O (never onnx).
"""

from s3rt.graphs.contracts import (BATCH_AXIS, GRAPHS, OBJECT_AXIS, STRIDE, GraphContract, TensorInfo, check_graph_name,
                                   eval_dim, example_inputs, graph_io)
from s3rt.graphs.manifest import (MANIFEST_NAME, GraphEntry, Manifest, ManifestError, checkpoint_label,
                                  config_from_dict, config_to_dict, load_manifest)
from s3rt.graphs.spec import (GraphSetSpec, SpecError, feature_size, memory_tokens, pad_to, padded_size, parse_size,
                              processing_size)

__all__ = ["BATCH_AXIS", "GRAPHS", "OBJECT_AXIS", "STRIDE", "GraphContract", "TensorInfo", "check_graph_name", "eval_dim",
           "example_inputs", "graph_io", "MANIFEST_NAME", "GraphEntry", "Manifest", "ManifestError",
           "checkpoint_label", "config_from_dict", "config_to_dict", "load_manifest", "GraphSetSpec", "SpecError",
           "feature_size", "memory_tokens", "pad_to", "padded_size", "parse_size", "processing_size"]
