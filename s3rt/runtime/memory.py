"""Fixed-capacity memory banks (one per bucket of objects first seen together).

Every tensor is allocated once, when the bucket is created, and written in place: a memory
frame overwrites a slot, eviction just clears `valid`. Slot order never matters (top-k and
softmax are order-free), so nothing is ever concatenated or shifted. Layout of the token axis:

    [ permanent slot: the bucket's first memory frame | F working-memory frame slots | long-term tokens ]
      hw tokens                                         F * hw tokens                   ltm_tokens

Semantics are Cutie's (`KeyValueMemoryStore` / `MemoryManager`):
- without long-term memory the F slots are a FIFO of the most recent memory frames;
- with long-term memory, once the F slots are full, every non-permanent frame except the newest
  `min_mem_frames - 1` is consolidated into `num_prototypes` prototypes (top usage, full-softmax
  potentiation) that move to the long-term tokens; long-term memory is first pruned by
  normalised usage when it is about to overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s3rt.model.memory_readout import similarity, topk_softmax_dense


@dataclass(frozen=True)
class LongTermConfig:
    """Cutie's long-term memory settings (`long_term` in its eval config); S3 as released
    uses max_mem_frames 25, min_mem_frames 15, max_num_tokens 30000, buffer_tokens 3000."""

    max_mem_frames: int = 10
    min_mem_frames: int = 5
    num_prototypes: int = 128
    max_num_tokens: int = 10000
    buffer_tokens: int = 2000
    count_usage: bool = True

    def __post_init__(self):
        if not 1 <= self.min_mem_frames < self.max_mem_frames:
            raise ValueError("long-term memory needs 1 <= min_mem_frames < max_mem_frames")
        if self.max_num_tokens <= self.num_prototypes + self.buffer_tokens:
            raise ValueError("long-term max_num_tokens must exceed num_prototypes + buffer_tokens")


class MemoryBank:
    def __init__(self, object_ids: list[int], *, batch: int, hw: int, key_dim: int, value_dim: int,
                 working_frames: int, long_term: LongTermConfig | None, device, dtype=torch.float32):
        if working_frames < 1:
            raise ValueError("max_mem_frames must be at least 2 (the permanent frame plus one working frame)")
        self.object_ids = list(object_ids)
        self.hw = hw
        self.working_frames = working_frames
        self.long_term = long_term
        self.ltm_start = hw * (1 + working_frames)
        self.capacity = self.ltm_start + (long_term.max_num_tokens if long_term else 0)
        B, M, N = batch, self.capacity, len(object_ids)
        self.key = torch.zeros(B, key_dim, M, device=device, dtype=dtype)
        self.shrinkage = torch.ones(B, 1, M, device=device, dtype=dtype)
        self.values = torch.zeros(B, N, value_dim, M, device=device, dtype=dtype)
        self.valid = torch.zeros(B, M, device=device, dtype=torch.bool)
        if long_term:
            self.selection = torch.zeros(B, key_dim, M, device=device, dtype=dtype)
            self.use_count = torch.zeros(B, M, device=device, dtype=torch.float32)
            self.life_count = torch.zeros(B, M, device=device, dtype=torch.float32)
            # which tokens count usage: non-permanent working memory, and long-term if count_usage
            self._usage_region = torch.zeros(M, device=device, dtype=torch.bool)
            self._usage_region[hw:self.ltm_start if not long_term.count_usage else M] = True
        self.has_permanent = False
        self.slot_age: list[int | None] = [None] * working_frames  # write counter per working slot
        self._writes = 0

    # ---- bookkeeping ---------------------------------------------------------------------
    def _slot_range(self, slot: int) -> slice:  # slot -1 is the permanent slot
        start = self.hw * (slot + 1)
        return slice(start, start + self.hw)

    @property
    def working_slots_used(self) -> int:
        return sum(a is not None for a in self.slot_age)

    def written_slots(self) -> list[int]:
        """Working slots in write order, oldest first."""
        used = [(a, s) for s, a in enumerate(self.slot_age) if a is not None]
        return [s for _, s in sorted(used)]

    @property
    def num_long_term_tokens(self) -> int:
        return int(self.valid[0, self.ltm_start:].sum()) if self.long_term else 0

    def nbytes(self) -> int:
        tensors = [self.key, self.shrinkage, self.values, self.valid]
        if self.long_term:
            tensors += [self.selection, self.use_count, self.life_count]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ---- writing ---------------------------------------------------------------------------
    def add_frame(self, key, shrinkage, values, selection=None) -> None:
        """key [B,C,h,w], shrinkage [B,1,h,w], values [B,N,V,h,w] for this bank's objects."""
        if not self.has_permanent:
            span, self.has_permanent = self._slot_range(-1), True
        else:
            free = [s for s, a in enumerate(self.slot_age) if a is None]
            slot = free[0] if free else self.written_slots()[0]  # FIFO: overwrite the oldest
            self.slot_age[slot] = self._writes
            span = self._slot_range(slot)
        self._writes += 1
        self.key[:, :, span] = key.flatten(2)
        self.shrinkage[:, :, span] = shrinkage.flatten(2)
        self.values[..., span] = values.flatten(3)
        self.valid[:, span] = True
        if self.long_term:
            self.selection[:, :, span] = selection.flatten(2)
            self.use_count[:, span] = 0
            self.life_count[:, span] = 1e-7
            if self.working_slots_used >= self.working_frames:
                self._consolidate()

    def update_usage(self, usage: torch.Tensor) -> None:
        """After a read (long-term mode): usage [B,M] = summed softmax weight per token."""
        if not self.long_term:
            return
        counted = self.valid & self._usage_region
        self.use_count += usage * counted
        self.life_count += counted

    def _consolidate(self) -> None:
        lt = self.long_term
        keep_newest = lt.min_mem_frames - 1
        slots = self.written_slots()
        candidates = slots[:len(slots) - keep_newest]
        idx = torch.cat([torch.arange(self._slot_range(s).start, self._slot_range(s).stop) for s in candidates])
        idx = idx.to(self.key.device)
        if self.num_long_term_tokens >= lt.max_num_tokens - lt.num_prototypes:
            self._prune_long_term(lt.max_num_tokens - lt.num_prototypes - lt.buffer_tokens)

        ck, cs, ce = self.key[:, :, idx], self.shrinkage[:, :, idx], self.selection[:, :, idx]
        cv = self.values[..., idx]
        usage = self.use_count[:, idx] / self.life_count[:, idx]
        p = min(lt.num_prototypes, idx.numel())
        top = torch.topk(usage, k=p, dim=-1, sorted=True).indices  # [B,P], per batch element
        pk = torch.gather(ck, 2, top.unsqueeze(1).expand(-1, ck.shape[1], -1))
        pe = torch.gather(ce, 2, top.unsqueeze(1).expand(-1, ce.shape[1], -1))
        with torch.autocast(device_type=ck.device.type, enabled=False):
            affinity = topk_softmax_dense(similarity(ck.float(), cs.float(), pk.float(), pe.float()), None)
            B, N, V, _ = cv.shape
            pv = (cv.float().reshape(B, N * V, -1) @ affinity).view(B, N, V, p)
            ps = cs.float() @ affinity

        for s in candidates:
            self.valid[:, self._slot_range(s)] = False
            self.slot_age[s] = None
        for b in range(self.valid.shape[0]):
            free = (~self.valid[b, self.ltm_start:]).nonzero().squeeze(1)[:p] + self.ltm_start
            self.key[b][:, free] = pk[b].to(self.key.dtype)
            self.shrinkage[b][:, free] = ps[b].to(self.key.dtype)
            self.values[b][..., free] = pv[b].to(self.key.dtype)
            self.valid[b, free] = True
            self.use_count[b, free] = 0
            self.life_count[b, free] = 1e-7

    def _prune_long_term(self, keep: int) -> None:
        region = slice(self.ltm_start, self.capacity)
        usage = self.use_count[:, region] / self.life_count[:, region].clamp_min(1e-7)
        usage = usage.masked_fill(~self.valid[:, region], float("-inf"))
        survivors = torch.topk(usage, k=keep, dim=-1).indices
        kept = torch.zeros_like(self.valid[:, region])
        kept.scatter_(1, survivors, True)
        self.valid[:, region] &= kept

    # ---- objects ---------------------------------------------------------------------------
    def keep_objects(self, keep_ids: list[int]) -> None:
        """Drop the values of deleted objects (an object event, not a per-frame operation)."""
        positions = [self.object_ids.index(o) for o in self.object_ids if o in keep_ids]
        self.values = self.values[:, positions].contiguous()
        self.object_ids = [self.object_ids[p] for p in positions]

    def memory_inputs(self) -> dict[str, torch.Tensor]:
        return {"mem_key": self.key, "mem_shrinkage": self.shrinkage, "mem_values": self.values,
                "mem_valid": self.valid}
