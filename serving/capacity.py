"""How much recurrent state one stream holds, from a graph set's spec and model config (its
manifest), without running anything: what sizes a server (docs/serving.md).

The tracker's state per stream (s3rt.runtime.tracker, s3rt.runtime.memory), FP32:
- per memory bank (objects first seen together; one bank when all objects come with the first
  mask): key [B,Ck,M], shrinkage [B,1,M], values [B,N,Cv,M], valid [B,M] (bool), and with
  long-term memory selection [B,Ck,M] and two usage counters [B,M];
- per object: sensory [B,N,Cs,h,w], object memory [B,N,Q,C+1], last mask [B,N,H,W].
`stream_state_bytes` equals `Tracker.state_nbytes()` of a stream with one bank
(tests/test_serving_capacity.py). Activations while a batch runs come on top: measure them.
"""

from __future__ import annotations

from s3rt.graphs import GraphSetSpec, feature_size


def stream_state_bytes(spec: GraphSetSpec, cfg, num_objects: int, banks: int = 1) -> int:
    """Bytes of one stream's recurrent state with `num_objects` objects spread over `banks` banks."""
    if not 1 <= banks <= max(1, num_objects):
        raise ValueError(f"banks must be in 1..num_objects, got {banks} for {num_objects} objects")
    B, M, N = spec.batch, spec.memory_tokens, num_objects
    H, W = spec.padded_size
    h, w = feature_size(spec.padded_size)
    f32 = 4
    per_bank = B * cfg.key_dim * M * f32 + B * M * f32 + B * M  # key, shrinkage, valid (bool)
    if spec.long_term_tokens:
        per_bank += B * cfg.key_dim * M * f32 + 2 * B * M * f32
    values = B * N * cfg.value_dim * M * f32  # the objects' values, whichever bank holds them
    per_object = B * (cfg.sensory_dim * h * w + cfg.num_queries * (cfg.embed_dim + 1) + H * W) * f32
    return banks * per_bank + values + N * per_object


def streams_that_fit(memory_bytes: int, per_stream_bytes: int, reserve_bytes: int = 0) -> int:
    """Streams whose state fits in memory_bytes after reserve_bytes (weights, activations, runtime)."""
    return max(0, (memory_bytes - reserve_bytes) // per_stream_bytes)
