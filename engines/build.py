"""`build_engines`: a graph set (a folder with manifest.json from `s3rt export` or `s3rt
calibrate`) -> one TensorRT engine per graph and `engines.json`, on this machine's GPU.

Everything is checked before TensorRT is touched (the graph set against its manifest, the
options, the object profile, the output folder, the GPU for the hardware-compatibility level);
the engines are written into a temporary folder beside --out and renamed into place when all
five are built, so --out never holds a half-built set. The timing cache (--timing-cache) is read
before the first graph and written (atomically) after the last one.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from s3rt.engine_manifest import (ENGINE_MANIFEST_NAME, EngineEntry, EngineManifest, file_sha256, import_tensorrt,
                                  source_record)
from s3rt.engines.options import (BuildError, BuildOptions, batch_range, check_options, check_precisions,
                                  plan_profiles)
from s3rt.graphs import GRAPHS, MANIFEST_NAME, Manifest, load_manifest

ENGINE_SUFFIX = ".engine"


def prepare(graph_dir, options: BuildOptions, *, preset: str | None = None) -> tuple[Manifest, tuple, dict]:
    """Load and check the graph set and the options: (manifest, object range, profiles). The
    profiles span the batch axis too when the set has one (`batch_range`)."""
    graphs = load_manifest(graph_dir, verify=True, preset=preset)
    objects = check_options(options, graphs.spec.max_objects)
    batches = batch_range(options, graphs.spec)
    check_precisions(graphs)
    return graphs, objects, plan_profiles(graphs, objects, batches)


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / ENGINE_MANIFEST_NAME).is_file():
            raise BuildError(f"--out {out} exists and holds files that are not an s3rt engine set; choose a new or "
                             "empty folder")
        if not overwrite:
            raise BuildError(f"--out {out} already holds an engine set; pass --overwrite to replace it")
    if out.resolve().parent == out.resolve():
        raise BuildError(f"--out {out} cannot be a file-system root")


def gpu_info(device: int = 0) -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of the GPU, through PyTorch (which owns the CUDA context)."""
    import torch

    if not torch.cuda.is_available():
        raise BuildError(f"no CUDA GPU visible to PyTorch {torch.__version__} (torch.cuda.is_available() is False): "
                         "s3rt build runs on the target GPU with a CUDA build of PyTorch; elsewhere print the "
                         "commands with --print-trtexec")
    return torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))


def check_gpu_for(options: BuildOptions, gpu: tuple[str, tuple[int, int]]) -> None:
    if options.hardware_compat == "ampere+" and tuple(gpu[1]) < (8, 0):
        raise BuildError(f"--hardware-compat ampere+ needs an Ampere or later GPU to build on; {gpu[0]} has compute "
                         f"capability {gpu[1][0]}.{gpu[1][1]}")


def _on_device(device: int):
    """TensorRT builds on the current CUDA device: make it the one asked for."""
    import contextlib

    import torch

    return torch.cuda.device(device) if torch.cuda.is_available() else contextlib.nullcontext()


def _write_bytes(path: Path, data: bytes) -> None:
    from s3rt.io.atomic import atomic_write

    with atomic_write(path, "wb") as f:
        f.write(data)


def build_engines(graph_dir, out_dir, options: BuildOptions = BuildOptions(), *, overwrite: bool = False,
                  progress: bool = True, verbose: bool = False, device: int = 0, trt=None, gpu=None,
                  make_builder=None) -> EngineManifest:
    """Build the engines of the graph set in `graph_dir` into `out_dir`; returns their manifest.
    `trt`: the tensorrt module (default: import it; TensorRTUnavailable says what to install).
    For tests of everything around TensorRT: `gpu` (name, compute capability) instead of asking
    PyTorch, and `make_builder(options, timing_cache_bytes)` instead of `EngineBuilder` (an object
    with .version, .major, .build(onnx_path, profile) -> bytes and .serialized_timing_cache())."""
    from s3rt import __version__
    from s3rt.engines.builder import EngineBuilder
    from s3rt.io.atomic import make_temp_dir, replace_dir

    out = Path(out_dir)
    graphs, objects, profiles = prepare(graph_dir, options)
    check_out(out, overwrite)
    if make_builder is None:
        trt = trt or import_tensorrt()

        def make_builder(opts, cache):
            return EngineBuilder(trt, opts, timing_cache=cache, verbose=verbose)
    gpu = gpu or gpu_info(device)
    check_gpu_for(options, gpu)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    cache_in = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)
    try:
        t_start = time.perf_counter()
        with _on_device(device):
            builder = make_builder(options, cache_in)
            entries = {}
            from tqdm.auto import tqdm

            bar = tqdm(list(GRAPHS), desc=f"build {graphs.preset}", unit="engine", disable=not progress, leave=True)
            for name in bar:
                bar.set_postfix_str(name)
                g = graphs.graphs[name]
                t0 = time.perf_counter()
                data = builder.build(str(graphs.graph_path(name)), profiles[name])
                seconds = time.perf_counter() - t0
                path = tmp / (name + ENGINE_SUFFIX)
                _write_bytes(path, data)
                entries[name] = EngineEntry(name=name, file=path.name, sha256=file_sha256(path), bytes=len(data),
                                            precision=g.precision, graph_sha256=g.sha256, inputs=g.inputs,
                                            outputs=g.outputs, profile=profiles[name], build_seconds=round(seconds, 3))
        m = EngineManifest(
            tensorrt_version=str(builder.version), gpu_name=gpu[0], compute_capability=tuple(gpu[1]),
            hardware_compat=options.hardware_compat, version_compatible=bool(options.version_compat),
            source=source_record(graphs), spec=graphs.spec, model_config=graphs.model_config,
            checkpoint=graphs.checkpoint, objects=objects, batches=batch_range(options, graphs.spec),
            options={**options.to_dict(), "strongly_typed": True, "tensorrt_major": builder.major},
            engines=entries, built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            build_seconds=time.perf_counter() - t_start, s3rt_version=__version__)
        m.write(tmp)
        cache_out = builder.serialized_timing_cache()
        if cache_path is not None and cache_out:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            _write_bytes(cache_path, cache_out)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    m.directory = out
    return m


def describe_plan(graphs: Manifest, objects, profiles) -> list[str]:
    """Human-readable lines: what will be built (used by --dry-run and --print-trtexec)."""
    lines = [f"graph set {graphs.directory} ({graphs.spec.describe()}), objects {objects[0]}..{objects[2]} "
             f"(opt {objects[1]})"]
    if graphs.spec.max_streams > 1:
        opt_rows = {s["opt"][0] for p in profiles.values() for s in p.values()}  # axis 0 of every input: the batch
        opt = ",".join(str(r // graphs.spec.batch) for r in sorted(opt_rows))
        lines[0] += f", streams per call 1..{graphs.spec.max_streams} (opt {opt})"
    for name in GRAPHS:
        g = graphs.graphs[name]
        shapes = profiles[name]
        dyn = ", ".join(f"{k} {s['min']}..{s['max']}" for k, s in shapes.items() if s["min"] != s["max"])
        lines.append(f"  {name:<13} {g.precision:<5} {dyn or 'static'}")
    return lines


__all__ = ["build_engines", "prepare", "check_out", "gpu_info", "check_gpu_for", "describe_plan", "MANIFEST_NAME",
           "ENGINE_SUFFIX"]
