"""Recording a backend's graph calls, so that another backend can be run on the same inputs."""

from __future__ import annotations

from collections import defaultdict

from s3rt.runtime.backends import Backend


class RecordingBackend(Backend):
    """Wraps a backend and keeps copies of graph inputs and outputs: while `recording`, of the
    first `per_graph` calls of each graph (`records`); with `keep_last`, of every call since the
    last `start_frame()` (`last_frame`, to diagnose a frame that fails)."""

    def __init__(self, inner: Backend, per_graph: int = 3, keep_last: bool = True):
        super().__init__(inner.device, inner.model_config, source=inner.source, dtype=inner.dtype)
        self.inner = inner
        self.name = inner.name
        self.spec = inner.spec  # (the inner backend checks shapes against it)
        self.per_graph = per_graph
        self.recording = True
        self.keep_last = keep_last
        self.records: list[tuple[str, dict, dict]] = []
        self.last_frame: list[tuple[str, dict, dict]] = []
        self._counts: dict[str, int] = defaultdict(int)
        for attr in ("model", "top_k"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))

    def start_frame(self) -> None:
        self.last_frame = []

    def _run(self, graph, inputs):
        out = self.inner.run(graph, inputs)
        keep = self.recording and self._counts[graph] < self.per_graph
        if keep or self.keep_last:
            rec = (graph, {k: v.detach().clone() for k, v in inputs.items()},
                   {k: v.detach().clone() for k, v in out.items()})
            if keep:
                self._counts[graph] += 1
                self.records.append(rec)
            if self.keep_last:
                self.last_frame.append(rec)
        return out

    def check_stream(self, **kw):
        self.inner.check_stream(**kw)

    def describe(self):
        return self.inner.describe()

    def synchronize(self):
        self.inner.synchronize()
