"""The Triton Python-backend model that `s3rt triton-repo` writes (its model.py imports this).

One instance holds a `StreamPool`; each stream's state lives in it, keyed by the sequence's
correlation id. Per `execute` (the requests Triton's sequence batcher gathered, at most one per
sequence):

- READY = 0 (a padding request of the direct strategy): answered with no outputs, no state touched;
- START = 1: the stream's state is (re)made, then the frame is tracked (give MASK on it);
- a request of an id the instance does not hold and without START (never started, ended, or
  evicted): an error response, nothing else touched;
- END = 1: the frame is tracked without a memory update and the state is freed;
- streams idle longer than the server's `max_sequence_idle_microseconds` (read from the model's
  own config, so the two are equal) are freed at the next execute: the server does not tell the
  model when it drops a sequence (measured with tritonserver 2.51; see docs/serving.md).

All frames of one execute run as one `StreamPool.try_step`; a refused frame (wrong image size,
a mask with an id outside 1..255, more objects than the graph set takes) gets its own error
response and leaves its stream and the others as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from s3rt.serving.pool import StreamFrame, StreamPool
from s3rt.serving.triton_repo import OPTIONS_FILE


def make_pool(version_dir: Path, options: dict, device: str | None = None) -> StreamPool:
    """The pool a repository's options describe (graph or engine paths relative to version_dir)."""
    tracker = dict(options.get("tracker", {}))
    backend = options["backend"]
    dev = device or options.get("device", "cpu")
    if backend == "torch":
        from s3rt.model import build_model
        ckpt = options.get("checkpoint")
        model = build_model(options["preset"], str(version_dir / ckpt) if ckpt else None)
        return StreamPool(model, backend="torch", device=dev, **tracker)
    extra = {"providers": options["providers"]} if "providers" in options else {}
    return StreamPool(backend=backend, graphs=str(version_dir / options["graphs"]), device=dev, **tracker, **extra)


class TritonPythonModel:
    """Triton's Python-backend interface (initialize / execute / finalize)."""

    def __init__(self, pb_utils=None):
        self._pb = pb_utils  # tests pass a stand-in; Triton's stub provides the real module

    def initialize(self, args):
        if self._pb is None:
            import triton_python_backend_utils as pb_utils
            self._pb = pb_utils
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        options = json.loads((version_dir / OPTIONS_FILE).read_text())
        device = None
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{int(args.get('model_instance_device_id', 0))}"
        seq = config.get("sequence_batching", {})
        self.idle_s = int(seq.get("max_sequence_idle_microseconds", 0) or 0) / 1e6 or None
        self.output_prob = any(o["name"] == "PROB" for o in config.get("output", []))
        self.pool = make_pool(version_dir, options, device)
        self.evicted = 0  # streams freed on the idle timeout (for tests and logs)

    # ---- one batch of requests -----------------------------------------------------------------
    def execute(self, requests):
        pb = self._pb
        if self.idle_s:
            self.evicted += len(self.pool.close_idle(self.idle_s))
        responses = [None] * len(requests)
        rounds: list[dict] = [{}]  # normally one round; a repeated id (not sent by the batcher) waits
        for i, req in enumerate(requests):
            try:
                if not self._flag(req, "READY", default=1):
                    responses[i] = pb.InferenceResponse(output_tensors=[])
                    continue
                corrid = self._scalar(req, "CORRID")
                start, end = self._flag(req, "START"), self._flag(req, "END")
                image = self._input(req, "IMAGE")
                mask = self._input(req, "MASK")
                if image is None:
                    raise ValueError("the request has no IMAGE input")
                image, mask = image[0], None if mask is None else mask[0]
            except Exception as e:  # noqa: BLE001 - a malformed request gets its own error
                responses[i] = self._error(f"bad request: {e}")
                continue
            if not start and corrid not in self.pool:
                responses[i] = self._error(
                    f"stream {corrid}: this instance holds no state for it (it was never started with START, has "
                    f"ended, or was idle longer than {self.idle_s} s); start it again with START and a mask")
                continue
            target = next((r for r in rounds if corrid not in r), None)
            if target is None:
                target = {}
                rounds.append(target)
            target[corrid] = (i, StreamFrame(image, mask, end=bool(end)), bool(start), bool(end))
        for r in rounds:
            self._run_round(r, responses)
        return responses

    def _run_round(self, round_: dict, responses: list) -> None:
        frames = {}
        for corrid, (i, frame, start, _) in round_.items():
            if start:
                if corrid in self.pool:
                    self.pool.close(corrid)
                self.pool.open(corrid)
            frames[corrid] = frame
        results, errors = self.pool.try_step(frames)
        for corrid, (i, _, start, end) in round_.items():
            if corrid in errors:
                e = errors[corrid]
                responses[i] = self._error(f"stream {corrid}: {type(e).__name__}: {e}")
                if start and corrid in self.pool and self.pool.streams[corrid].frame_index < 0:
                    self.pool.close(corrid)  # a refused first frame leaves no state behind
            else:
                responses[i] = self._response(results[corrid])
            if end and corrid in self.pool:
                self.pool.close(corrid)

    # ---- tensors -------------------------------------------------------------------------------
    def _response(self, result):
        pb = self._pb
        outs = [pb.Tensor("MASK_OUT", result.mask[None].astype(np.uint8)),
                pb.Tensor("OBJECT_IDS", np.asarray([result.object_ids], dtype=np.int32).reshape(1, -1))]
        if self.output_prob:
            outs.append(pb.Tensor("PROB", result.prob.cpu().numpy()[None].astype(np.float32)))
        return pb.InferenceResponse(output_tensors=outs)

    def _error(self, message: str):
        return self._pb.InferenceResponse(output_tensors=[], error=self._pb.TritonError(message))

    def _input(self, req, name):
        t = self._pb.get_input_tensor_by_name(req, name)
        return None if t is None else t.as_numpy()

    def _scalar(self, req, name):
        arr = self._input(req, name)
        if arr is None:
            raise ValueError(f"the request has no {name} control (the model needs the sequence batcher)")
        return int(np.asarray(arr).reshape(-1)[0])

    def _flag(self, req, name, default=0) -> int:
        arr = self._input(req, name)
        return default if arr is None else int(np.asarray(arr).reshape(-1)[0])

    def finalize(self):
        for sid in list(self.pool.streams):
            self.pool.close(sid)
