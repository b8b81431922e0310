"""Build options and the optimization profile, in plain Python (no TensorRT needed).

`BuildOptions` is what `s3rt build` takes; `check_options` refuses what no engine can be built
with (one line, what to change) against the graph set it is for; `plan_profiles` turns the
graph set's contracts (`s3rt.graphs.graph_io`, the symbolic `num_objects` axis and, for a graph
set exported with `--max-streams S` > 1, the symbolic `batch` axis) into the min / opt / max
shape of every input, which both the TensorRT builder and the trtexec command lines use.

The batch axis (`batch_range`): one TensorRT profile covers one stream per call up to the
graph set's S streams (axis 0 from `spec.batch` to `spec.max_batch` rows; 2 rows per stream
with flip augmentation). Its opt is S streams by default: the stream pool puts every stream
with a frame waiting into one call, and Triton's sequence batcher (preferred batch = its
candidate streams) fills the batch whenever the server is busy (measured on the CPU server: 60
of 62 executions at batch 8), which is when throughput counts; TensorRT tunes its tactics for
the opt shape and those kernels still run every smaller batch of the profile, so partial
batches at light load (when there is latency to spare) cost least. `opt_streams` changes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from s3rt.engine_manifest import HARDWARE_COMPAT
from s3rt.graphs import GRAPHS, Manifest, eval_dim, graph_io

PRECISIONS = ("fp32", "fp16", "int8", "mixed")  # what a graph set's manifest may say per graph


class BuildError(ValueError):
    """Options or inputs no engine can be built from; one line, with what to change."""


@dataclass(frozen=True)
class BuildOptions:
    """min/opt/max_objects: the optimization profile over the object axis (None: 1, min(2, max),
    the graph set's max_objects); workspace_mib: the builder's workspace pool limit (None:
    TensorRT's default, the GPU's memory); timing_cache: a file read before and written after
    the build (None: none kept); hardware_compat: 'none', 'ampere+' or 'same-cc';
    version_compat: engines that later TensorRT versions can run (embeds the lean runtime);
    optimization_level: TensorRT's builder optimization level 0..5 (None: its default, 3);
    tf32: let FP32 layers use TF32 tensor cores (TensorRT's default; off here so that FP32 engines
    match the reference to ~1e-4, as the design asks of FP32 backends); opt_streams: for a graph
    set with the batch axis (exported with --max-streams S > 1), the streams per call TensorRT
    tunes for (None: S; the profile always spans 1..S streams)."""

    min_objects: int | None = None
    opt_objects: int | None = None
    max_objects: int | None = None
    workspace_mib: int | None = None
    timing_cache: str | None = None
    hardware_compat: str = "none"
    version_compat: bool = False
    optimization_level: int | None = None
    tf32: bool = False
    opt_streams: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def object_range(options: BuildOptions, spec_max: int) -> tuple[int, int, int]:
    """(min, opt, max) objects for a graph set that takes 1..spec_max; BuildError when impossible."""
    hi = spec_max if options.max_objects is None else int(options.max_objects)
    lo = 1 if options.min_objects is None else int(options.min_objects)
    opt = min(2, hi) if options.opt_objects is None else int(options.opt_objects)
    if options.opt_objects is None:
        opt = max(lo, opt)
    if hi > spec_max:
        raise BuildError(f"--max-objects {hi} but the graph set takes at most {spec_max} objects: export one with "
                         f"--max-objects {hi} (s3rt export ... --max-objects {hi}) or build with --max-objects "
                         f"{spec_max} or less")
    if not 1 <= lo <= opt <= hi:
        raise BuildError(f"the object profile must satisfy 1 <= --min-objects <= --opt-objects <= --max-objects; got "
                         f"{lo}, {opt}, {hi}")
    return lo, opt, hi


def batch_range(options: BuildOptions, spec) -> tuple[int, int, int] | None:
    """(min, opt, max) of axis 0 in rows for a graph set with the batch axis (spec.max_streams
    > 1): one stream (spec.batch rows) to spec.max_streams, opt `opt_streams` (default all);
    None for a graph set of one stream per call (its batch is fixed). BuildError when impossible."""
    s = spec.max_streams
    if s == 1:
        if options.opt_streams not in (None, 1):
            raise BuildError(f"opt_streams {options.opt_streams}, but the graph set takes one stream per call: export "
                             f"one with a batch axis ({spec.export_command(max_streams=int(options.opt_streams))})")
        return None
    opt = s if options.opt_streams is None else int(options.opt_streams)
    if not 1 <= opt <= s:
        raise BuildError(f"opt_streams must be in 1..{s} (the graph set takes up to {s} streams per call); got {opt}")
    return spec.batch, opt * spec.batch, spec.max_batch


def check_options(options: BuildOptions, spec_max: int) -> tuple[int, int, int]:
    """Validate everything that does not need TensorRT; returns the object range."""
    if options.hardware_compat not in HARDWARE_COMPAT:
        raise BuildError(f"--hardware-compat must be one of {', '.join(HARDWARE_COMPAT)}; got "
                         f"{options.hardware_compat!r}")
    if options.workspace_mib is not None and not 1 <= options.workspace_mib <= 1 << 20:
        raise BuildError(f"--workspace is in MiB, 1..1048576; got {options.workspace_mib}")
    if options.optimization_level is not None and not 0 <= options.optimization_level <= 5:
        raise BuildError(f"--opt-level must be in 0..5 (TensorRT's builder optimization level); got "
                         f"{options.optimization_level}")
    return object_range(options, spec_max)


def check_precisions(graphs: Manifest) -> dict[str, str]:
    """Each graph's precision as its manifest says (strongly typed: the graph holds its types)."""
    out = {}
    for name, g in graphs.graphs.items():
        p = str(g.precision).lower()
        if p not in PRECISIONS:
            raise BuildError(f"{name}: precision {g.precision!r} in {graphs.directory} is not one of "
                             f"{', '.join(PRECISIONS)}; re-export or re-calibrate the graph set")
        out[name] = p
    return out


def plan_profiles(graphs: Manifest, objects: tuple[int, int, int], batches: tuple[int, int, int] | None = None,
                  ) -> dict[str, dict[str, dict[str, list[int]]]]:
    """graph -> input -> {"min", "opt", "max"} shapes, from the inputs the graph-set manifest
    lists (shapes with the symbolic object axis, and the symbolic batch axis in a set made for
    several streams per call). `batches`: (min, opt, max) rows of the batch axis (default for
    such a set: `batch_range` with default options; unused otherwise). The object and batch axes
    take their min together, their opt together and their max together. Inputs with neither axis
    have one fixed shape (min = opt = max): the builder gives TensorRT a profile entry only for
    the inputs that are dynamic in the ONNX graph itself."""
    if batches is None:
        batches = batch_range(BuildOptions(), graphs.spec) or (graphs.spec.batch,) * 3
    return {name: {t["name"]: {k: [eval_dim(d, n, b) for d in t["shape"]]
                               for k, n, b in zip(("min", "opt", "max"), objects, batches)}
                   for t in graphs.graphs[name].inputs}
            for name in GRAPHS}


def is_dynamic(profile: dict[str, dict[str, list[int]]]) -> bool:
    """Whether a graph's profile spans more than one shape (it has the object or the batch axis)."""
    return any(s["min"] != s["max"] for s in profile.values())


def expected_inputs(graphs: Manifest) -> dict[str, list[dict]]:
    """The contract's inputs with shapes for this graph set (to check the manifest against)."""
    spec = graphs.spec
    io = graph_io(graphs.config(), spec.padded_size, spec.graph_batch, spec.memory_tokens)
    return {name: [t.to_dict() for t in io[name][0]] for name in GRAPHS}
