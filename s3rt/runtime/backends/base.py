"""The one interface every backend implements: run a named graph on tensors that stay on the
backend's device. The tracker owns all state and control flow; backends own none."""

from __future__ import annotations

import abc

import torch

from s3rt.runtime.graphs import GRAPHS


class Backend(abc.ABC):
    name: str = "?"

    def __init__(self, device: torch.device | str, dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype  # dtype of the state buffers the tracker allocates for this backend

    @abc.abstractmethod
    def run(self, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run one graph of `s3rt.runtime.graphs.GRAPHS`; inputs and outputs by contract name."""

    def check_stream(self, *, image_size: tuple[int, int], batch: int, num_objects: int,
                     memory_tokens: int) -> None:
        """Called by the tracker before it allocates state (first frame, object changes).
        Backends with fixed shapes (exported graphs, engines) raise a clear ValueError here
        when the stream does not fit them, before any work is done."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def check_graph(graph: str) -> None:
        if graph not in GRAPHS:
            raise KeyError(f"unknown graph {graph!r}; graphs are {', '.join(GRAPHS)}")
