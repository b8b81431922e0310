"""The engine manifest (`engines.json` beside the engines written by `s3rt build`), and the
checks that decide whether an engine set may run here.

Below the runtime and beside the graph-set manifest: `s3rt.engines` (the builder) writes it,
the tensorrt backend reads it, and neither imports the other. This module needs neither
TensorRT nor a GPU: the caller passes the TensorRT version and the GPU it has.

What it records: the TensorRT version and the GPU (name, compute capability) the engines were
built with, the compatibility settings (hardware level, version compatibility), the source
graph set (its manifest's sha256 and every graph file's sha256), the spec, model config and
checkpoint label copied from it, the optimization profile over the object axis (and over the
batch axis, in rows, for a graph set made for several streams per call), the build options,
each engine file's sha256, size, precision and tensor shapes, and the build times.

Every refusal is one line that names both sides and the command that fixes it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from s3rt.graphs import GRAPHS, MANIFEST_NAME, GraphSetSpec, Manifest, config_from_dict
from s3rt.model.checkpoint import file_sha256  # (engines.build and tests import it from here)

ENGINE_MANIFEST_NAME = "engines.json"
FORMAT = "s3rt-engines"
FORMAT_VERSION = 1
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")  # TensorRT's NONE, AMPERE_PLUS, SAME_COMPUTE_CAPABILITY
MIN_TENSORRT = (10, 3)  # the oldest 10.x whose Python API has everything s3rt calls (JetPack 6.2 ships 10.3)
INSTALL_HINT = ("install TensorRT 10.3+ or 11.x for your CUDA (e.g. `pip install tensorrt` for 11.x, "
                "`pip install tensorrt-cu12==10.*` for 10.x) on a machine with an NVIDIA GPU")


class EngineManifestError(ValueError):
    """An engine set that does not match its manifest, this machine, or its graph set."""


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot be imported (or is not functional) here; the message says what to install."""


# ------------------------------------------------------------------------ TensorRT, importing
def import_tensorrt():
    """The `tensorrt` module, or TensorRTUnavailable with one line that says what to install."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTUnavailable(f"TensorRT is not installed ({e}): {INSTALL_HINT}") from e
    version = getattr(tensorrt, "__version__", None)
    if not isinstance(version, str):
        raise TensorRTUnavailable(f"the installed `tensorrt` module has no __version__ (a placeholder package?): "
                                  f"{INSTALL_HINT}")
    v = parse_version(version)
    if not MIN_TENSORRT <= v[:2] < (12, 0):
        raise TensorRTUnavailable(f"TensorRT {version} is installed; s3rt supports TensorRT 10.3 to 11.x: "
                                  f"{INSTALL_HINT}")
    return tensorrt


def parse_version(version: str) -> tuple[int, ...]:
    """'10.16.1.11' -> (10, 16, 1, 11); raises EngineManifestError for anything else."""
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[.+-].*)?", str(version).strip())
    if not m:
        raise EngineManifestError(f"cannot read the TensorRT version {version!r}")
    return tuple(int(g) for g in m.groups() if g is not None)


def major_minor(version: str) -> tuple[int, int]:
    v = parse_version(version)
    return v[0], v[1]


def source_record(graphs: Manifest) -> dict:
    """What an engine set remembers of its graph set: where it was, its manifest's sha256 and
    each graph's file hashes."""
    directory = Path(graphs.directory).resolve()
    return {
        "directory": str(directory),
        "manifest_sha256": file_sha256(directory / MANIFEST_NAME),
        "graphs": {name: {"file": g.file, "sha256": g.sha256, "data_sha256": g.data_sha256, "precision": g.precision}
                   for name, g in graphs.graphs.items()},
    }


# ------------------------------------------------------------------------------ records
@dataclass
class EngineEntry:
    name: str
    file: str
    sha256: str
    bytes: int
    precision: str  # of the source graph: fp32, fp16, int8 (strongly typed: the graph decides)
    graph_sha256: str  # the source graph file it was built from
    inputs: list[dict]  # name, shape (symbolic object axis), dtype, as in the graph-set manifest
    outputs: list[dict]
    profile: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # input -> {min, opt, max}
    build_seconds: float = 0.0


@dataclass
class EngineManifest:
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    hardware_compat: str  # one of HARDWARE_COMPAT
    version_compatible: bool
    source: dict  # source_record(...)
    spec: GraphSetSpec
    model_config: dict
    checkpoint: str
    objects: tuple[int, int, int]  # the profile over the object axis: min, opt, max
    options: dict  # build options (workspace, timing cache, optimization level, strongly typed, ...)
    engines: dict[str, EngineEntry]
    batches: tuple[int, int, int] | None = None  # the profile over the batch axis in rows (None: fixed batch)
    built_at: str = ""
    build_seconds: float = 0.0
    s3rt_version: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    directory: Path | None = None  # where it was read from (not stored)

    # ---- derived -------------------------------------------------------------------------
    def config(self):
        return config_from_dict(self.model_config)

    @property
    def precisions(self) -> dict[str, str]:
        return {name: e.precision for name, e in self.engines.items()}

    def engine_path(self, name: str) -> Path:
        if self.directory is None:
            raise ValueError("this engine manifest was not read from a folder")
        return self.directory / self.engines[name].file

    def build_command(self, **changes) -> str:
        """The `s3rt build` command that rebuilds this engine set (with `changes` applied)."""
        o = {"graphs": self.source.get("directory", "GRAPHS"), "out": str(self.directory or "DIR"),
             "min_objects": self.objects[0], "opt_objects": self.objects[1], "max_objects": self.objects[2],
             "hardware_compat": self.hardware_compat, "version_compat": self.version_compatible, **changes}
        cmd = (f"s3rt build --graphs {o['graphs']} --out {o['out']} --min-objects {o['min_objects']} "
               f"--opt-objects {o['opt_objects']} --max-objects {o['max_objects']}")
        if o["hardware_compat"] != "none":
            cmd += f" --hardware-compat {o['hardware_compat']}"
        if o["version_compat"]:
            cmd += " --version-compat"
        return cmd + " --overwrite"

    def describe(self) -> str:
        lo, opt, hi = self.objects
        compat = [f"hardware {self.hardware_compat}"] if self.hardware_compat != "none" else []
        compat += ["version-compatible"] if self.version_compatible else []
        cc = ".".join(map(str, self.compute_capability))
        streams = ""
        if self.batches is not None:
            per = self.spec.batch
            streams = (f"streams per call {self.batches[0] // per}..{self.batches[2] // per} "
                       f"(opt {self.batches[1] // per}), ")
        return (f"TensorRT {self.tensorrt_version} engines for {self.gpu_name} (sm {cc}"
                + (", " + ", ".join(compat) if compat else "") + f"), objects {lo}..{hi} (opt {opt}), {streams}"
                + "/".join(sorted(set(self.precisions.values()))))

    # ---- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": self.format, "format_version": self.format_version, "s3rt_version": self.s3rt_version,
            "built_at": self.built_at, "build_seconds": round(self.build_seconds, 3),
            "tensorrt_version": self.tensorrt_version,
            "gpu": {"name": self.gpu_name, "compute_capability": list(self.compute_capability)},
            "compat": {"hardware": self.hardware_compat, "version_compatible": self.version_compatible},
            "source": self.source, "spec": self.spec.to_dict(), "model_config": self.model_config,
            "checkpoint": self.checkpoint,
            "profile": {"num_objects": {"min": self.objects[0], "opt": self.objects[1], "max": self.objects[2]},
                        **({"batch": dict(zip(("min", "opt", "max"), self.batches))} if self.batches else {})},
            "options": self.options,
            "engines": {name: {k: v for k, v in e.__dict__.items() if k != "name"} for name, e in self.engines.items()},
        }

    @classmethod
    def from_dict(cls, d: dict, directory: Path | None = None) -> "EngineManifest":
        where = f" ({directory / ENGINE_MANIFEST_NAME})" if directory else ""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise EngineManifestError(f"not an s3rt engine manifest{where}: format is {got!r}")
        if d.get("format_version") != FORMAT_VERSION:
            raise EngineManifestError(f"engine manifest format version {d.get('format_version')} is not "
                                      f"{FORMAT_VERSION}{where}: rebuild the engines with this s3rt (s3rt build ...)")
        try:
            p = d["profile"]["num_objects"]
            pb = d["profile"].get("batch")
            m = cls(
                tensorrt_version=str(d["tensorrt_version"]), gpu_name=str(d["gpu"]["name"]),
                compute_capability=tuple(int(x) for x in d["gpu"]["compute_capability"]),
                hardware_compat=d["compat"]["hardware"], version_compatible=bool(d["compat"]["version_compatible"]),
                source=dict(d["source"]), spec=GraphSetSpec.from_dict(d["spec"]), model_config=d["model_config"],
                checkpoint=d["checkpoint"], objects=(int(p["min"]), int(p["opt"]), int(p["max"])),
                options=dict(d["options"]),
                engines={name: EngineEntry(name=name, **e) for name, e in d["engines"].items()},
                batches=None if pb is None else (int(pb["min"]), int(pb["opt"]), int(pb["max"])),
                built_at=d.get("built_at", ""), build_seconds=float(d.get("build_seconds", 0.0)),
                s3rt_version=d.get("s3rt_version", ""), directory=directory)
        except (KeyError, TypeError, ValueError) as e:
            raise EngineManifestError(f"incomplete or malformed engine manifest{where}: {type(e).__name__}: {e}; "
                                      "rebuild the engines (s3rt build ...)") from e
        if m.hardware_compat not in HARDWARE_COMPAT:
            raise EngineManifestError(f"unknown hardware compatibility {m.hardware_compat!r}{where}")
        if len(m.compute_capability) != 2:
            raise EngineManifestError(f"compute capability {list(m.compute_capability)} is not [major, minor]{where}")
        spec = m.spec
        if spec.max_streams > 1 and m.batches is None:
            raise EngineManifestError(f"the engines{where} are for graphs with a batch axis (up to {spec.max_streams} "
                                      f"streams per call) but record no batch profile: rebuild them: "
                                      f"{m.build_command()}")
        if m.batches is not None and not (spec.batch <= m.batches[0] <= m.batches[1] <= m.batches[2] <= spec.max_batch
                                          and all(b % spec.batch == 0 for b in m.batches)):
            raise EngineManifestError(f"batch profile {list(m.batches)}{where} does not fit the graph set's batch "
                                      f"{spec.batch}..{spec.max_batch} in steps of {spec.batch}: rebuild them: "
                                      f"{m.build_command()}")
        return m

    def write(self, directory: str | os.PathLike) -> Path:
        from s3rt.io.atomic import atomic_write

        path = Path(directory) / ENGINE_MANIFEST_NAME
        with atomic_write(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        return path


# ----------------------------------------------------------------------------- reading
def read_engine_manifest(engine_dir: str | os.PathLike) -> EngineManifest:
    """Read `engine_dir/engines.json` (no checks beyond its format)."""
    directory = Path(engine_dir)
    path = directory / ENGINE_MANIFEST_NAME
    if not directory.is_dir():
        raise EngineManifestError(f"engine folder {directory} does not exist (make one with "
                                  f"s3rt build --graphs GRAPHS --out {directory})")
    if not path.is_file():
        hint = (" (it holds a graph set: build engines from it with "
                f"s3rt build --graphs {directory} --out ENGINES)") if (directory / MANIFEST_NAME).is_file() else ""
        raise EngineManifestError(f"no {ENGINE_MANIFEST_NAME} in {directory}: not an s3rt engine folder{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineManifestError(f"cannot read {path}: {e}; rebuild the engines (s3rt build ...)") from e
    return EngineManifest.from_dict(data, directory)


def verify_engine_files(m: EngineManifest) -> None:
    """Every engine the manifest lists exists and has its recorded sha256."""
    missing = [g for g in GRAPHS if g not in m.engines]
    if missing:
        raise EngineManifestError(f"{m.directory / ENGINE_MANIFEST_NAME} lists no {', '.join(missing)} engine: "
                                  f"the set is incomplete; rebuild it: {m.build_command()}")
    for name, e in m.engines.items():
        if Path(e.file).name != e.file:
            raise EngineManifestError(f"engine manifest entry {e.file!r} for {name} is not a plain file name")
        p = m.directory / e.file
        if not p.is_file():
            raise EngineManifestError(f"{name}: engine file {p} is missing (the manifest lists it, sha256 "
                                      f"{e.sha256[:12]}...): copy the whole engine folder or rebuild: "
                                      f"{m.build_command()}")
        actual = file_sha256(p)
        if actual != e.sha256:
            raise EngineManifestError(f"{name}: {p} has sha256 {actual[:12]}... but the manifest says "
                                      f"{e.sha256[:12]}... (edited or replaced after the build): rebuild: "
                                      f"{m.build_command()}")


def check_tensorrt_version(m: EngineManifest, runtime_version: str) -> None:
    """The installed TensorRT may run these engines: the same major.minor, or (for engines built
    version-compatible) the same or a later version."""
    built, here = major_minor(m.tensorrt_version), major_minor(runtime_version)
    if built == here:
        return
    if m.version_compatible and here >= built:
        return
    why = ("version-compatible engines run on the same or later TensorRT only" if m.version_compatible else
           "engines run only on the TensorRT major.minor that built them unless built with --version-compat")
    raise EngineManifestError(
        f"the engines in {m.directory} were built with TensorRT {m.tensorrt_version}, but this is TensorRT "
        f"{runtime_version} ({why}): rebuild them here: {m.build_command()}")


def check_gpu(m: EngineManifest, gpu_name: str, compute_capability: tuple[int, int]) -> str | None:
    """The GPU here may run these engines under their hardware-compatibility level. Returns a
    warning text when it may but is not the GPU they were tuned on (None otherwise)."""
    built, here = tuple(m.compute_capability), tuple(int(x) for x in compute_capability)
    b, h = ".".join(map(str, built)), ".".join(map(str, here))
    if m.hardware_compat == "ampere+":
        if here < (8, 0):
            raise EngineManifestError(
                f"the engines in {m.directory} were built for Ampere and later (hardware-compat ampere+), but "
                f"{gpu_name} has compute capability {h}: rebuild them on this GPU: "
                f"{m.build_command(hardware_compat='none')}")
    elif built != here:
        allow = ("the same compute capability" if m.hardware_compat == "same-cc" else "the GPU model that built them")
        raise EngineManifestError(
            f"the engines in {m.directory} were built on {m.gpu_name} (compute capability {b}), but this is "
            f"{gpu_name} (compute capability {h}) and they run only on {allow}: rebuild them here: "
            f"{m.build_command()}, or build once with --hardware-compat ampere+")
    if gpu_name != m.gpu_name:
        if m.hardware_compat == "none":
            return (f"the engines in {m.directory} were built on {m.gpu_name}, this is {gpu_name} (same compute "
                    f"capability {h}); TensorRT may refuse them or run them slower: {m.build_command()}")
        return (f"the engines in {m.directory} were tuned on {m.gpu_name}, this is {gpu_name} "
                f"(hardware-compat {m.hardware_compat}): a build here may be faster")
    return None


def check_source(m: EngineManifest, graphs: Manifest | None = None) -> None:
    """The graph set the engines were built from is unchanged: `graphs` (a loaded graph-set
    manifest), or else the recorded source folder when it still exists (nothing to compare when
    it is gone: the engine set is self-contained)."""
    if graphs is None:
        directory = Path(m.source.get("directory", ""))
        if not m.source.get("directory") or not (directory / MANIFEST_NAME).is_file():
            return
        from s3rt.graphs import load_manifest

        graphs = load_manifest(directory, verify=False)
    directory = Path(graphs.directory).resolve()
    if graphs.spec != m.spec:
        raise EngineManifestError(
            f"the engines in {m.directory} were built for {m.spec.describe()}, but the graphs in {directory} are "
            f"{graphs.spec.describe()}: rebuild them: {m.build_command(graphs=directory)}")
    recorded = m.source.get("graphs", {})
    changed = [name for name, g in graphs.graphs.items()
               if name in recorded and (recorded[name]["sha256"], recorded[name].get("data_sha256"))
               != (g.sha256, g.data_sha256)]
    if changed:
        name = changed[0]
        raise EngineManifestError(
            f"the graphs in {directory} changed since the engines in {m.directory} were built ({', '.join(changed)}: "
            f"{name} sha256 {graphs.graphs[name].sha256[:12]}... now, {recorded[name]['sha256'][:12]}... at the "
            f"build): rebuild them: {m.build_command(graphs=directory)}")
    actual = file_sha256(directory / MANIFEST_NAME)
    if actual != m.source.get("manifest_sha256"):
        raise EngineManifestError(
            f"{directory / MANIFEST_NAME} changed since the engines in {m.directory} were built (sha256 "
            f"{actual[:12]}... now, {str(m.source.get('manifest_sha256'))[:12]}... at the build): rebuild them: "
            f"{m.build_command(graphs=directory)}")


def load_engine_manifest(engine_dir: str | os.PathLike, *, verify: bool = True, tensorrt_version: str | None = None,
                         gpu: tuple[str, tuple[int, int]] | None = None, graphs: Manifest | None = None,
                         check_graphs: bool = True) -> tuple[EngineManifest, list[str]]:
    """Read and check an engine set; returns (manifest, warnings).

    verify: engine files exist with their sha256; tensorrt_version: the TensorRT here; gpu: (name,
    compute capability) here; graphs / check_graphs: the graph set they must have been built from
    (default: the recorded source folder, when it still exists). EngineManifestError otherwise.
    """
    m = read_engine_manifest(engine_dir)
    m.config()
    warnings_ = []
    if verify:
        verify_engine_files(m)
    if tensorrt_version is not None:
        check_tensorrt_version(m, tensorrt_version)
    if gpu is not None:
        w = check_gpu(m, gpu[0], gpu[1])
        if w:
            warnings_.append(w)
    if check_graphs:
        check_source(m, graphs)
    return m, warnings_
