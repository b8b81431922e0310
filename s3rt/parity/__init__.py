"""Parity of a backend against the PyTorch reference (per graph and per stream).

- `check.run_parity`: the two trackers over one clip, in lockstep; the report dict;
- `recording.RecordingBackend`: records the reference's graph calls;
- `compare`: tensors, masks, graphs on recorded inputs, and the diagnosis of a failing frame;
- `report`: the text tables.
"""

from s3rt.parity.check import (DEFAULT_TOLERANCE, REDUCED_CRITERIA, ParityOptions, ReducedCriteria, check_inputs,
                               lowest_precision, run_parity)
from s3rt.parity.compare import compare, compare_graphs, diagnose_frame, mask_iou, reference_jitter
from s3rt.parity.recording import RecordingBackend
from s3rt.parity.report import format_report, format_speed

__all__ = ["run_parity", "ParityOptions", "DEFAULT_TOLERANCE", "ReducedCriteria", "REDUCED_CRITERIA",
           "lowest_precision", "check_inputs", "compare", "compare_graphs",
           "diagnose_frame", "mask_iou", "reference_jitter", "RecordingBackend", "format_report", "format_speed"]
