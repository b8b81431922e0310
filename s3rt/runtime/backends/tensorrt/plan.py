"""The tensorrt backend's bookkeeping, in plain Python (tested without TensorRT or a GPU).

- `readout_choice`: which implementation runs the memory readout ("cuda-kernel": the project's
  fused kernel between the encoder and fusion engines; "engine": the readout engine).
- `ShapeState`: the object count each execution context's input shapes were last set for, so
  that `set_input_shape` is called only when the count changes (objects added or deleted).
- `BindingPlan`: for one engine and an object count, every tensor's name, shape and dtype, in
  the engine's order, from the engine manifest (the addresses are bound by the runner).
- `CudaGraphBook`: which (graph, object count) has a captured CUDA graph; a change of the object
  count drops the captures of the old count so that they are captured again with the new
  shapes and buffers (the encoder's, which has no object axis, is kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s3rt.graphs import OBJECT_AXIS, eval_dim

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
    num_objects: int
    inputs: tuple[TensorBinding, ...]
    outputs: tuple[TensorBinding, ...]
    dynamic: bool  # has the object axis (set_input_shape needed when the count changes)

    @classmethod
    def make(cls, graph: str, inputs: list[dict], outputs: list[dict], num_objects: int) -> "BindingPlan":
        def bind(specs, is_input):
            return tuple(TensorBinding(s["name"], tuple(eval_dim(d, num_objects) for d in s["shape"]), s["dtype"],
                                       is_input) for s in specs)

        dynamic = any(OBJECT_AXIS in str(d) for s in inputs for d in s["shape"])
        return cls(graph, num_objects if dynamic else 0, bind(inputs, True), bind(outputs, False), dynamic)


def object_count(inputs: list[dict], shapes: dict[str, tuple[int, ...]]) -> int:
    """The object count of a call: the size of the first input dimension that is the object axis
    (0 for graphs without it)."""
    for s in inputs:
        for axis, d in enumerate(s["shape"]):
            if str(d).replace(" ", "") == OBJECT_AXIS:
                return int(shapes[s["name"]][axis])
    return 0


@dataclass
class ShapeState:
    """graph -> the object count its context's input shapes are set for."""

    current: dict[str, int] = field(default_factory=dict)
    calls: int = 0  # set_input_shape rounds done (for tests and describe())

    def needs_update(self, graph: str, num_objects: int) -> bool:
        return self.current.get(graph) != num_objects

    def updated(self, graph: str, num_objects: int) -> None:
        self.current[graph] = num_objects
        self.calls += 1


@dataclass
class CudaGraphBook:
    """Captured CUDA graphs, keyed by (graph, object count); one object count at a time."""

    captured: dict[tuple[str, int], object] = field(default_factory=dict)
    num_objects: int | None = None
    captures: int = 0
    replays: int = 0
    invalidations: int = 0

    def lookup(self, graph: str, num_objects: int):
        """The capture to replay, or None (capture it now). A new object count drops the captures
        made for the old one (static graphs, num_objects 0, keep theirs)."""
        if num_objects and num_objects != self.num_objects:
            stale = [k for k in self.captured if k[1] not in (0, num_objects)]
            for k in stale:
                del self.captured[k]
            self.invalidations += bool(stale)
            self.num_objects = num_objects
        return self.captured.get((graph, num_objects))

    def store(self, graph: str, num_objects: int, capture) -> None:
        self.captured[(graph, num_objects)] = capture
        self.captures += 1

    def replayed(self) -> None:
        self.replays += 1

    def describe(self) -> str:
        return f"{len(self.captured)} captured, {self.captures} captures, {self.replays} replays"
