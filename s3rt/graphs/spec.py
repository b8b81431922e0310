"""What a graph set is made for, and the geometry every stage agrees on.

A graph set (and, next, an engine set) has fixed shapes apart from the object axis: one padded
resolution, one batch, one memory capacity, one top-k. `GraphSetSpec` says which, is checked
when it is made, and is compared with `==` by every stage (export reuse, the manifest, the
backends' stream checks). Knob names are Cutie's where Cutie has one (`max_mem_frames`,
`top_k`, `flip_aug`); `long_term_tokens` is Cutie's `long_term.max_num_tokens` (0 = no
long-term memory).

`max_streams` is how many streams one graph call may batch (the stream pool, `s3rt.serving`):
1 (the default, and every graph set made before it existed) gives graphs of a fixed batch
`batch` (1, or 2 with flip augmentation); more gives graphs whose axis 0 is the dynamic axis
`batch` in 1..max_batch = max_streams * batch (`graph_batch`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from s3rt.graphs.contracts import BATCH_AXIS, STRIDE


class SpecError(ValueError):
    """Options that no graph set can be made for."""


def processing_size(height: int, width: int, size: int) -> tuple[int, int]:
    """The size the tracker resizes a frame to: shorter side `size` when the frame is larger
    (size <= 0: never resize). Cutie's InferenceCore formula, `int(h / min(h, w) * size)`."""
    short = min(height, width)
    if size <= 0 or short <= size:
        return height, width
    return int(height / short * size), int(width / short * size)


def pad_to(height: int, width: int, multiple: int) -> tuple[int, int]:
    return height + (-height) % multiple, width + (-width) % multiple


def padded_size(height: int, width: int, size: int, pad_multiple: int) -> tuple[int, int]:
    """The padded size the tracker gives a height x width frame (resize to `size`, then pad)."""
    return pad_to(*processing_size(height, width, size), pad_multiple)


def feature_size(padded: tuple[int, int]) -> tuple[int, int]:
    return padded[0] // STRIDE, padded[1] // STRIDE


def memory_tokens(padded: tuple[int, int], max_mem_frames: int, long_term_tokens: int = 0) -> int:
    """Capacity of one memory bank: the permanent frame and max_mem_frames - 1 working frames of
    h*w tokens each (Cutie counts the permanent frame inside max_mem_frames), plus long-term tokens."""
    h, w = feature_size(padded)
    return h * w * max_mem_frames + long_term_tokens


def parse_size(size) -> tuple[int, int]:
    """'480x864' (H x W) or (480, 864) -> (480, 864)."""
    if isinstance(size, str):
        parts = size.lower().replace(" ", "").split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise SpecError(f"size must be HxW, e.g. 480x864; got {size!r}")
        return int(parts[0]), int(parts[1])
    h, w = size
    return int(h), int(w)


@dataclass(frozen=True)
class GraphSetSpec:
    """What one graph set is made for. Validated on construction (SpecError)."""

    preset: str
    padded_size: tuple[int, int]
    pad_multiple: int = STRIDE
    max_objects: int = 4
    max_mem_frames: int = 5
    long_term_tokens: int = 0
    flip_aug: bool = False
    top_k: int = 30
    max_streams: int = 1  # streams one graph call may batch (> 1: a dynamic batch axis)

    def __post_init__(self):
        object.__setattr__(self, "padded_size", parse_size(self.padded_size))
        H, W = self.padded_size
        m = self.pad_multiple
        if m < 1 or m % STRIDE:
            raise SpecError(f"pad_multiple must be a multiple of {STRIDE}, got {m}")
        if H <= 0 or W <= 0 or H % m or W % m:
            up = pad_to(max(H, m), max(W, m), m)
            raise SpecError(f"size {H}x{W} is not a padded resolution of {self.preset}: height and width must be "
                            f"multiples of {m}. Use --size {up[0]}x{up[1]} (the tracker pads a {H}x{W} frame to that)")
        if not 1 <= self.max_objects <= 255:
            raise SpecError(f"--max-objects must be in 1..255 (object ids are 1..255), got {self.max_objects}")
        if self.max_mem_frames < 2:
            raise SpecError(f"--max-mem-frames must be at least 2 (the permanent frame and one working frame), "
                            f"got {self.max_mem_frames}")
        if self.long_term_tokens < 0:
            raise SpecError(f"--long-term-tokens must be >= 0, got {self.long_term_tokens}")
        if self.top_k < 1:
            raise SpecError(f"--top-k must be at least 1, got {self.top_k}")
        if not isinstance(self.max_streams, int) or isinstance(self.max_streams, bool) or self.max_streams < 1:
            raise SpecError(f"--max-streams must be an integer >= 1, got {self.max_streams!r}")
        object.__setattr__(self, "flip_aug", bool(self.flip_aug))

    @classmethod
    def for_model(cls, cfg, size, **options) -> "GraphSetSpec":
        """The spec of a graph set of model config `cfg` at padded size `size` (HxW)."""
        return cls(preset=cfg.name, padded_size=parse_size(size), pad_multiple=cfg.pad_multiple, **options)

    @property
    def batch(self) -> int:
        """One stream's batch: 1, or 2 with flip augmentation."""
        return 2 if self.flip_aug else 1

    @property
    def max_batch(self) -> int:
        """The largest batch one graph call takes (max_streams streams)."""
        return self.batch * self.max_streams

    @property
    def graph_batch(self) -> int | str:
        """Axis 0 of the graphs: `batch` when one call serves one stream, else the dynamic BATCH_AXIS."""
        return self.batch if self.max_streams == 1 else BATCH_AXIS

    @property
    def memory_tokens(self) -> int:
        return memory_tokens(self.padded_size, self.max_mem_frames, self.long_term_tokens)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["padded_size"] = list(self.padded_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GraphSetSpec":
        return cls(**{**d, "padded_size": tuple(d["padded_size"])})

    def describe(self) -> str:
        H, W = self.padded_size
        lt = f" + {self.long_term_tokens} long-term tokens" if self.long_term_tokens else ""
        streams = f", up to {self.max_streams} streams per call" if self.max_streams > 1 else ""
        return (f"{self.preset} {H}x{W}, 1..{self.max_objects} objects, {self.max_mem_frames} memory frames{lt} "
                f"({self.memory_tokens} tokens), top-k {self.top_k}, batch {self.batch}{streams}")

    def export_command(self, **changes) -> str:
        """The `s3rt export` options that make a graph set of this spec with `changes` applied."""
        s = {**self.to_dict(), **changes}
        H, W = s["padded_size"]
        cmd = (f"s3rt export --preset {s['preset']} --size {H}x{W} --max-objects {s['max_objects']} "
               f"--max-mem-frames {s['max_mem_frames']} --top-k {s['top_k']}")
        if s["long_term_tokens"]:
            cmd += f" --long-term-tokens {s['long_term_tokens']}"
        if s["flip_aug"]:
            cmd += " --flip-aug"
        if s.get("max_streams", 1) > 1:
            cmd += f" --max-streams {s['max_streams']}"
        return cmd + " --out DIR"
