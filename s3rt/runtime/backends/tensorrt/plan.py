"""The tensorrt backend's bookkeeping, in plain Python (tested without TensorRT or a GPU).

- `readout_choice`: which implementation runs the memory readout ("cuda-kernel": the project's
  fused kernel between the encoder and fusion engines; "engine": the readout engine).
- `ShapeState`: the (object count, batch) each execution context's input shapes were last set
  for, so that `set_input_shape` is called only when they change (objects added or deleted, or,
  for engines with the batch axis, another number of streams in the call).
- `BindingPlan`: for one engine, an object count and a batch, every tensor's name, shape and
  dtype, in the engine's order, from the engine manifest (the addresses are bound by the runner).
- `CudaGraphBook`: which (graph, object count, batch) has a captured CUDA graph; a change of the
  object count drops the captures of the old count so that they are captured again with the new
  shapes and buffers (the encoder's, which has no object axis, is kept); captures of several
  batches of one object count live side by side (a stream pool's calls vary in batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s3rt.graphs import OBJECT_AXIS, eval_dim
from s3rt.graphs.contracts import BATCH_AXIS

READOUT_CHOICES = ("auto", "cuda-kernel", "engine")


def readout_choice(requested: str, kernel_available: bool, kernel_reason: str = "") -> str:
    """'cuda-kernel' or 'engine' for the option `readout` (auto: the kernel when built)."""
    if requested not in READOUT_CHOICES:
        raise ValueError(f"readout must be one of {', '.join(READOUT_CHOICES)}; got {requested!r}")
    if requested == "engine":
        return "engine"
    if kernel_available:
        return "cuda-kernel"
    if requested == "cuda-kernel":
        raise RuntimeError(f"readout='cuda-kernel' but the CUDA readout kernel is unavailable: {kernel_reason}")
    return "engine"


@dataclass(frozen=True)
class TensorBinding:
    name: str
    shape: tuple[int, ...]
    dtype: str  # as in the manifest: "float32", "float16", "bool", ...
    is_input: bool


@dataclass(frozen=True)
class BindingPlan:
    graph: str
    num_objects: int  # 0 for engines without the object axis
    inputs: tuple[TensorBinding, ...]
    outputs: tuple[TensorBinding, ...]
    dynamic: bool  # has the object or the batch axis (set_input_shape needed when they change)
    batch: int = 0  # the call's batch for engines with the batch axis (0: a fixed batch)

    @property
    def shape_key(self) -> tuple[int, int]:
        """What the input shapes depend on: (object count, batch)."""
        return self.num_objects, self.batch

    @classmethod
    def make(cls, graph: str, inputs: list[dict], outputs: list[dict], num_objects: int,
             batch: int | None = None) -> "BindingPlan":
        """batch: the call's batch, needed for engines with the batch axis (ignored without it)."""
        has_objects = any(OBJECT_AXIS in str(d) for s in inputs for d in s["shape"])
        has_batch = any(_is_batch(d) for s in inputs for d in s["shape"])
        if has_batch and not batch:
            raise ValueError(f"{graph}: the engine has the batch axis; the plan needs the call's batch")

        def bind(specs, is_input):
            return tuple(TensorBinding(s["name"], tuple(eval_dim(d, num_objects, batch) for d in s["shape"]),
                                       s["dtype"], is_input) for s in specs)

        return cls(graph, num_objects if has_objects else 0, bind(inputs, True), bind(outputs, False),
                   has_objects or has_batch, int(batch) if has_batch else 0)


def _is_batch(dim) -> bool:
    return str(dim).replace(" ", "") == BATCH_AXIS


def object_count(inputs: list[dict], shapes: dict[str, tuple[int, ...]]) -> int:
    """The object count of a call: the size of the first input dimension that is the object axis
    (0 for graphs without it)."""
    for s in inputs:
        for axis, d in enumerate(s["shape"]):
            if str(d).replace(" ", "") == OBJECT_AXIS:
                return int(shapes[s["name"]][axis])
    return 0


def batch_size(inputs: list[dict], shapes: dict[str, tuple[int, ...]]) -> int:
    """The batch of a call: the size of the first input dimension that is the batch axis (0 for
    engines of a fixed batch)."""
    for s in inputs:
        for axis, d in enumerate(s["shape"]):
            if _is_batch(d):
                return int(shapes[s["name"]][axis])
    return 0


@dataclass
class ShapeState:
    """graph -> the shape key (object count, batch) its context's input shapes are set for."""

    current: dict[str, object] = field(default_factory=dict)
    calls: int = 0  # set_input_shape rounds done (for tests and describe())

    def needs_update(self, graph: str, key) -> bool:
        return self.current.get(graph) != key

    def updated(self, graph: str, key) -> None:
        self.current[graph] = key
        self.calls += 1


@dataclass
class CudaGraphBook:
    """Captured CUDA graphs, keyed by (graph, object count, batch); one object count at a time."""

    captured: dict[tuple[str, int, int], object] = field(default_factory=dict)
    num_objects: int | None = None
    captures: int = 0
    replays: int = 0
    invalidations: int = 0

    def lookup(self, graph: str, num_objects: int, batch: int = 0):
        """The capture to replay, or None (capture it now). A new object count drops the captures
        made for the old one (static graphs, num_objects 0, keep theirs); batch: the call's batch
        for engines with the batch axis (0 otherwise)."""
        if num_objects and num_objects != self.num_objects:
            stale = [k for k in self.captured if k[1] not in (0, num_objects)]
            for k in stale:
                del self.captured[k]
            self.invalidations += bool(stale)
            self.num_objects = num_objects
        return self.captured.get((graph, num_objects, batch))

    def store(self, graph: str, num_objects: int, capture, batch: int = 0) -> None:
        self.captured[(graph, num_objects, batch)] = capture
        self.captures += 1

    def replayed(self) -> None:
        self.replays += 1

    def describe(self) -> str:
        return f"{len(self.captured)} captured, {self.captures} captures, {self.replays} replays"
