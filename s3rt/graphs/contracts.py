"""The five per-frame graphs every backend runs: names, inputs, outputs and their shapes.

h, w = H/STRIDE, W/STRIDE for a padded frame of H x W; B = batch (1, or 2 with flip
augmentation; or the dynamic axis `batch` for a graph set made for several streams per call,
`GraphSetSpec.max_streams`); M = memory capacity in tokens; the object axis `num_objects` is
dynamic. Export, the manifest, every backend and (next) engine building read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STRIDE = 16  # the coarsest feature stride of every preset: keys, values and sensory are H/16 x W/16
OBJECT_AXIS = "num_objects"
BATCH_AXIS = "batch"  # axis 0 of every tensor in a graph set made for several streams per call


@dataclass(frozen=True)
class GraphContract:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    when: str


GRAPHS: dict[str, GraphContract] = {g.name: g for g in (
    GraphContract("encoder", ("image",),
                  ("f16", "f8", "f4", "pix_feat", "key", "shrinkage", "selection"), "every frame"),
    GraphContract("readout", ("key", "selection", "mem_key", "mem_shrinkage", "mem_values", "mem_valid"),
                  ("readout", "usage"), "every frame, once per memory bucket"),
    GraphContract("fusion", ("pix_feat", "readout", "sensory", "last_mask", "obj_memory"),
                  ("memory_readout",), "every frame, once per memory bucket"),
    GraphContract("decoder", ("f8", "f4", "memory_readout", "sensory"),
                  ("logits", "prob", "new_sensory"), "every frame"),
    GraphContract("mask_encoder", ("image", "pix_feat", "sensory", "masks"),
                  ("values", "new_sensory", "summaries"), "memory frames"),
)}


def check_graph_name(graph: str) -> GraphContract:
    if graph not in GRAPHS:
        raise KeyError(f"unknown graph {graph!r}; graphs are {', '.join(GRAPHS)}")
    return GRAPHS[graph]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints, or "num_objects" / "num_objects + 1" / "batch"
    dtype: str  # "float32" or "bool"

    def concrete(self, num_objects: int, batch: int | None = None) -> tuple[int, ...]:
        return tuple(eval_dim(d, num_objects, batch) for d in self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def eval_dim(dim, num_objects: int, batch: int | None = None) -> int:
    """A contract dimension: an int, 'num_objects', 'num_objects + c' or 'batch'."""
    if isinstance(dim, int):
        return dim
    text = str(dim).replace(" ", "")
    if text == OBJECT_AXIS:
        return num_objects
    if text == BATCH_AXIS:
        if batch is None:
            raise ValueError(f"the dimension {BATCH_AXIS!r} needs a batch size")
        return batch
    if text.startswith(OBJECT_AXIS + "+") and text[len(OBJECT_AXIS) + 1:].isdigit():
        return num_objects + int(text[len(OBJECT_AXIS) + 1:])
    raise ValueError(f"cannot evaluate the dimension {dim!r} (expected an int, {OBJECT_AXIS!r} or "
                     f"'{OBJECT_AXIS} + c')")


def graph_io(cfg, padded_size: tuple[int, int], batch: int | str, memory_tokens: int,
             ) -> dict[str, tuple[list[TensorInfo], list[TensorInfo]]]:
    """The five contracts with shapes for one graph set (cfg: the model's ModelConfig). batch: an
    int, or BATCH_AXIS for the dynamic batch of a graph set made for several streams per call."""
    if isinstance(batch, str) and batch != BATCH_AXIS:
        raise ValueError(f"batch must be an int or {BATCH_AXIS!r}; got {batch!r}")
    H, W = padded_size
    h, w = H // STRIDE, W // STRIDE
    B, M, N = batch, memory_tokens, OBJECT_AXIS
    c16, c8, c4 = cfg.ms_dims
    f, b = "float32", "bool"
    shapes = {
        "image": (B, 3, H, W), "f16": (B, c16, h, w), "f8": (B, c8, 2 * h, 2 * w), "f4": (B, c4, 4 * h, 4 * w),
        "pix_feat": (B, cfg.pixel_dim, h, w), "key": (B, cfg.key_dim, h, w), "shrinkage": (B, 1, h, w),
        "selection": (B, cfg.key_dim, h, w),
        "mem_key": (B, cfg.key_dim, M), "mem_shrinkage": (B, 1, M), "mem_values": (B, N, cfg.value_dim, M),
        "mem_valid": (B, M), "readout": (B, N, cfg.value_dim, h, w), "usage": (B, M),
        "sensory": (B, N, cfg.sensory_dim, h, w), "last_mask": (B, N, H, W),
        "obj_memory": (B, N, cfg.num_queries, cfg.embed_dim + 1), "memory_readout": (B, N, cfg.embed_dim, h, w),
        "logits": (B, f"{N} + 1", H, W), "prob": (B, f"{N} + 1", H, W), "new_sensory": (B, N, cfg.sensory_dim, h, w),
        "masks": (B, N, H, W), "values": (B, N, cfg.value_dim, h, w),
        "summaries": (B, N, cfg.num_queries, cfg.embed_dim + 1),
    }
    out = {}
    for name, contract in GRAPHS.items():
        out[name] = ([TensorInfo(i, shapes[i], b if i == "mem_valid" else f) for i in contract.inputs],
                     [TensorInfo(o, shapes[o], f) for o in contract.outputs])
    return out


def example_inputs(inputs: list[TensorInfo], num_objects: int, seed: int = 0,
                   batch: int | None = None) -> dict[str, torch.Tensor]:
    """Plausible random inputs (masks in [0,1], shrinkage >= 1, about half the memory valid);
    batch: the size of a dynamic batch axis."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in inputs:
        shape = t.concrete(num_objects, batch)
        if t.dtype == "bool":
            valid = torch.rand(shape, generator=g) > 0.5
            valid[..., 0] = True
            out[t.name] = valid
        elif t.name in ("image", "last_mask", "masks", "selection"):
            out[t.name] = torch.rand(shape, generator=g)
        elif t.name in ("shrinkage", "mem_shrinkage"):
            out[t.name] = 1 + torch.rand(shape, generator=g)
        elif t.name == "obj_memory":
            x = torch.rand(shape, generator=g)
            x[..., -1] = x[..., -1] * 10 + 1  # the area channel
            out[t.name] = x
        else:
            out[t.name] = torch.randn(shape, generator=g)
    return out
