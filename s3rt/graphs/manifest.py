"""The graph-set manifest: `manifest.json` beside the graphs.

It records, for each graph, its file (and external-data file), their sha256, every input and
output (name, shape with the symbolic object axis `num_objects`, dtype), its precision and the
tool that wrote it; and globally the `GraphSetSpec` the set is made for, the preset's full
model config, the checkpoint's sha256 (or "random, seed N"), the s3rt version, the opset and
the exporter.

Every later stage calls `load_manifest(dir, ...)`, which refuses a graph set that does not match
it (missing or edited files, another preset or checkpoint than the caller expects) with an
error that says what to do. Reading a manifest needs neither onnx nor the exporter.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from s3rt.model.checkpoint import file_sha256
from s3rt.model.config import ModelConfig, ViTConfig
from s3rt.graphs.contracts import GRAPHS
from s3rt.graphs.spec import GraphSetSpec, SpecError

MANIFEST_NAME = "manifest.json"
FORMAT = "s3rt-export"
FORMAT_VERSION = 2  # 2: the options live in one 'spec' object


class ManifestError(ValueError):
    """A graph set that does not match its manifest, or not the one the caller expects."""


# ---------------------------------------------------------------------- config <-> JSON
def config_to_dict(cfg: ModelConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _tuplify(value):
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def config_from_dict(d: dict) -> ModelConfig:
    """Inverse of `config_to_dict` (lists back to tuples, the ViT sub-config back to ViTConfig)."""
    try:
        d = dict(d)
        vit = d.get("vit")
        if vit is not None:
            d["vit"] = ViTConfig(**{k: _tuplify(v) for k, v in vit.items()})
        return ModelConfig(**{k: v if k == "vit" else _tuplify(v) for k, v in d.items()})
    except (TypeError, ValueError) as e:
        raise ManifestError(f"the manifest's model_config is not a config this s3rt understands: {e}") from e


# ------------------------------------------------------------------------------ records
@dataclass
class GraphEntry:
    name: str
    file: str
    sha256: str
    inputs: list[dict]
    outputs: list[dict]
    precision: str = "fp32"
    exporter: str = "dynamo"
    data_file: str | None = None
    data_sha256: str | None = None
    op_counts: dict[str, int] = field(default_factory=dict)
    export_check: dict | None = None  # ONNX Runtime vs PyTorch on random inputs at export time
    # Reduced-precision sets (s3rt calibrate); absent (None) in FP32 exports:
    converter: str | None = None  # the tool and version that made this graph from its FP32 source
    kept_fp32: dict[str, list[str]] | None = None  # reason -> nodes kept in FP32 in a FP16 / INT8 graph
    quantized: dict | None = None  # INT8: op types, calibrated nodes and their count
    accuracy: dict | None = None  # per output vs the FP32 graph on recorded calibration inputs


# GraphEntry fields that FP32 exports leave out of manifest.json (older readers never saw them)
_OPTIONAL_GRAPH_FIELDS = ("converter", "kept_fp32", "quantized", "accuracy")


@dataclass
class Manifest:
    spec: GraphSetSpec
    model_config: dict
    checkpoint: str  # "sha256:<hex>" or "random, seed N"
    s3rt_version: str
    opset: int
    exporter: str
    graphs: dict[str, GraphEntry]
    seed: int | None = None
    checkpoint_file: str | None = None
    torch_version: str = ""
    source_sha256: str = ""  # the model and export code that wrote the graphs (for reuse)
    # A reduced-precision set (s3rt calibrate): the FP32 set it came from (folder, its manifest's
    # sha256, precisions) and how it was made (tool, versions, calibration set, options). None
    # in an FP32 export.
    derived_from: dict | None = None
    calibration: dict | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    directory: Path | None = None  # where it was read from (not stored)

    # ---- derived -----------------------------------------------------------------------
    @property
    def preset(self) -> str:
        return self.spec.preset

    @property
    def padded_size(self) -> tuple[int, int]:
        return self.spec.padded_size

    @property
    def max_objects(self) -> int:
        return self.spec.max_objects

    @property
    def memory_tokens(self) -> int:
        return self.spec.memory_tokens

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.checkpoint[len("sha256:"):] if self.checkpoint.startswith("sha256:") else None

    @property
    def precisions(self) -> dict[str, str]:
        return {name: g.precision for name, g in self.graphs.items()}

    @property
    def is_derived(self) -> bool:
        """A reduced-precision set made from an FP32 one (s3rt calibrate)."""
        return self.derived_from is not None

    def config(self) -> ModelConfig:
        return config_from_dict(self.model_config)

    def graph_path(self, name: str) -> Path:
        if self.directory is None:
            raise ValueError("this manifest was not read from a folder")
        return self.directory / self.graphs[name].file

    # ---- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": self.format, "format_version": self.format_version,
            "s3rt_version": self.s3rt_version, "torch_version": self.torch_version,
            "source_sha256": self.source_sha256,
            "exporter": self.exporter, "opset": self.opset,
            "spec": self.spec.to_dict(),
            # derived from the spec, for readers of the file
            "batch": self.spec.batch, "memory_tokens": self.spec.memory_tokens,
            "axes": {"num_objects": [1, self.spec.max_objects]},
            "checkpoint": self.checkpoint, "checkpoint_file": self.checkpoint_file, "seed": self.seed,
            "model_config": self.model_config,
            "graphs": {k: {kk: vv for kk, vv in dataclasses.asdict(v).items()
                           if kk != "name" and not (kk in _OPTIONAL_GRAPH_FIELDS and vv is None)}
                       for k, v in self.graphs.items()},
            **({"derived_from": self.derived_from} if self.derived_from is not None else {}),
            **({"calibration": self.calibration} if self.calibration is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, directory: Path | None = None) -> "Manifest":
        where = f" ({directory / MANIFEST_NAME})" if directory else ""
        if d.get("format") != FORMAT:
            raise ManifestError(f"not an s3rt graph-set manifest{where}: format is {d.get('format')!r}")
        if d.get("format_version") != FORMAT_VERSION:
            raise ManifestError(f"manifest format version {d.get('format_version')} is not {FORMAT_VERSION}{where}: "
                                "re-export the graphs with this s3rt (s3rt export ...)")
        try:
            graphs = {name: GraphEntry(name=name, **g) for name, g in d["graphs"].items()}
            return cls(
                spec=GraphSetSpec.from_dict(d["spec"]), model_config=d["model_config"], checkpoint=d["checkpoint"],
                s3rt_version=d["s3rt_version"], opset=int(d["opset"]), exporter=d["exporter"], graphs=graphs,
                seed=d.get("seed"), checkpoint_file=d.get("checkpoint_file"),
                torch_version=d.get("torch_version", ""), source_sha256=d.get("source_sha256", ""),
                derived_from=d.get("derived_from"), calibration=d.get("calibration"), directory=directory)
        except (KeyError, TypeError, ValueError, SpecError) as e:
            raise ManifestError(f"incomplete or malformed manifest{where}: {type(e).__name__}: {e}") from e

    def write(self, directory: str | os.PathLike) -> Path:
        from s3rt.io.atomic import atomic_write

        path = Path(directory) / MANIFEST_NAME
        with atomic_write(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        return path


# ----------------------------------------------------------------------------- checking


def checkpoint_label(checkpoint, seed: int) -> tuple[str, str | None]:
    """(manifest 'checkpoint' value, file name) for a checkpoint path, or random weights."""
    if checkpoint is None:
        return f"random, seed {seed}", None
    if isinstance(checkpoint, (str, os.PathLike)):
        return f"sha256:{file_sha256(checkpoint)}", Path(checkpoint).name
    return "state dict (in memory, no hash)", None


def _verify_files(m: Manifest, directory: Path) -> None:
    missing = [name for name in GRAPHS if name not in m.graphs]
    if missing:
        raise ManifestError(f"{directory / MANIFEST_NAME} lists no {', '.join(missing)} graph: the set is incomplete; "
                            "re-export it (s3rt export ...)")
    for name, g in m.graphs.items():
        for fname, sha, what in ((g.file, g.sha256, "graph"), (g.data_file, g.data_sha256, "weights")):
            if fname is None:
                continue
            p = directory / fname
            if Path(fname).name != fname:
                raise ManifestError(f"manifest entry {fname!r} for {name} is not a plain file name")
            if not p.is_file():
                raise ManifestError(f"{name}: {what} file {p} is missing (the manifest lists it); "
                                    "copy the whole export folder or re-export (s3rt export ...)")
            actual = file_sha256(p)
            if actual != sha:
                raise ManifestError(
                    f"{name}: {p.name} does not match the manifest (sha256 {actual[:12]}... but the manifest "
                    f"says {sha[:12]}...): the file was edited or replaced after export. Re-export the graphs "
                    "(s3rt export ...) instead of editing them")


def check_expectations(m: Manifest, *, preset: str | None = None, checkpoint=None, seed: int | None = None) -> None:
    """Refuse a graph set made from another preset or other weights than the caller's."""
    if preset is not None and preset != m.preset:
        raise ManifestError(f"the graphs in {m.directory} were exported from preset {m.preset!r}, not {preset!r}: "
                            f"pass --preset {m.preset} or export {preset} (s3rt export --preset {preset} ...)")
    if checkpoint is not None:
        if m.checkpoint_sha256 is None:
            raise ManifestError(f"the graphs in {m.directory} were exported with {m.checkpoint} weights, not from "
                                f"checkpoint {checkpoint}: re-export with --checkpoint {checkpoint}")
        actual = file_sha256(checkpoint)
        if actual != m.checkpoint_sha256:
            raise ManifestError(
                f"checkpoint {checkpoint} (sha256 {actual[:12]}...) is not the one the graphs in {m.directory} "
                f"were exported from (sha256 {m.checkpoint_sha256[:12]}..., file "
                f"{m.checkpoint_file or '?'}): pass that checkpoint or re-export with this one")
    if seed is not None and m.checkpoint_sha256 is None and m.seed is not None and seed != m.seed:
        raise ManifestError(f"the graphs in {m.directory} hold random weights of seed {m.seed}, not seed {seed}")


def load_manifest(export_dir: str | os.PathLike, *, verify: bool = True, preset: str | None = None,
                  checkpoint=None, seed: int | None = None) -> Manifest:
    """Read `export_dir/manifest.json` and check the graph set against it.

    verify: check that every listed file exists and has the recorded sha256.
    preset / checkpoint / seed: what the caller expects the graphs to hold (None: anything).
    Raises ManifestError with what was wrong and what to do.
    """
    directory = Path(export_dir)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"export folder {directory} does not exist (make one with s3rt export ... --out {directory})")
    if not path.is_file():
        raise ManifestError(f"no {MANIFEST_NAME} in {directory}: not an s3rt export folder "
                            f"(make one with s3rt export ... --out {directory})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"cannot read {path}: {e}; re-export the graphs (s3rt export ...)") from e
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a JSON object")
    m = Manifest.from_dict(data, directory)
    m.config()  # the config must be readable
    if verify:
        _verify_files(m, directory)
    check_expectations(m, preset=preset, checkpoint=checkpoint, seed=seed)
    from s3rt import __version__

    if m.s3rt_version != __version__:
        warnings.warn(f"{path} was written by s3rt {m.s3rt_version}; this is s3rt {__version__}", stacklevel=2)
    return m
