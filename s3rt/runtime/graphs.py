"""The graph contracts (DESIGN.md): the five per-frame graphs every backend runs, with their
input and output names. The torch backend, the exporter and the manifest all read this table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    when: str


GRAPHS: dict[str, GraphSpec] = {g.name: g for g in (
    GraphSpec("encoder", ("image",),
              ("f16", "f8", "f4", "pix_feat", "key", "shrinkage", "selection"), "every frame"),
    GraphSpec("readout", ("key", "selection", "mem_key", "mem_shrinkage", "mem_values", "mem_valid"),
              ("readout", "usage"), "every frame, once per memory bucket"),
    GraphSpec("fusion", ("pix_feat", "readout", "sensory", "last_mask", "obj_memory"),
              ("memory_readout",), "every frame, once per memory bucket"),
    GraphSpec("decoder", ("f8", "f4", "memory_readout", "sensory"),
              ("logits", "prob", "new_sensory"), "every frame"),
    GraphSpec("mask_encoder", ("image", "pix_feat", "sensory", "masks"),
              ("values", "new_sensory", "summaries"), "memory frames"),
)}
