"""Recording what each graph really receives: the FP32 graph set runs in the tracker (ONNX
Runtime on the CPU) over the calibration clips, wrapped in `s3rt.parity.RecordingBackend`,
which keeps every graph call's inputs and FP32 outputs on the recorded frames.

Frames are recorded evenly over every clip (all of them when the clips are short), so the
samples hold first frames, memory frames (the mask encoder runs only there) and later frames
that read a full memory; each sample says which clip and frame it came from, whether that
frame was a memory frame and how full the memory was (the valid fraction of the readout's
first bank on that frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from s3rt.graphs import GRAPHS
from s3rt.parity.recording import RecordingBackend
from s3rt.runtime.backends import create_backend
from s3rt.runtime.tracker import Tracker


@dataclass
class Sample:
    graph: str
    inputs: dict  # name -> numpy array (float32 or bool)
    outputs: dict  # name -> numpy array, the FP32 graph's outputs
    clip: str
    frame: int
    memory_frame: bool
    memory_fill: float  # valid fraction of the first memory bank on this frame (0 before any readout)


@dataclass
class Recording:
    samples: dict = field(default_factory=dict)  # graph -> [Sample]
    frames_run: int = 0
    frames_recorded: int = 0

    def inputs(self, graph: str) -> list[dict]:
        return [s.inputs for s in self.samples.get(graph, [])]

    def summary(self) -> dict:
        out = {}
        for g, ss in self.samples.items():
            out[g] = {"samples": len(ss), "memory_frames": sum(s.memory_frame for s in ss),
                      "full_memory": sum(s.memory_fill >= 0.999 for s in ss),
                      "first_frames": sum(s.frame == 0 for s in ss)}
        return out


def _np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _spread(items: list, n: int) -> list:
    """n items spread evenly over the list (all when it is shorter)."""
    if len(items) <= n:
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def record(export_dir, clips, *, size: int = 480, mem_every: int = 5, max_samples: int = 32,
           graphs=GRAPHS, progress: bool = False, threads: int | None = None) -> Recording:
    """Run the FP32 graphs of `export_dir` in the tracker over `clips` and keep up to
    `max_samples` recorded calls per graph in `graphs`, spread over every clip."""
    total = sum(len(c.frames) for c in clips)
    # record every k-th frame, plus memory frames while the mask encoder has few samples
    k = max(1, math.ceil(total / max(1, 2 * max_samples)))
    inner = create_backend("onnxruntime", graphs=export_dir, verify=False, threads=threads)
    rec = RecordingBackend(inner, per_graph=10**9, keep_last=False)
    wanted = set(graphs)
    recording = Recording(samples={g: [] for g in GRAPHS if g in wanted})
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc="calibrate: record FP32 graph inputs", unit="frame")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # ONNX Runtime does the work; torch's idle threads only compete
    try:
        for clip in clips:
            tracker = Tracker(backend=rec, size=size, mem_every=mem_every)
            mask_encoder_seen = 0
            for i, frame in enumerate(clip.frames):
                predicted_memory = i == 0 or i % mem_every == 0
                rec.recording = (i % k == 0) or (predicted_memory and mask_encoder_seen < max_samples)
                start = len(rec.records)
                result = tracker.step(frame, clip.first_mask if i == 0 else None)
                new = rec.records[start:]
                del rec.records[start:]
                recording.frames_run += 1
                if new:
                    recording.frames_recorded += 1
                fill = 0.0
                for graph, ins, _ in new:
                    if graph == "readout":
                        fill = float(ins["mem_valid"][0].float().mean())
                        break
                for graph, ins, outs in new:
                    if graph == "mask_encoder":
                        mask_encoder_seen += 1
                    if graph in wanted:
                        recording.samples[graph].append(Sample(
                            graph, {k_: _np(v) for k_, v in ins.items()}, {k_: _np(v) for k_, v in outs.items()},
                            clip.name, i, bool(result.memory_frame), fill))
                if bar is not None:
                    bar.update(1)
    finally:
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
    recording.samples = {g: _spread(ss, max_samples) for g, ss in recording.samples.items()}
    return recording
