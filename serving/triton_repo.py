"""Write a Triton Inference Server model repository that serves streams with the stream pool.

    write_repository(out, graphs="exports/cutie-480p")            # ONNX Runtime graph set
    write_repository(out, engines="engines/cutie-480p")           # TensorRT engine set (GPU)
    write_repository(out, preset="cutie-test")                    # the torch reference (tests, CPU)

One model, `s3rt_stream` (Python backend), with Triton's sequence batcher (oldest strategy): the
server pins each stream (correlation id) to the instance that holds its state, keeps its frames
in order, and hands the instance frames of several streams at once; the instance runs them as one
`StreamPool.try_step`. Layout:

    REPO/s3rt_stream/config.pbtxt
    REPO/s3rt_stream/1/model.py          (three lines: s3rt.serving.triton_model does the work)
    REPO/s3rt_stream/1/s3rt_stream.json  (backend, tracker options)
    REPO/s3rt_stream/1/graphs/ | engines/  (a copy of the graph or engine set: the repository is self-contained)

Inputs: IMAGE uint8 [H,W,3] (RGB); MASK int32 [H,W] (optional: object ids 1..255, on a stream's
first frame and for new objects or corrections). Controls: START, END, READY (int32 0/1) and
CORRID (uint64). Outputs: MASK_OUT uint8 [H,W] object ids, OBJECT_IDS int32 [K] (the stream's
objects), and PROB float32 [K+1,H,W] with `output_prob`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MODEL_NAME = "s3rt_stream"
OPTIONS_FILE = "s3rt_stream.json"

MODEL_PY = '''"""Triton Python-backend entry point written by `s3rt triton-repo`; the work is in s3rt.serving."""

from s3rt.serving.triton_model import TritonPythonModel  # noqa: F401
'''


class RepoError(ValueError):
    """Options no repository can be written for."""


@dataclass
class RepoOptions:
    """What `s3rt triton-repo` writes (names as its options)."""

    model_name: str = MODEL_NAME
    max_candidate_sequences: int = 8  # streams one instance holds and batches
    preferred_batch_size: list[int] = field(default_factory=list)  # default: [max_candidate_sequences]
    max_queue_delay_us: int = 2000  # how long the batcher waits to fill a batch
    idle_timeout_s: float = 60.0  # the server's max_sequence_idle_microseconds, and the model's own eviction
    instance_kind: str = "cpu"  # "cpu" or "gpu"
    gpus: list[int] = field(default_factory=list)  # KIND_GPU: one instance per listed GPU (default [0])
    output_prob: bool = False
    tracker: dict = field(default_factory=dict)  # Tracker options (size, mem_every, ...)

    def check(self) -> None:
        if not self.model_name.replace("_", "").replace("-", "").isalnum():
            raise RepoError(f"--model-name: letters, digits, '_' and '-' only; got {self.model_name!r}")
        if self.max_candidate_sequences < 1:
            raise RepoError(f"--max-candidate-sequences must be >= 1, got {self.max_candidate_sequences}")
        bad = [b for b in self.preferred_batch_size if not 1 <= b <= self.max_candidate_sequences]
        if bad:
            raise RepoError(f"--preferred-batch-size {bad}: each must be in 1..--max-candidate-sequences "
                            f"({self.max_candidate_sequences})")
        if self.idle_timeout_s <= 0:
            raise RepoError(f"--idle-timeout must be > 0 seconds, got {self.idle_timeout_s}")
        if self.max_queue_delay_us < 0:
            raise RepoError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")
        if self.instance_kind not in ("cpu", "gpu"):
            raise RepoError(f"--instance-kind must be cpu or gpu, got {self.instance_kind!r}")


def config_pbtxt(opts: RepoOptions) -> str:
    """The model's config.pbtxt (Triton's ModelConfig in protobuf text format)."""
    preferred = opts.preferred_batch_size or [opts.max_candidate_sequences]
    if opts.instance_kind == "gpu":
        gpus = opts.gpus or [0]
        instances = ", ".join(f"{{ kind: KIND_GPU, count: 1, gpus: [ {g} ] }}" for g in gpus)
    else:
        instances = "{ kind: KIND_CPU, count: 1 }"
    outputs = [("MASK_OUT", "TYPE_UINT8", "-1, -1"), ("OBJECT_IDS", "TYPE_INT32", "-1")]
    if opts.output_prob:
        outputs.append(("PROB", "TYPE_FP32", "-1, -1, -1"))

    def control(name, kind, extra):
        return f'    {{ name: "{name}", control [ {{ kind: {kind}, {extra} }} ] }}'

    lines = [
        f'name: "{opts.model_name}"',
        'backend: "python"',
        f"max_batch_size: {opts.max_candidate_sequences}",
        "input [",
        '  { name: "IMAGE", data_type: TYPE_UINT8, dims: [ -1, -1, 3 ] },',
        '  { name: "MASK", data_type: TYPE_INT32, dims: [ -1, -1 ], optional: true }',
        "]",
        "output [",
        ",\n".join(f'  {{ name: "{n}", data_type: {t}, dims: [ {d} ] }}' for n, t, d in outputs),
        "]",
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {int(opts.idle_timeout_s * 1e6)}",
        "  oldest {",
        f"    max_candidate_sequences: {opts.max_candidate_sequences}",
        f"    preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
        f"    max_queue_delay_microseconds: {opts.max_queue_delay_us}",
        "  }",
        "  control_input [",
        ",\n".join([
            control("START", "CONTROL_SEQUENCE_START", "int32_false_true: [ 0, 1 ]"),
            control("END", "CONTROL_SEQUENCE_END", "int32_false_true: [ 0, 1 ]"),
            control("READY", "CONTROL_SEQUENCE_READY", "int32_false_true: [ 0, 1 ]"),
            control("CORRID", "CONTROL_SEQUENCE_CORRID", "data_type: TYPE_UINT64")]),
        "  ]",
        "}",
        f"instance_group [ {instances} ]",
        "",
    ]
    return "\n".join(lines)


def parse_config(text: str):
    """Parse config.pbtxt with Triton's own ModelConfig protobuf (tritonclient); raises RepoError
    when it does not parse. Returns the ModelConfig message."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise RepoError("checking config.pbtxt needs tritonclient (pip install 'tritonclient[grpc]', or "
                        "s3rt's [serving] extra)") from e
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise RepoError(f"config.pbtxt does not parse as Triton's ModelConfig: {e}") from e
    return cfg


def write_repository(out, *, graphs=None, engines=None, preset=None, checkpoint=None,
                     options: RepoOptions | None = None, overwrite: bool = False, validate: bool = True) -> Path:
    """Write the repository into the folder `out` (new or empty, or an earlier one with
    overwrite=True): exactly one of graphs (an `s3rt export` folder, run in ONNX Runtime), engines
    (an `s3rt build` folder, TensorRT) or preset (the torch reference; checkpoint optional).
    Written in a temporary folder and renamed into place."""
    opts = options or RepoOptions()
    opts.check()
    given = [k for k, v in (("--export", graphs), ("--engines", engines), ("--preset", preset)) if v is not None]
    if len(given) != 1:
        raise RepoError("give exactly one of --export DIR, --engines DIR or --preset NAME"
                        + (f" (got {', '.join(given)})" if given else ""))
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise RepoError(f"--out {out} exists and is not an empty folder; choose a new one or pass --overwrite")
    model_opts = {"tracker": dict(opts.tracker), "output_prob": opts.output_prob}
    source = None
    if graphs is not None:
        from s3rt.graphs import ManifestError, load_manifest
        try:
            manifest = load_manifest(graphs)
        except (ManifestError, FileNotFoundError, OSError) as e:
            raise RepoError(f"--export {graphs}: {e}") from e
        if manifest.spec.max_streams < opts.max_candidate_sequences:
            import warnings
            warnings.warn(f"the graph set takes {manifest.spec.max_streams} stream(s) per call and the batcher "
                          f"sends up to {opts.max_candidate_sequences}: the pool splits them into calls of "
                          f"{manifest.spec.max_streams}; export with --max-streams {opts.max_candidate_sequences} "
                          f"to run them in one call", stacklevel=2)
        model_opts.update(backend="onnxruntime", graphs="graphs")
        if opts.instance_kind == "gpu":
            model_opts["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            model_opts["device"] = "cuda"
        source = Path(graphs)
    elif engines is not None:
        if not Path(engines).is_dir():
            raise RepoError(f"--engines {engines} is not a folder (written by s3rt build)")
        model_opts.update(backend="tensorrt", graphs="engines", device="cuda")
        source = Path(engines)
    else:
        from s3rt.model import get_config
        try:
            get_config(preset)
        except (KeyError, ValueError) as e:
            raise RepoError(f"--preset: {e}") from e
        model_opts.update(backend="torch", preset=preset, device="cuda" if opts.instance_kind == "gpu" else "cpu")
        if checkpoint is not None:
            if not Path(checkpoint).is_file():
                raise RepoError(f"--checkpoint {checkpoint} does not exist")
            model_opts["checkpoint"] = "checkpoint.pth"
    text = config_pbtxt(opts)
    if validate:
        parse_config(text)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        version = tmp / opts.model_name / "1"
        version.mkdir(parents=True)
        (tmp / opts.model_name / "config.pbtxt").write_text(text)
        (version / "model.py").write_text(MODEL_PY)
        (version / OPTIONS_FILE).write_text(json.dumps(model_opts, indent=2) + "\n")
        if source is not None:
            shutil.copytree(source, version / model_opts["graphs"])
        if checkpoint is not None and preset is not None:
            shutil.copy2(checkpoint, version / "checkpoint.pth")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            old.rmdir()
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
