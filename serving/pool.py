"""The stream pool: many streams on one backend and device, their graph calls batched.

Each stream is a `Tracker` of its own (its objects, memory schedule, additions and deletions,
fixed-capacity state), all sharing one backend. A pool step takes one frame for any subset of
the open streams and drives every stream's `Tracker.step_graphs` (the tracker's own control
flow, as a generator of graph calls) in lockstep:

- the pending calls are grouped by graph and by the shapes of their inputs apart from axis 0,
  and each group runs as ONE call with its inputs concatenated along axis 0 (the batch axis;
  a flip-augmented stream brings 2), its outputs split back per stream;
- graphs are served in pipeline order (encoder, readout, fusion, decoder, mask_encoder): a
  stream that reaches a later graph waits until no stream needs an earlier one, so streams
  whose frames take different paths (a first mask, a memory frame, two memory buckets) meet
  again at the later graph and are batched there.

So the encoder runs once for all streams whose frames have one padded size, and the per-object
graphs take the streams whose tensors have the same shapes together (same number of objects in
the call and, for the readout, the same memory capacity). What cannot be batched (another frame
size, another object count) runs in its own call; nothing is padded, so a stream computes what
it computes alone (FP32: max |Δ prob| ~1e-7 from GEMM blocking; tests/test_serving_pool.py).

A graph set made for one stream per call (max_streams 1) still works: every group is split into
calls of the batch the graphs take (`max_batch`).
"""

from __future__ import annotations

import inspect
import time
from collections import Counter
from dataclasses import dataclass

import torch

from s3rt.graphs import GRAPHS
from s3rt.runtime.backends import Backend, create_backend
from s3rt.runtime.tracker import TrackResult, Tracker

_ORDER = {g: i for i, g in enumerate(GRAPHS)}  # encoder, readout, fusion, decoder, mask_encoder
_TRACKER_OPTIONS = {n for n, p in inspect.signature(Tracker.__init__).parameters.items()
                    if p.kind == p.KEYWORD_ONLY and n not in ("backend", "device", "graphs")}


@dataclass
class StreamFrame:
    """One stream's input of a pool step: as the arguments of `Tracker.step`."""

    image: object  # RGB uint8 [H,W,3], numpy or torch
    mask: object = None  # optional [H,W] integer object ids
    objects: object = None  # which ids of the mask to use (default: all)
    end: bool = False  # the stream's last frame: no memory update


class PoolStepError(RuntimeError):
    """Some streams of a pool step failed. The other streams did advance: their results are in
    `.results`; `.errors` maps each failed stream to its exception."""

    def __init__(self, results: dict, errors: dict):
        self.results, self.errors = results, errors
        first = next(iter(errors.items()))
        super().__init__(f"{len(errors)} of {len(errors) + len(results)} streams failed; stream {first[0]!r}: "
                         f"{type(first[1]).__name__}: {first[1]}")


class StreamPool:
    """S streams on one backend.

    StreamPool(model=None, *, backend="torch", device="cpu", graphs=None, max_streams=None,
               max_batch=None, **options)

    model / backend / device / graphs and `options` are `Tracker`'s (tracker options such as size,
    mem_every, flip_aug, and backend options such as providers); every stream gets a tracker with
    the same options on one shared backend. max_streams: how many streams may be open at once
    (None: no limit). max_batch: the largest batch of one graph call (default: what the graph
    set takes, `spec.max_batch`; no limit for the torch backend).
    """

    def __init__(self, model=None, *, backend: str | Backend = "torch", device: str = "cpu", graphs=None,
                 max_streams: int | None = None, max_batch: int | None = None, **options):
        tracker_options = {k: v for k, v in options.items() if k in _TRACKER_OPTIONS}
        backend_options = {k: v for k, v in options.items() if k not in _TRACKER_OPTIONS}
        if not isinstance(backend, Backend):
            if backend == "torch" and tracker_options.get("top_k") is not None:
                backend_options["top_k"] = tracker_options["top_k"]
            backend = create_backend(backend, model=model, graphs=graphs, device=device, **backend_options)
        elif backend_options or graphs is not None:
            raise ValueError("backend options and graphs= go with a backend name, not a ready Backend")
        self.backend = backend
        self.model = model
        self._tracker_options = tracker_options
        self._template = self._new_tracker()  # checks the options once, up front
        spec = backend.spec
        limit = spec.max_batch if spec is not None else None
        if max_batch is not None:
            if max_batch < self._template.batch or (limit is not None and max_batch > limit):
                raise ValueError(f"max_batch={max_batch}: the graphs take a batch of {self._template.batch}.."
                                 f"{limit if limit is not None else 'any'}")
            limit = max_batch
        self.max_batch = limit
        if max_streams is not None and max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        self.max_streams = max_streams
        self.streams: dict[object, Tracker] = {}
        self.last_used: dict[object, float] = {}
        self.calls: Counter = Counter()  # (graph, batch) -> graph calls made
        self.stream_calls: Counter = Counter()  # graph -> per-stream calls those served
        self.profile = bool(tracker_options.get("profile"))
        self.last_timings: dict[str, float] = {}

    def _new_tracker(self) -> Tracker:
        return Tracker(self.model, backend=self.backend, **self._tracker_options)

    # ---- streams -----------------------------------------------------------------------------
    def open(self, stream_id) -> Tracker:
        """Start a stream (a new video). Its tracker is returned for inspection."""
        if stream_id in self.streams:
            raise KeyError(f"stream {stream_id!r} is already open; close it first to start a new video")
        if self.max_streams is not None and len(self.streams) >= self.max_streams:
            raise RuntimeError(f"the pool holds {len(self.streams)} streams, its limit (max_streams="
                               f"{self.max_streams}); close one first")
        tracker = self._new_tracker()
        self.streams[stream_id] = tracker
        self.last_used[stream_id] = time.monotonic()
        return tracker

    def close(self, stream_id) -> None:
        """End a stream and free its state."""
        self._tracker(stream_id)
        del self.streams[stream_id]
        self.last_used.pop(stream_id, None)

    def close_idle(self, idle_s: float, now: float | None = None) -> list:
        """Close every stream that has not stepped for more than idle_s seconds; returns their ids."""
        now = time.monotonic() if now is None else now
        stale = [s for s, t in self.last_used.items() if now - t > idle_s]
        for s in stale:
            self.close(s)
        return stale

    def delete_objects(self, stream_id, ids) -> None:
        self._tracker(stream_id).delete_objects(ids)

    def __contains__(self, stream_id) -> bool:
        return stream_id in self.streams

    def __len__(self) -> int:
        return len(self.streams)

    def _tracker(self, stream_id) -> Tracker:
        try:
            return self.streams[stream_id]
        except KeyError:
            raise KeyError(f"unknown stream {stream_id!r}: open it first (open streams: "
                           f"{sorted(map(str, self.streams)) or 'none'})") from None

    def state_nbytes(self, stream_id=None) -> int:
        """Bytes of recurrent state of one stream, or of all."""
        if stream_id is not None:
            return self._tracker(stream_id).state_nbytes()
        return sum(t.state_nbytes() for t in self.streams.values())

    def describe(self) -> str:
        return (f"stream pool of {len(self.streams)} streams on {self.backend.describe()}, "
                f"batch <= {self.max_batch or 'any'}")

    # ---- stepping ----------------------------------------------------------------------------
    def step(self, frames: dict) -> dict[object, TrackResult]:
        """One frame for each stream in `frames` (stream id -> StreamFrame, or an image). Returns
        stream id -> TrackResult; raises PoolStepError (holding the others' results) when any
        stream failed."""
        results, errors = self.try_step(frames)
        if errors:
            raise PoolStepError(results, errors)
        return results

    @torch.inference_mode()
    def try_step(self, frames: dict) -> tuple[dict[object, TrackResult], dict[object, Exception]]:
        """As `step`, returning (results, errors) instead of raising. A stream whose frame or mask
        is refused is left as it was; the other streams advance."""
        results: dict = {}
        errors: dict = {}
        pending: dict = {}  # stream id -> (generator, graph, inputs)
        timings: dict[str, float] = {}
        now = time.monotonic()
        for sid, frame in frames.items():
            if not isinstance(frame, StreamFrame):
                frame = StreamFrame(frame)
            try:
                tracker = self._tracker(sid)
                gen = tracker.step_graphs(frame.image, frame.mask, frame.objects, end=frame.end)
                self.last_used[sid] = now
            except Exception as e:  # noqa: BLE001 - reported per stream
                errors[sid] = e
                continue
            self._advance(sid, gen, None, pending, results, errors)
        while pending:
            graph = min((call[1] for call in pending.values()), key=_ORDER.__getitem__)
            groups: dict = {}
            for sid, (gen, g, inputs) in pending.items():
                if g == graph:
                    groups.setdefault(_shape_key(inputs), []).append(sid)
            for members in groups.values():
                for chunk in self._chunks(members, pending):
                    self._run_group(graph, chunk, pending, results, errors, timings)
        self.last_timings = timings
        return results, errors

    def _chunks(self, members: list, pending: dict) -> list[list]:
        """Split one group into calls of at most max_batch (whole streams per call)."""
        if self.max_batch is None:
            return [members]
        chunks, current, size = [], [], 0
        for sid in members:
            b = _batch_of(pending[sid][2])
            if current and size + b > self.max_batch:
                chunks.append(current)
                current, size = [], 0
            current.append(sid)
            size += b
        return chunks + [current] if current else chunks

    def _run_group(self, graph, members, pending, results, errors, timings) -> None:
        calls = [pending.pop(sid) for sid in members]
        sizes = [_batch_of(inputs) for _, _, inputs in calls]
        if len(calls) == 1:
            batched = calls[0][2]
        else:
            batched = {name: torch.cat([inputs[name] for _, _, inputs in calls]) for name in calls[0][2]}
        try:
            if self.profile:
                self.backend.synchronize()
                t0 = time.perf_counter()
            out = self.backend.run(graph, batched)
            if self.profile:
                self.backend.synchronize()
                timings[graph] = timings.get(graph, 0.0) + time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - every stream of the call failed
            for sid in members:
                errors[sid] = e
            return
        self.calls[(graph, sum(sizes))] += 1
        self.stream_calls[graph] += len(members)
        start = 0
        for sid, (gen, _, _), b in zip(members, calls, sizes):
            part = out if len(calls) == 1 else {k: v[start:start + b] for k, v in out.items()}
            start += b
            self._advance(sid, gen, part, pending, results, errors)

    @staticmethod
    def _advance(sid, gen, value, pending, results, errors) -> None:
        try:
            graph, inputs = gen.send(value)
        except StopIteration as done:
            results[sid] = done.value
        except Exception as e:  # noqa: BLE001 - reported per stream
            errors[sid] = e
        else:
            pending[sid] = (gen, graph, inputs)

    def batching_summary(self) -> dict[str, dict]:
        """Per graph: calls made, stream-calls they served, and the mean streams per call."""
        out = {}
        for graph in GRAPHS:
            calls = sum(n for (g, _), n in self.calls.items() if g == graph)
            if calls:
                served = self.stream_calls[graph]
                out[graph] = {"calls": calls, "stream_calls": served, "streams_per_call": served / calls}
        return out


def _batch_of(inputs: dict) -> int:
    return int(next(iter(inputs.values())).shape[0])


def _shape_key(inputs: dict) -> tuple:
    """Calls that can share one graph call: the same input names, shapes apart from axis 0, dtypes
    and devices."""
    return tuple((name, tuple(t.shape[1:]), t.dtype, t.device) for name, t in inputs.items())
