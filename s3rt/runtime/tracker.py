"""The streaming tracker: Cutie's inference control flow (its `InferenceCore` and
`MemoryManager`, with S3's padding and the official bugs fixed) over any backend.

The tracker owns all state (memory banks, sensory memory, object memory, last mask, object
ids) as device tensors that are allocated when a stream starts or when objects are added or
deleted, and updated in place on every other frame. Backends only run the five graphs.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from s3rt.graphs import STRIDE, GraphSetSpec, memory_tokens, processing_size
from s3rt.model.tensor_utils import aggregate, pad_divide_by, unpad
from s3rt.runtime.backends import Backend, create_backend
from s3rt.runtime.memory import LongTermConfig, MemoryBank

# Cutie's defaults for the options a graph set fixes (GraphSetSpec); None means "the backend's"
DEFAULTS = {"max_mem_frames": 5, "top_k": 30, "flip_aug": False, "use_long_term": False}


@dataclass
class TrackResult:
    mask: np.ndarray  # [H,W] uint8 object ids at the input resolution
    prob: torch.Tensor  # [N+1,H,W] float32: background, then objects in ascending id order
    object_ids: list[int]  # the ids of prob's channels 1..N
    frame_index: int
    memory_frame: bool  # whether this frame was written to memory
    timings: dict[str, float] = field(default_factory=dict)  # seconds per graph (profile=True)


def stagger_steps(mem_every: int, stagger_updates: int) -> set[int]:
    """Frames (counted since the last memory frame) whose decoder updates the sensory memory."""
    if stagger_updates >= mem_every:
        return set(range(1, mem_every + 1))
    return {int(x) for x in np.round(np.linspace(1, mem_every, stagger_updates))}


def long_term_for(spec: GraphSetSpec) -> LongTermConfig:
    """Long-term settings whose capacity fits a graph set made with long-term tokens."""
    lt, frames = spec.long_term_tokens, spec.max_mem_frames
    return LongTermConfig(max_mem_frames=frames, min_mem_frames=max(1, min(5, frames - 1)),
                          num_prototypes=min(128, max(1, lt // 4)), max_num_tokens=lt, buffer_tokens=min(2000, lt // 4))


class Tracker:
    """Stream frames through S3 / Cutie.

    Tracker(model, backend="torch", device="cpu", size=480, mem_every=5, max_mem_frames=5,
            stagger_updates=5, top_k=30, flip_aug=False, use_long_term=False,
            long_term=LongTermConfig(), chunk_size=-1, resize_antialias=True, profile=False,
            graphs=None, **backend_options)

    `model` is a network from `s3rt.build_model` (torch backend); `backend` is a name from
    `s3rt.runtime.backends.BACKENDS` (made with `graphs=` for backends that run a graph set, and
    `backend_options`, e.g. fp16 / readout for torch, providers for onnxruntime) or a ready
    `Backend`. A backend made for one graph set fixes max_mem_frames, top_k, flip_aug and
    long-term memory: left unset, they are taken from it; set to another value, they are refused
    with the export command that would fit.
    """

    def __init__(self, model=None, *, backend: str | Backend = "torch", device: str = "cpu",
                 size: int = 480, mem_every: int = 5, max_mem_frames: int | None = None, stagger_updates: int = 5,
                 top_k: int | None = None, flip_aug: bool | None = None, use_long_term: bool | None = None,
                 long_term: LongTermConfig | dict | None = None, chunk_size: int = -1,
                 resize_antialias: bool = True, profile: bool = False, graphs=None, **backend_options):
        if mem_every < 1 or stagger_updates < 1:
            raise ValueError(f"need mem_every >= 1 and stagger_updates >= 1; got {mem_every} and {stagger_updates}")
        if isinstance(backend, Backend):
            if backend_options or graphs is not None:
                raise ValueError("backend options and graphs= go with a backend name, not a ready Backend")
            self.backend = backend
        else:
            if device != "cpu":
                _check_device(device)
            options = dict(backend_options)
            if backend == "torch" and top_k is not None:
                options["top_k"] = top_k
            self.backend = create_backend(backend, model=model, graphs=graphs, device=device, **options)
        cfg = getattr(model, "cfg", None) or self.backend.model_config
        if top_k is None and self.backend.spec is None:
            top_k = getattr(self.backend, "top_k", None)
        opts = self._resolve_options(self.backend.spec, max_mem_frames=max_mem_frames, top_k=top_k,
                                     flip_aug=flip_aug, use_long_term=use_long_term, long_term=long_term)
        if opts["max_mem_frames"] < 2 or opts["top_k"] < 1:
            raise ValueError("need max_mem_frames >= 2 and top_k >= 1")
        backend_top_k = getattr(self.backend, "top_k", opts["top_k"])
        if backend_top_k != opts["top_k"]:
            raise ValueError(f"top_k={opts['top_k']} but the {self.backend.name} backend was made with top_k="
                             f"{backend_top_k}: make the backend with the same top_k")
        self.cfg = cfg
        self.device = self.backend.device
        self.size = size
        self.mem_every = mem_every
        self.stagger = stagger_steps(mem_every, stagger_updates)
        self.top_k = opts["top_k"]
        self.flip_aug = opts["flip_aug"]
        self.long_term = opts["long_term"] if opts["use_long_term"] else None
        # Cutie counts the permanent first frame inside max_mem_frames.
        self.max_mem_frames = self.long_term.max_mem_frames if self.long_term else opts["max_mem_frames"]
        self.working_frames = self.max_mem_frames - 1
        self.chunk_size = chunk_size
        self.resize_antialias = resize_antialias
        self.profile = profile
        self.reset()

    @staticmethod
    def _resolve_options(spec: GraphSetSpec | None, **given) -> dict:
        """Options left unset take the graph set's value (or Cutie's default); options set to
        something the graph set cannot honour are refused, naming both values and the fix."""
        long_term = given.pop("long_term")
        if spec is None:
            out = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
            lt = long_term if isinstance(long_term, LongTermConfig) else LongTermConfig(**(long_term or {}))
            return {**out, "long_term": lt}
        fixed = {"max_mem_frames": spec.max_mem_frames, "top_k": spec.top_k, "flip_aug": spec.flip_aug,
                 "use_long_term": spec.long_term_tokens > 0}
        names = {"max_mem_frames": "--max-mem-frames", "top_k": "--top-k", "flip_aug": "--flip-aug",
                 "use_long_term": "--long-term"}
        for key, value in given.items():
            if value is not None and value != fixed[key]:
                change = {"use_long_term": {"long_term_tokens": 10000 if value else 0}}.get(key, {key: value})
                raise ValueError(
                    f"{names[key]}: the graph set is made for {key}={fixed[key]}, the tracker was asked for "
                    f"{key}={value}; leave the option unset to use the graph set's value, or make a matching "
                    f"graph set: {spec.export_command(**change)}")
        lt = None
        if fixed["use_long_term"]:
            lt = long_term if isinstance(long_term, LongTermConfig) else (
                LongTermConfig(**long_term) if long_term else long_term_for(spec))
            if lt.max_mem_frames != spec.max_mem_frames or lt.max_num_tokens != spec.long_term_tokens:
                raise ValueError(
                    f"long-term memory of {lt.max_mem_frames} frames and {lt.max_num_tokens} tokens, but the graph "
                    f"set holds {spec.max_mem_frames} frames and {spec.long_term_tokens} long-term tokens: leave "
                    f"long_term unset, or make a matching graph set: "
                    + spec.export_command(max_mem_frames=lt.max_mem_frames, long_term_tokens=lt.max_num_tokens))
        return {**fixed, "long_term": lt}

    # ---- public API ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (a new video). Cutie wants one tracker per video; this is the same."""
        self.frame_index = -1
        self.last_mem_index = 0
        self.object_ids: list[int] = []  # in temporary-id order (order of first appearance)
        self.banks: list[MemoryBank] = []
        self.sensory = self.obj_memory = self.last_mask = None
        self.input_size = self.padded_size = None

    def describe(self) -> str:
        return self.backend.describe()

    @property
    def batch(self) -> int:
        return 2 if self.flip_aug else 1

    def state_nbytes(self) -> int:
        tensors = [t for t in (self.sensory, self.obj_memory, self.last_mask) if t is not None]
        return sum(b.nbytes() for b in self.banks) + sum(t.numel() * t.element_size() for t in tensors)

    def delete_objects(self, ids) -> None:
        """Remove objects (an id, or an iterable of ids) from every memory; their ids may be reused
        later as new objects."""
        ids = set(_object_ids(ids, "delete_objects"))
        unknown = ids - set(self.object_ids)
        if unknown:
            raise ValueError(f"cannot delete unknown object ids {sorted(unknown)}; known: {self.object_ids}")
        keep = [i for i, o in enumerate(self.object_ids) if o not in ids]
        self.object_ids = [self.object_ids[i] for i in keep]
        for bank in self.banks:
            bank.keep_objects(self.object_ids)
        self.banks = [b for b in self.banks if b.object_ids]
        if self.sensory is not None:
            # (Cutie forgets to drop the deleted objects' channels of last_mask; we do.)
            self.sensory, self.obj_memory, self.last_mask = (
                t[:, keep].contiguous() for t in (self.sensory, self.obj_memory, self.last_mask))

    @torch.inference_mode()
    def step(self, image, mask=None, objects=None, *, end: bool = False) -> TrackResult:
        """image: RGB uint8 [H,W,3] (numpy or torch). mask: optional [H,W] integer object ids
        (0 = background) giving new objects or corrections; `objects` restricts which ids of
        the mask to use (default: every non-zero id). end=True skips memory updates."""
        timings: dict[str, float] = {}
        steps = self.step_graphs(image, mask, objects, end=end, timings=timings)
        try:
            call = next(steps)
            while True:
                call = steps.send(self._run(*call, timings))
        except StopIteration as done:
            return done.value

    def step_graphs(self, image, mask=None, objects=None, *, end: bool = False, timings: dict | None = None):
        """`step` as a generator of graph calls, for callers that run the graphs themselves (the
        stream pool batches the calls of several streams): it yields (graph, inputs), is sent
        the outputs, and returns the TrackResult (StopIteration.value). Inputs are checked before
        the first call, so a bad frame or mask raises before any state changes. Run it inside
        torch.inference_mode()."""
        timings = {} if timings is None else timings
        image = self._check_image(image)
        if mask is not None:
            mask, objects = self._check_mask(mask, objects, image.shape[-2:])
            if not objects and not self.object_ids:
                mask = None  # an empty first mask adds nothing
        self.frame_index += 1
        h0, w0 = image.shape[-2:]
        image, mask = self._resize(image, mask)
        image, pad = pad_divide_by(image, self.cfg.pad_multiple)
        if self.padded_size is None:
            self.input_size, self.padded_size = (h0, w0), tuple(image.shape[-2:])
            self._check_stream(len(objects or []))
        batch_image = torch.cat([image, image.flip(-1)]) if self.flip_aug else image

        since_mem = self.frame_index - self.last_mem_index
        is_mem_frame = (since_mem >= self.mem_every or mask is not None) and not end
        known = set(self.object_ids)
        # Segment when there is no mask, or when it adds objects (Cutie) or lacks a known one
        # (Cutie would crash on such a partial correction; here the prediction fills it in).
        need_segment = mask is None or (bool(known) and set(objects) != known)
        update_sensory = since_mem in self.stagger and not end

        enc = yield "encoder", {"image": batch_image}
        prob = None
        if need_segment:
            prob = yield from self._segment(enc, update_sensory)
        if mask is not None:
            prob = self._merge_mask(prob, pad_divide_by(mask, self.cfg.pad_multiple)[0], objects)
        if prob is None:  # nothing to track yet: all background
            prob = torch.zeros(1 + len(self.object_ids), *image.shape[-2:], device=self.device)
            prob[0] = 1
        self.last_mask = prob[1:].unsqueeze(0)
        if self.flip_aug:
            self.last_mask = torch.cat([self.last_mask, self.last_mask.flip(-1)])

        wrote = False
        if is_mem_frame and self.object_ids:
            yield from self._add_memory(batch_image, enc)
            wrote = True
        return self._result(unpad(prob, pad), (h0, w0), wrote, timings)

    # ---- the steps -------------------------------------------------------------------------
    def _run(self, graph, inputs, timings):
        if not self.profile:
            return self.backend.run(graph, inputs)
        self.backend.synchronize()
        t0 = time.perf_counter()
        out = self.backend.run(graph, inputs)
        self.backend.synchronize()
        timings[graph] = timings.get(graph, 0.0) + time.perf_counter() - t0
        return out

    def _segment(self, enc, update_sensory):
        if not any(bool(b.valid.any()) for b in self.banks):
            # stacklevel 5: past the generators, step() and torch's inference_mode wrapper, to the caller's line
            warnings.warn("segmenting without any memory: give a mask first", stacklevel=5)
            return None
        b, n, _, h, w = self.sensory.shape
        mem_readout = torch.empty(b, n, self.cfg.embed_dim, h, w, device=self.device)
        for bank in self.banks:
            out = yield "readout", {"key": enc["key"], "selection": enc["selection"], **bank.memory_inputs()}
            bank.update_usage(out["usage"])
            chunk = self.chunk_size if self.chunk_size > 0 else len(bank.object_ids)
            for start in range(0, len(bank.object_ids), chunk):
                ids = bank.object_ids[start:start + chunk]
                pos = [self.object_ids.index(o) for o in ids]
                fused = yield "fusion", {
                    "pix_feat": enc["pix_feat"], "readout": out["readout"][:, start:start + chunk],
                    "sensory": self.sensory[:, pos], "last_mask": self.last_mask[:, pos],
                    "obj_memory": self.obj_memory[:, pos]}
                mem_readout[:, pos] = fused["memory_readout"].to(mem_readout.dtype)
        dec = yield "decoder", {"f8": enc["f8"], "f4": enc["f4"], "memory_readout": mem_readout,
                                "sensory": self.sensory}
        prob = dec["prob"].float()
        prob = (prob[0] + prob[1].flip(-1)) / 2 if self.flip_aug else prob[0]
        if update_sensory:
            self.sensory.copy_(dec["new_sensory"])
        return prob

    def _merge_mask(self, prob, mask, objects):
        """Combine a given id mask with the prediction (Cutie's merge, PR #31 indexing)."""
        new_ids = [o for o in objects if o not in self.object_ids]
        self._add_objects(new_ids)
        if prob is not None:
            pred = prob[1:].clone()
            pred[:, mask > 0] = 0  # objects are mutually exclusive
            extra = []
            for obj in objects:
                tmp = self.object_ids.index(obj)
                this = (mask == obj).to(pred.dtype)
                if tmp >= pred.shape[0]:
                    extra.append(this.unsqueeze(0))
                else:
                    pred[tmp] = this
            merged = torch.cat([pred, *extra], 0)
        else:
            merged = torch.stack([(mask == obj) for obj in self.object_ids]).float()
        return torch.softmax(aggregate(merged, dim=0), dim=0)

    def memory_tokens(self) -> int:
        """Capacity of every memory bank: permanent + working frames (+ long-term tokens)."""
        ltm = self.long_term.max_num_tokens if self.long_term else 0
        return memory_tokens(self.padded_size, self.max_mem_frames, ltm)

    def _check_stream(self, num_objects: int) -> None:
        self.backend.check_stream(padded_size=self.padded_size, batch=self.batch, num_objects=num_objects,
                                  memory_tokens=self.memory_tokens())

    def _add_objects(self, new_ids):
        if not new_ids:
            return
        self._check_stream(len(self.object_ids) + len(new_ids))
        self.object_ids += list(new_ids)
        hp, wp = self.padded_size
        h, w = hp // STRIDE, wp // STRIDE
        n, B, dev = len(new_ids), self.batch, self.device
        zeros = dict(device=dev, dtype=torch.float32)
        sensory = torch.zeros(B, n, self.cfg.sensory_dim, h, w, **zeros)
        obj_mem = torch.zeros(B, n, self.cfg.num_queries, self.cfg.embed_dim + 1, **zeros)
        last = torch.zeros(B, n, hp, wp, **zeros)
        if self.sensory is None:
            self.sensory, self.obj_memory, self.last_mask = sensory, obj_mem, last
        else:
            self.sensory = torch.cat([self.sensory, sensory], 1)
            self.obj_memory = torch.cat([self.obj_memory, obj_mem], 1)
            self.last_mask = torch.cat([self.last_mask, last], 1)

    def _add_memory(self, batch_image, enc):
        out = yield "mask_encoder", {"image": batch_image, "pix_feat": enc["pix_feat"],
                                     "sensory": self.sensory, "masks": self.last_mask}
        self.obj_memory += out["summaries"].float()  # running sums of summaries and area
        in_bank = {o for b in self.banks for o in b.object_ids}
        new_bucket = [o for o in self.object_ids if o not in in_bank]
        if new_bucket:
            h, w = enc["key"].shape[-2:]
            self.banks.append(MemoryBank(
                new_bucket, batch=self.batch, hw=h * w, key_dim=self.cfg.key_dim, value_dim=self.cfg.value_dim,
                working_frames=self.working_frames, long_term=self.long_term, device=self.device))
        for bank in self.banks:
            pos = [self.object_ids.index(o) for o in bank.object_ids]
            bank.add_frame(enc["key"], enc["shrinkage"], out["values"][:, pos], enc["selection"])
        self.last_mem_index = self.frame_index
        self.sensory.copy_(out["new_sensory"])

    # ---- input checks and resizing ---------------------------------------------------------
    def _check_image(self, image) -> torch.Tensor:
        arr = image
        if isinstance(arr, np.ndarray):
            if arr.dtype != np.uint8:
                raise ValueError(f"frames must be RGB uint8 [H,W,3]; got dtype {arr.dtype}")
            arr = torch.from_numpy(np.ascontiguousarray(arr))
        if not isinstance(arr, torch.Tensor) or arr.dtype != torch.uint8:
            raise ValueError(f"frames must be RGB uint8 [H,W,3] arrays; got {type(image).__name__} "
                             f"{getattr(image, 'dtype', '')}")
        if arr.dim() != 3 or arr.shape[2] != 3:
            raise ValueError(f"frames must be RGB uint8 [H,W,3]; got shape {tuple(arr.shape)} "
                             "(convert grey or RGBA frames to RGB first)")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"frames must have at least one pixel; got an empty {tuple(arr.shape[:2])} frame")
        if self.input_size is not None and tuple(arr.shape[:2]) != self.input_size:
            raise ValueError(f"frame size changed from {self.input_size} to {tuple(arr.shape[:2])} within a "
                             "stream; call reset() to start a new video")
        return arr.to(self.device).permute(2, 0, 1).unsqueeze(0).float().div_(255)

    def _check_mask(self, mask, objects, size):
        # (ascontiguousarray: torch cannot wrap negative strides, e.g. a flipped view)
        m = torch.as_tensor(np.ascontiguousarray(mask)) if not isinstance(mask, torch.Tensor) else mask
        if m.dim() != 2 or tuple(m.shape) != tuple(size):
            raise ValueError(f"mask shape {tuple(m.shape)} does not match the frame size {tuple(size)}; "
                             "masks are [H,W] arrays of object ids at the frame's resolution")
        if m.is_floating_point() or m.dtype == torch.bool:
            raise ValueError(f"masks hold integer object ids; got dtype {m.dtype}")
        m = m.to(self.device).long()
        present = sorted(int(i) for i in torch.unique(m).tolist() if i != 0)
        bad = [o for o in present if not 1 <= o <= 255]
        if bad:
            raise ValueError(f"object ids must be in 1..255; the mask has {sorted(set(bad))}")
        if objects is None:
            objects = present
        objects = _object_ids(objects, "objects")
        if len(set(objects)) != len(objects):
            raise ValueError(f"duplicate object ids in {objects}")
        absent = [o for o in objects if o not in present]
        if absent:
            raise ValueError(f"objects {absent} are not in the mask (it holds {present or 'no object'}): give "
                             "only ids the mask has, or a mask that has them")
        m = torch.where(torch.isin(m, torch.tensor(objects, device=m.device)), m, torch.zeros_like(m))
        return m, objects

    def _resize(self, image, mask):
        h, w = image.shape[-2:]
        new = processing_size(h, w, self.size)
        if new == (h, w):
            return image, mask
        # Antialiased, as Cutie's evaluation loader shrinks frames (its published numbers); Cutie's
        # InferenceCore itself uses plain bilinear: resize_antialias=False matches it exactly.
        image = F.interpolate(image, size=new, mode="bilinear", align_corners=False, antialias=self.resize_antialias)
        if mask is not None:
            mask = F.interpolate(mask[None, None].float(), size=new, mode="nearest-exact")[0, 0].long()
        return image, mask

    def _result(self, prob, size, wrote, timings) -> TrackResult:
        if tuple(prob.shape[-2:]) != tuple(size):
            prob = F.interpolate(prob.unsqueeze(0), size=size, mode="bilinear", align_corners=False)[0]
        order = sorted(range(len(self.object_ids)), key=lambda i: self.object_ids[i])
        ids = [self.object_ids[i] for i in order]
        prob = prob[[0] + [i + 1 for i in order]]
        mask = id_mask(prob, [0] + ids).cpu().numpy()
        return TrackResult(mask=mask, prob=prob, object_ids=ids, frame_index=self.frame_index,
                           memory_frame=wrote, timings=timings)


def id_mask(prob: torch.Tensor, ids) -> torch.Tensor:
    """The id mask (uint8) of per-channel probabilities [C,H,W]: ids[prob.argmax(0)], the first
    channel on ties. Channel by channel (a compare and a max per object) instead of argmax over
    dim 0, which reads the channels with a stride: on our 2-core CPU at 480 x 854, 72 ms against
    32 for background + 1 object, 88 against 48 for 16 objects. With a NaN anywhere it falls back
    to argmax (which takes NaN as the maximum), so the result is always argmax's."""
    if torch.isnan(prob).any():
        lut = torch.tensor(list(ids), device=prob.device, dtype=torch.uint8)
        return lut[prob.argmax(0)]
    mask = torch.full(prob.shape[1:], int(ids[0]), dtype=torch.uint8, device=prob.device)
    best = prob[0]
    for c in range(1, prob.shape[0]):
        mask.masked_fill_(prob[c] > best, int(ids[c]))
        best = torch.maximum(best, prob[c])
    return mask


def _object_ids(ids, what: str) -> list[int]:
    """An id or an iterable of ids as ints in 1..255 (a string is refused: '12' is not [1, 2])."""
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        ids = [ids]
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"{what} takes an object id or a list of ids (ints in 1..255); got {ids!r}")
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{what}: object ids are ints in 1..255; got {i!r}")
        if not 1 <= int(i) <= 255:
            raise ValueError(f"{what}: object ids are in 1..255; got {int(i)}")
        out.append(int(i))
    return out


def _check_device(device) -> None:
    """Refuse, with one line, a device this PyTorch cannot use."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a device PyTorch knows (use 'cpu' or 'cuda[:N]')") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}, but PyTorch {torch.__version__} sees no CUDA device; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}, but there are only {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: s3rt runs on 'cpu' or 'cuda[:N]'")
