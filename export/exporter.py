"""Export the network as five ONNX graphs (docs/architecture.md, "The graphs").

One export is one `GraphSetSpec` (s3rt.graphs.spec): one padded resolution H x W, one batch (1,
or 2 with flip augmentation; with max_streams > 1 a dynamic axis `batch` in 1..max_batch, for the
stream pool) and one memory capacity M = max_mem_frames * (H/16) * (W/16)
(+ long-term tokens) with a valid mask; the object axis `num_objects` is dynamic in
1..max_objects.

    export_graphs("cutie-base", "out/cutie-480p", size=(480, 864), max_objects=4)
    export_graphs("cutie-base", "out/cutie-480p", spec=GraphSetSpec.for_model(cfg, (480, 864)))

writes encoder.onnx, readout.onnx, fusion.onnx, decoder.onnx, mask_encoder.onnx (weights in a
side `<graph>.onnx.data` file when large) and manifest.json. Everything is written into a
temporary folder beside `out` and renamed into place at the end, so `out` never holds a
half-written set. Each graph is checked before it is accepted: `onnx.checker` (full check with
shape inference), the TensorRT operator allow-list (`export/ops.py`), and a run in ONNX Runtime
compared with the PyTorch wrapper on random inputs at two object counts.

The dynamo exporter (`torch.onnx.export(..., dynamo=True)`) is used first; if it fails on a
graph, that graph is exported with the TorchScript exporter (`dynamo=False`) and the manifest
records which exporter wrote it. (The TorchScript exporter cannot export the graphs whose
'area' resizes see the dynamic object axis, i.e. fusion, decoder and mask_encoder, so there the
fallback only helps the encoder and the readout.)

`reuse=True` returns an export already in `out` when its spec is equal (`==`), it holds the same
weights, was made by the same s3rt version and model / export code (`source_fingerprint`), and
still verifies.
Peak memory: about 1.2 GB for cutie-base and 3.6 GB for s3-base at 480x864.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from s3rt.export.ops import check_model_ops
from s3rt.export.substitutions import export_substitutions
from s3rt.graphs import (GRAPHS, MANIFEST_NAME, OBJECT_AXIS, GraphEntry, GraphSetSpec, Manifest, ManifestError,
                         SpecError, TensorInfo, checkpoint_label, config_to_dict, example_inputs, graph_io,
                         load_manifest)
from s3rt.graphs.contracts import BATCH_AXIS
from s3rt.graphs.modules import graph_module
from s3rt.io.atomic import FILE_MODE, make_temp_dir, replace_dir  # FILE_MODE: what atomic_write gives files
from s3rt.model.checkpoint import file_sha256

DEFAULT_OPSET = 18
EXTERNAL_DATA_THRESHOLD = 100 * 2**20  # bytes of weights above which they go to <graph>.onnx.data
_OWNED_SUFFIXES = (".onnx", ".onnx.data", ".json")

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """Bad export options, or a graph that fails its checks."""


def check_opset(opset: int) -> None:
    if not 17 <= opset <= 24:
        raise ExportError(f"--opset must be in 17..24 (TensorRT 10/11 parse 9..24; 17+ has LayerNormalization), "
                          f"got {opset}")


# ------------------------------------------------------------------------------ folders
def _is_owned_export(directory: Path) -> bool:
    entries = list(directory.iterdir())
    return (directory / MANIFEST_NAME).is_file() and all(
        p.is_file() and p.name.endswith(_OWNED_SUFFIXES) for p in entries)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_owned_export(out):
        raise ExportError(f"--out {out} exists and holds files that are not an s3rt export; "
                          "choose a new or empty folder")


# ------------------------------------------------------------------------- one graph
@contextlib.contextmanager
def _quiet_exporter():
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _dynamic_spec(inputs: list[TensorInfo], max_objects: int, max_batch: int = 1):
    """dynamic_shapes for torch.export: the object axis (axis 1) when max_objects > 1, and the batch
    axis (axis 0) when the spec's graph batch is dynamic (max_batch > 1 with BATCH_AXIS shapes)."""
    obj = torch.export.Dim(OBJECT_AXIS, min=1, max=max_objects) if max_objects >= 2 else None
    bat = torch.export.Dim(BATCH_AXIS, min=1, max=max_batch) if max_batch >= 2 else None
    shapes = {}
    for t in inputs:
        axes = {}
        if obj is not None and OBJECT_AXIS in map(str, t.shape):
            axes[1] = obj
        if bat is not None and str(t.shape[0]) == BATCH_AXIS:
            axes[0] = bat
        shapes[t.name] = axes or None
    if not any(shapes.values()):
        return None, None
    return shapes, obj


def _max_batch(inputs: list[TensorInfo], max_batch: int) -> int:
    return max_batch if any(str(t.shape[0]) == BATCH_AXIS for t in inputs) else 1


def _export_dynamo(wrapper, args, inputs, outputs, path: Path, opset: int, max_objects: int,
                   max_batch: int = 1) -> None:
    dynamic_shapes, _ = _dynamic_spec(inputs, max_objects, _max_batch(inputs, max_batch))
    with _quiet_exporter(), export_substitutions():
        program = torch.onnx.export(
            wrapper, args, dynamo=True, dynamic_shapes=dynamic_shapes, input_names=[t.name for t in inputs],
            output_names=[t.name for t in outputs], opset_version=opset, optimize=True, verbose=False)
        program.save(str(path), external_data=True)  # (the raw file is re-read and re-saved below)


def _export_torchscript(wrapper, args, inputs, outputs, path: Path, opset: int, max_objects: int,
                        max_batch: int = 1) -> None:
    dynamic_axes = {}
    for t in inputs + outputs:
        axes = {}
        if max_objects >= 2 and OBJECT_AXIS in str(t.shape[1]):
            axes[1] = OBJECT_AXIS
        if _max_batch(inputs, max_batch) >= 2 and str(t.shape[0]) == BATCH_AXIS:
            axes[0] = BATCH_AXIS
        if axes:
            dynamic_axes[t.name] = axes
    dynamic_axes = dynamic_axes or None
    with _quiet_exporter(), export_substitutions():
        torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=[t.name for t in inputs],
                          output_names=[t.name for t in outputs], dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True)


def _onnx_elem_type(dtype: str) -> int:
    return {"float32": onnx.TensorProto.FLOAT, "bool": onnx.TensorProto.BOOL}[dtype]


def _set_io(model: onnx.ModelProto, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    """Write the contract's names, dtypes and shapes (symbolic axis names) onto the graph I/O."""
    for values, specs in ((model.graph.input, inputs), (model.graph.output, outputs)):
        by_name = {v.name: v for v in values}
        for spec in specs:
            if spec.name not in by_name:
                raise ExportError(f"the exported graph has no {spec.name!r} (it has {', '.join(by_name)})")
            v = by_name[spec.name]
            tt = v.type.tensor_type
            if tt.elem_type != _onnx_elem_type(spec.dtype):
                raise ExportError(f"{spec.name!r} was exported as {onnx.TensorProto.DataType.Name(tt.elem_type)}, "
                                  f"the contract says {spec.dtype}")
            if len(tt.shape.dim) != len(spec.shape):
                raise ExportError(f"{spec.name!r} was exported with rank {len(tt.shape.dim)}, the contract says "
                                  f"{len(spec.shape)}")
            for d, want in zip(tt.shape.dim, spec.shape):
                if isinstance(want, int):
                    if d.HasField("dim_value") and d.dim_value != want:
                        raise ExportError(f"{spec.name!r} has shape {[x.dim_value or x.dim_param for x in tt.shape.dim]}"
                                          f", the contract says {list(spec.shape)}")
                    d.dim_value = want
                else:
                    d.dim_param = str(want)
        extra = set(by_name) - {s.name for s in specs}
        if extra and values is model.graph.input:
            raise ExportError(f"the exported graph has extra inputs {sorted(extra)}")


def _strip_metadata(model: onnx.ModelProto) -> None:
    """Drop per-node stack traces and FX names (they hold local paths and change run to run)."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    model.doc_string = ""


def _param_bytes(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) * 4 for t in model.graph.initializer)


def _save(model: onnx.ModelProto, path: Path, external: bool) -> str | None:
    data_name = path.name + ".data"
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        os.chmod(path.with_name(data_name), FILE_MODE)  # onnx creates it 0o600
        return data_name
    onnx.save_model(model, str(path))
    return None


def _verify_with_onnxruntime(path: Path, wrapper, inputs, outputs, max_objects: int,
                             batches: tuple[int, ...] = (None,)) -> dict:
    """Run the saved graph in ONNX Runtime and the wrapper in PyTorch on the same random inputs,
    at one and (when allowed) two objects, and at each batch of `batches` (a dynamic batch axis:
    the smallest and the largest). Returns the worst absolute / relative differences."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    worst_abs = worst_rel = 0.0
    counts = sorted({1, min(2, max_objects)})
    cases = [(n, b) for n in counts for b in batches]
    for seed, (n, b) in enumerate(cases):
        feeds = example_inputs(inputs, n, seed=seed + 1, batch=b)
        with torch.inference_mode():
            ref = wrapper(*feeds.values())
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run([t.name for t in outputs], {k: v.numpy() for k, v in feeds.items()})
        for spec, r, g in zip(outputs, ref, got):
            r = r.detach().numpy()
            if r.shape != g.shape:
                raise ExportError(f"{path.name}: output {spec.name} has shape {g.shape} in ONNX Runtime and "
                                  f"{r.shape} in PyTorch (objects={n})")
            if not np.isfinite(g).all():
                raise ExportError(f"{path.name}: output {spec.name} is not finite in ONNX Runtime")
            d = float(np.abs(g - r).max()) if r.size else 0.0
            worst_abs = max(worst_abs, d)
            worst_rel = max(worst_rel, d / max(float(np.abs(r).max()), 1e-6))
    check = {"max_abs": worst_abs, "max_rel": worst_rel, "num_objects": counts}
    if batches != (None,):
        check["batch"] = list(batches)
    return check


def export_one(graph: str, net, spec: GraphSetSpec, out_dir: Path, *, opset: int = DEFAULT_OPSET,
               exporter: str = "auto", external_data="auto", verify: bool = True) -> GraphEntry:
    inputs, outputs = graph_io(net.cfg, spec.padded_size, spec.graph_batch, spec.memory_tokens)[graph]
    max_objects = spec.max_objects
    wrapper = graph_module(graph, net, spec.top_k)
    example_n = 2 if max_objects >= 2 else 1
    # a dynamic batch is traced at two streams' batch (torch.export specialises sizes 0 and 1)
    example_b = min(2 * spec.batch, spec.max_batch) if spec.graph_batch == BATCH_AXIS else None
    args = tuple(example_inputs(inputs, example_n, batch=example_b).values())
    raw = out_dir / f".{graph}.raw.onnx"
    used, errors = None, []
    order = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",)}[exporter]
    for name in order:
        try:
            fn = _export_dynamo if name == "dynamo" else _export_torchscript
            fn(wrapper, args, inputs, outputs, raw, opset, max_objects, spec.max_batch)
            used = name
            break
        except Exception as e:  # noqa: BLE001 - any exporter failure falls back to the next one
            first = str(e).splitlines()[0] if str(e) else ""
            errors.append(f"{name}: {type(e).__name__}: {first[:300]}{'...' if len(first) > 300 else ''}")
            log.warning("%s exporter failed on %s: %s", name, graph, e)
    if used is None:
        raise ExportError(f"could not export the {graph} graph: " + "; ".join(errors))

    model = onnx.load(str(raw))
    for p in out_dir.glob(f".{graph}.raw.onnx*"):
        p.unlink()
    _set_io(model, inputs, outputs)
    _strip_metadata(model)
    model.producer_name, model.producer_version = "s3rt", _s3rt_version()
    external = _param_bytes(model) > EXTERNAL_DATA_THRESHOLD if external_data == "auto" else bool(external_data)
    path = out_dir / f"{graph}.onnx"
    data_file = _save(model, path, external)
    del model

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{graph}.onnx fails onnx.checker: {e}") from e
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    report = check_model_ops(inferred)
    if report.violations:
        raise ExportError(f"{graph}.onnx uses operators TensorRT cannot run as exported:\n  "
                          + "\n  ".join(report.violations))
    batches = (spec.batch, spec.max_batch) if spec.graph_batch == BATCH_AXIS else (None,)
    check = _verify_with_onnxruntime(path, wrapper, inputs, outputs, max_objects, batches) if verify else None
    return GraphEntry(
        name=graph, file=path.name, sha256=file_sha256(path), inputs=[t.to_dict() for t in inputs],
        outputs=[t.to_dict() for t in outputs], precision="fp32", exporter=used, data_file=data_file,
        data_sha256=file_sha256(out_dir / data_file) if data_file else None, op_counts=report.op_counts,
        **({"export_check": check} if check is not None else {}))


def source_fingerprint() -> str:
    """sha256 over the code that shapes a graph (the model, the graph modules and the exporter): an earlier
    export is reused only when it was made by the same code, not just the same version."""
    import hashlib

    import s3rt.graphs
    import s3rt.model

    h = hashlib.sha256()
    for folder in (Path(s3rt.model.__file__).parent, Path(s3rt.graphs.__file__).parent, Path(__file__).parent):
        for f in sorted(folder.glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _s3rt_version() -> str:
    from s3rt import __version__
    return __version__


# ------------------------------------------------------------------------- the whole set
def export_graphs(preset, out, *, size=None, spec: GraphSetSpec | None = None, checkpoint=None, seed: int = 0,
                  opset: int = DEFAULT_OPSET, exporter: str = "auto", external_data="auto", verify: bool = True,
                  progress: bool = True, reuse: bool = False, model=None, **options) -> Manifest:
    """Export the five graphs and manifest.json into the folder `out` (see the module docstring).

    preset: a preset name (or ModelConfig). What the set is made for is either `spec` or `size`
    (the padded resolution (H, W) or 'HxW') with GraphSetSpec's options (max_objects,
    max_mem_frames, long_term_tokens, flip_aug, top_k, max_streams). checkpoint: an official .pth (None:
    random weights of `seed`); exporter: 'auto' (dynamo, falling back to TorchScript per graph),
    'dynamo' or 'torchscript'; external_data: 'auto' (weights over 100 MiB go to a side file),
    True or False; reuse: return the export already in `out` when it is equal and still
    verifies; model: a ready network (skips build_model).
    """
    from s3rt.model import build_model, get_config

    cfg = model.cfg if model is not None else get_config(preset)
    try:
        if spec is None:
            if size is None:
                raise ExportError("give the padded size (size=(H, W) or --size HxW) or a GraphSetSpec")
            spec = GraphSetSpec.for_model(cfg, size, **options)
        elif size is not None or options:
            raise ExportError("give either spec or size and options, not both")
    except SpecError as e:
        raise ExportError(str(e)) from e
    except TypeError as e:  # an option GraphSetSpec does not have
        raise ExportError(f"unknown export option: {e}") from e
    if spec.preset != cfg.name or spec.pad_multiple != cfg.pad_multiple:
        raise ExportError(f"the spec is for {spec.preset} (pad multiple {spec.pad_multiple}), the model is {cfg.name} "
                          f"(pad multiple {cfg.pad_multiple})")
    check_opset(opset)
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ExportError(f"exporter must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ExportError(f"checkpoint {checkpoint} does not exist")
    out = Path(out)
    _check_out(out)
    ckpt, ckpt_file = checkpoint_label(checkpoint, seed)

    if reuse and (out / MANIFEST_NAME).is_file():
        try:
            old = load_manifest(out)
            if (old.spec == spec and old.model_config == config_to_dict(cfg) and old.checkpoint == ckpt
                    and old.opset == opset and old.s3rt_version == _s3rt_version()
                    and old.source_sha256 == source_fingerprint()):
                return old
        except ManifestError:
            pass

    if model is None:
        model = build_model(cfg, checkpoint, seed=seed)
    net = model.eval()
    if cfg.is_s3_encoder:
        net.pixel_encoder.set_export_mode(True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)
    entries: dict[str, GraphEntry] = {}
    try:
        from tqdm.auto import tqdm

        bar = tqdm(list(GRAPHS), desc=f"export {cfg.name}", unit="graph", disable=not progress, leave=True)
        for graph in bar:
            bar.set_postfix_str(graph)
            t0 = time.perf_counter()
            entries[graph] = export_one(graph, net, spec, tmp, opset=opset, exporter=exporter,
                                        external_data=external_data, verify=verify)
            log.info("exported %s in %.1f s", graph, time.perf_counter() - t0)
        used = sorted({e.exporter for e in entries.values()})
        manifest = Manifest(
            spec=spec, model_config=config_to_dict(cfg), checkpoint=ckpt, checkpoint_file=ckpt_file, seed=None if checkpoint else seed,
            s3rt_version=_s3rt_version(), opset=opset, torch_version=torch.__version__,
            source_sha256=source_fingerprint(),
            exporter="torch.onnx.export(" + " + ".join(
                {"dynamo": "dynamo=True", "torchscript": "dynamo=False"}[u] for u in used) + f"), torch {torch.__version__}",
            graphs=entries)
        manifest.write(tmp)
        if out.exists():
            _check_out(out)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if cfg.is_s3_encoder:
            net.pixel_encoder.set_export_mode(False)
    manifest.directory = out
    return manifest
