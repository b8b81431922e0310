"""The one interface every backend implements: run a named graph on tensors that stay on the
backend's device. The tracker owns all state and control flow; backends own none.

As Polygraphy's runners: the public `run` checks the call once (graph name, input names and,
for backends with fixed shapes, every input's shape against the graph set's spec), then calls
the subclass's `_run`. A backend made for one graph set (exported graphs, engines) carries its
`spec`; `check_stream` refuses a stream that does not fit it before any work is done.
"""

from __future__ import annotations

import abc

import torch

from s3rt.graphs import OBJECT_AXIS, GraphSetSpec, check_graph_name, feature_size, graph_io
from s3rt.graphs.contracts import BATCH_AXIS


class Backend(abc.ABC):
    name: str = "?"

    def __init__(self, device: torch.device | str, model_config, *, spec: GraphSetSpec | None = None,
                 source: str = "", dtype: torch.dtype = torch.float32):
        """model_config: the network's ModelConfig; spec: what the graphs were made for (None: any
        shape, e.g. the torch backend); source: where they came from, for messages."""
        self.device = torch.device(device)
        self.model_config = model_config
        self.spec = spec
        self.source = source
        self.dtype = dtype  # dtype of the state buffers the tracker allocates for this backend
        self._io = None
        if spec is not None:
            self._io = {g: ins for g, (ins, _) in
                        graph_io(model_config, spec.padded_size, spec.graph_batch, spec.memory_tokens).items()}

    # ---- running -----------------------------------------------------------------------------
    def run(self, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run one graph of `s3rt.graphs.GRAPHS`; inputs and outputs by contract name."""
        contract = check_graph_name(graph)
        missing = [n for n in contract.inputs if n not in inputs]
        extra = [n for n in inputs if n not in contract.inputs]
        if missing or extra:
            raise KeyError(f"{graph}: inputs {sorted(inputs)} do not match the contract {list(contract.inputs)}"
                           + (f" (missing {missing})" if missing else "") + (f" (unknown {extra})" if extra else ""))
        if self._io is not None:
            self._check_shapes(graph, inputs)
        return self._run(graph, inputs)

    @abc.abstractmethod
    def _run(self, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run a checked call (inputs hold exactly the contract's names)."""

    def _check_shapes(self, graph: str, inputs) -> None:
        specs = self._io[graph]
        n = 1
        for t in specs:
            if OBJECT_AXIS in map(str, t.shape):
                n = int(inputs[t.name].shape[[str(d) for d in t.shape].index(OBJECT_AXIS)])
                if not 1 <= n <= self.spec.max_objects:
                    raise ValueError(f"{graph}: {n} objects, but {self._where()} take 1..{self.spec.max_objects}: "
                                     + self.spec.export_command(max_objects=max(n, 1)))
                break
        batch = None
        if self.spec.graph_batch == BATCH_AXIS:  # several streams per call: axis 0 is dynamic
            batch = int(inputs[specs[0].name].shape[0]) if inputs[specs[0].name].dim() else 0
            if not 1 <= batch <= self.spec.max_batch or batch % self.spec.batch:
                raise ValueError(f"{graph}: batch {batch}, but {self._where()} take a batch of 1..{self.spec.max_batch}"
                                 f" in steps of {self.spec.batch} (up to {self.spec.max_streams} streams per call)")
        for t in specs:
            got, want = tuple(inputs[t.name].shape), t.concrete(n, batch)
            if got != want:
                raise ValueError(f"{graph}: input {t.name} has shape {got}, but {self._where()} take {want}")

    # ---- stream checks -----------------------------------------------------------------------
    def _where(self) -> str:
        return f"the graphs in {self.source}" if self.source else f"the {self.name} graphs"

    def check_stream(self, *, padded_size, batch: int, num_objects: int, memory_tokens: int) -> None:
        """Called by the tracker before it allocates state (first frame, object changes): raise a
        ValueError that says what to change when the stream does not fit the graph set."""
        s = self.spec
        if s is None:
            return
        where = self._where()
        if tuple(padded_size) != s.padded_size:
            (h, w), (H, W) = padded_size, s.padded_size
            raise ValueError(
                f"this stream pads frames to {h}x{w}, but {where} were made for {H}x{W}: "
                f"{s.export_command(padded_size=(h, w))}, or give frames that pad to {H}x{W} (resize them, e.g. "
                f"with the tracker's size / --size option)")
        if batch != s.batch:
            raise ValueError(f"this stream runs batch {batch} ({'with' if batch == 2 else 'without'} flip "
                             f"augmentation), but {where} have batch {s.batch}: "
                             + s.export_command(flip_aug=batch == 2))
        if num_objects > s.max_objects:
            raise ValueError(f"this stream has {num_objects} objects, but {where} take at most {s.max_objects}: "
                             + s.export_command(max_objects=num_objects))
        if memory_tokens != s.memory_tokens:
            hw = feature_size(s.padded_size)[0] * feature_size(s.padded_size)[1]
            frames, extra = divmod(memory_tokens, hw)
            raise ValueError(
                f"this stream's memory holds {memory_tokens} tokens ({frames} memory frames"
                + (f" + {extra} long-term tokens" if extra else "") + f"), but {where} hold {s.memory_tokens}: "
                + s.export_command(max_mem_frames=frames, long_term_tokens=extra))

    # ---- description -------------------------------------------------------------------------
    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


