"""FP16 and INT8 versions of an exported graph set (installed as `s3rt.calibration`).

    from s3rt.calibration import CalibrationOptions, calibrate
    calibrate("exports/cutie-480p", "exports/cutie-480p-int8", CalibrationOptions(precision="int8"),
              clips=["DAVIS/blackswan", "synthetic:1"])

TensorRT 11 has no FP16/INT8 builder flags, so the precision lives in the graphs:

- FP16 (`fp16.py`): an AutoCast-style conversion. LayerNorm, softmax statistics and top-k,
  reductions and norms, the GRU, `aggregate`, the object summarizer and the final prediction
  conv stay FP32 (`regions.py` finds them from the weights' names and the graph's structure),
  and so does every node whose values reach beyond `data_max` on the recorded inputs; graph
  inputs and outputs stay FP32.
- INT8 (`int8.py`): explicit symmetric Q/DQ with per-channel weights from ONNX Runtime's
  static quantizer, calibrated on what each graph receives while the FP32 set runs in the
  tracker over real clips (`record.py`, through `s3rt.parity.RecordingBackend`). By default
  the encoder and mask encoder go INT8 (their Conv/MatMul/Gemm nodes with weights, never the
  GRU, summarizer or prediction head) and the other graphs FP16.

The result is a complete graph set with its own manifest (precision, tool and version per
graph, nodes kept in FP32 and why, accuracy against FP32 on the recorded inputs, the
calibration set's clips, frame count and hash, and the source set's hash) that every later
stage reads like any other.

Why not ModelOpt itself: nvidia-modelopt 0.47's `[onnx]` extra pins onnx ~= 1.21 and
onnxruntime-gpu ~= 1.24 (CUDA 12) and pulls cupy-cuda12x, so it cannot share a venv with the
package's ONNX Runtime (1.31+/1.32, which TensorRT 11's execution provider needs: >= 1.27) and
the onnx our exporter uses. Its INT8 path runs `onnxruntime.quantization.quantize_static` with
the TensorRT-guided options used here; its AutoCast does what `fp16.py` does.

This package sits beside the runtime: it imports s3rt.graphs, s3rt.runtime (to run the FP32
tracker) and s3rt.parity; the runtime never imports it.
"""

from s3rt.calibration.clips import CalibrationClip, CalibrationError, check_clips, clip_set_record, load_clip, min_frames
from s3rt.calibration.graphset import PRECISIONS, CalibrationOptions, calibrate
from s3rt.calibration.record import Recording, Sample, record

__all__ = ["CalibrationClip", "CalibrationError", "CalibrationOptions", "PRECISIONS", "Recording", "Sample",
           "calibrate", "check_clips", "clip_set_record", "load_clip", "min_frames", "record"]
