"""`calibrate`: an FP32 graph set in, an FP16 or INT8 graph set (with its own manifest) out."""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from s3rt.calibration import fp16 as fp16_pass
from s3rt.calibration import int8 as int8_pass
from s3rt.calibration.check import compare_outputs, tensor_ranges
from s3rt.calibration.clips import (DEFAULT_SYNTHETIC, CalibrationClip, CalibrationError, check_clips, clip_set_record,
                                    load_clip)
from s3rt.calibration.record import record
from s3rt.calibration.regions import REASONS, classify, group, layout_followers, out_of_range
from s3rt.graphs import GRAPHS, MANIFEST_NAME, GraphEntry, Manifest, ManifestError, load_manifest
from s3rt.io.atomic import make_temp_dir, remove_stale_temps, replace_dir
from s3rt.model.checkpoint import file_sha256

PRECISIONS = ("fp16", "int8")
DEFAULT_INT8_GRAPHS = ("encoder", "mask_encoder")
EXTERNAL_DATA_THRESHOLD = 100 * 2**20
# regions of an INT8 graph that are never quantized (the rest of the kept set is not a Conv/MatMul anyway)
INT8_EXCLUDED = ("gru", "summarizer", "prediction", "aggregate")


@dataclass(frozen=True)
class CalibrationOptions:
    """precision: 'fp16' or 'int8'. int8_graphs / int8_ops: which graphs and node types go INT8
    (with weights; never the GRU, summarizer or prediction head); other_precision: what the
    other graphs of an INT8 set become ('fp16' or 'fp32'); method: INT8 calibration (minmax,
    entropy, percentile); qdq_outputs: also quantize the quantized ops' outputs (ONNX Runtime's
    CPU int8 kernels need it; TensorRT does not); data_max: FP16 keeps nodes whose values reach
    beyond it on the calibration inputs; size / mem_every: the tracker's processing size and
    memory interval while recording; max_samples: recorded calls kept per graph."""

    precision: str = "fp16"
    int8_graphs: tuple = DEFAULT_INT8_GRAPHS
    int8_ops: tuple = int8_pass.DEFAULT_OP_TYPES
    other_precision: str = "fp16"
    method: str = "entropy"
    qdq_outputs: bool = False
    int8_target: str = "tensorrt"
    data_max: float = 512.0
    size: int = 480
    mem_every: int = 5
    max_samples: int = 32
    frames: int | None = None  # use only the first N frames of each clip

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise CalibrationError(f"--precision must be fp16 or int8, got {self.precision!r}")
        if self.other_precision not in ("fp16", "fp32"):
            raise CalibrationError(f"--other-precision must be fp16 or fp32, got {self.other_precision!r}")
        bad = [g for g in self.int8_graphs if g not in GRAPHS]
        if bad or not self.int8_graphs:
            raise CalibrationError(f"--int8-graphs: unknown graph(s) {', '.join(bad) or '(none given)'}; the graphs are "
                                   f"{', '.join(GRAPHS)}")
        bad = [o for o in self.int8_ops if o not in int8_pass.OP_TYPES]
        if bad or not self.int8_ops:
            raise CalibrationError(f"--int8-ops: {', '.join(bad) or '(none given)'} cannot be quantized here; choose from "
                                   f"{', '.join(int8_pass.OP_TYPES)}")
        if not set(self.int8_ops) & set(int8_pass.WEIGHTED_OP_TYPES):
            raise CalibrationError(f"--int8-ops {','.join(self.int8_ops)}: give at least one op type with weights "
                                   f"({', '.join(int8_pass.WEIGHTED_OP_TYPES)})")
        if self.int8_target not in int8_pass.TARGETS:
            raise CalibrationError(f"--int8-target must be one of {', '.join(int8_pass.TARGETS)}, got "
                                   f"{self.int8_target!r}")
        if self.method not in int8_pass.METHODS:
            raise CalibrationError(f"--method must be one of {', '.join(int8_pass.METHODS)}, got {self.method!r}")
        if not self.data_max > 0:
            raise CalibrationError(f"--data-max must be positive, got {self.data_max}")
        if self.max_samples < 1:
            raise CalibrationError(f"--max-samples must be at least 1, got {self.max_samples}")
        if self.mem_every < 1:
            raise CalibrationError(f"--mem-every must be at least 1, got {self.mem_every}")
        if self.frames is not None and self.frames < 1:
            raise CalibrationError(f"--frames must be at least 1, got {self.frames}")

    def graph_precision(self, graph: str) -> str:
        if self.precision == "fp16":
            return "fp16"
        return "int8" if graph in self.int8_graphs else self.other_precision


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _dist_name() -> str:
    from importlib import metadata

    for name in ("onnxruntime-gpu", "onnxruntime"):
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return "onnxruntime"


def _load_source(export_dir) -> Manifest:
    try:
        m = load_manifest(export_dir)
    except ManifestError as e:
        raise CalibrationError(f"--export {export_dir}: {e}") from e
    not_fp32 = {g: p for g, p in m.precisions.items() if p != "fp32"}
    if m.is_derived or not_fp32:
        src = (m.derived_from or {}).get("directory", "its FP32 source")
        raise CalibrationError(f"--export {export_dir} is already a reduced-precision set "
                               f"({', '.join(f'{g} {p}' for g, p in not_fp32.items()) or 'derived'}): calibrate from "
                               f"the FP32 graph set it was made from ({src})")
    return m


def _check_out(out: Path, export_dir: Path, overwrite: bool) -> None:
    if out.resolve() == export_dir.resolve():
        raise CalibrationError(f"--out {out} is the FP32 graph set itself: give another folder")
    if out.exists() and not out.is_dir():
        raise CalibrationError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST_NAME).is_file():
            raise CalibrationError(f"--out {out} exists and holds files that are not a graph set; choose a new or empty "
                                   "folder")
        if not overwrite:
            raise CalibrationError(f"--out {out} already holds a graph set; pass --overwrite to replace it")
    if not out.parent.exists():
        raise CalibrationError(f"--out {out}: folder {out.parent} does not exist")


def _save(model: onnx.ModelProto, folder: Path, name: str) -> tuple[str, str | None]:
    fname = f"{name}.onnx"
    weights = sum(i.ByteSize() for i in model.graph.initializer)
    if weights > EXTERNAL_DATA_THRESHOLD:
        data = f"{name}.onnx.data"
        onnx.save(model, folder / fname, save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                  size_threshold=1024)
        return fname, data if (folder / data).is_file() else None  # (no tensor was over the size threshold)
    onnx.save(model, folder / fname)
    return fname, None


def _io_unchanged(model: onnx.ModelProto, entry: GraphEntry) -> None:
    """The converted graph keeps the source's input and output names and dtypes (FP32 / bool)."""
    want = {t["name"]: t["dtype"] for t in entry.inputs + entry.outputs}
    names = {1: "float32", 9: "bool", 10: "float16", 7: "int64"}
    got = {v.name: names.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type))
           for v in list(model.graph.input) + list(model.graph.output)}
    if got != want:
        raise RuntimeError(f"{entry.name}: the converted graph's inputs/outputs {got} are not the source's {want}")


def load_clips(specs, spec, options: CalibrationOptions) -> list[CalibrationClip]:
    from s3rt.graphs import processing_size

    H, W = spec.padded_size
    size = (H, W)
    if options.size > 0 and min(H, W) > options.size:
        size = processing_size(H, W, options.size)
    return [c if isinstance(c, CalibrationClip) else load_clip(str(c), size=size, max_objects=spec.max_objects,
                                                               frames=options.frames) for c in specs]


def calibrate(export_dir, out, options: CalibrationOptions = CalibrationOptions(), *, clips=None,
              progress: bool = True, overwrite: bool = False, log=print) -> Manifest:
    """Make an FP16 or INT8 graph set in `out` from the FP32 set in `export_dir`.

    clips: calibration clips (CalibrationClip objects, DAVIS-style folders or
    'synthetic[:SEED[:FRAMES]]'); None: two synthetic clips of 30 frames at the set's size.
    Raises CalibrationError (one line) on bad input before anything is written; the output is
    built in a temporary folder beside `out` and renamed into place when complete.
    """
    t_start = time.perf_counter()
    options.check()
    export_dir, out = Path(export_dir), Path(out)
    source = _load_source(export_dir)
    _check_out(out, export_dir, overwrite)
    spec = source.spec
    specs = list(DEFAULT_SYNTHETIC) if clips is None else list(clips)
    calib_clips = load_clips(specs, spec, options)
    check_clips(calib_clips, spec, options.size, options.mem_every)

    models = {g: onnx.load(str(source.graph_path(g))) for g in GRAPHS}
    kept = {g: classify(models[g]) for g in GRAPHS}
    int8_nodes = {}
    if options.precision == "int8":
        for g in options.int8_graphs:
            excluded = [n for n, r in kept[g].items() if r in INT8_EXCLUDED]
            int8_nodes[g] = int8_pass.quantizable_nodes(models[g], options.int8_ops, excluded)
            if not int8_nodes[g]:
                raise CalibrationError(
                    f"INT8 for {g}: the graph has nothing to quantize (no {'/'.join(options.int8_ops)} node with a "
                    f"weight outside the parts kept in higher precision); leave it out of --int8-graphs")

    precisions = {g: options.graph_precision(g) for g in GRAPHS}
    need = [g for g in GRAPHS if precisions[g] != "fp32"]
    log(f"calibrate: {len(calib_clips)} clip(s), {sum(len(c.frames) for c in calib_clips)} frames; recording the FP32 "
        f"inputs of {', '.join(need)}")
    recording = record(export_dir, calib_clips, size=options.size, mem_every=options.mem_every,
                       max_samples=options.max_samples, graphs=need, progress=progress)
    for g in need:
        if not recording.samples.get(g):
            raise CalibrationError(f"the calibration clips never ran {g} (no memory frame?): give longer clips")

    remove_stale_temps(out)
    tmp = make_temp_dir(out)
    try:
        entries = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(GRAPHS), desc=f"calibrate: {options.precision} graphs", unit="graph")
        for g in GRAPHS:
            entries[g] = _convert_graph(g, models[g], source.graphs[g], precisions[g], kept[g], int8_nodes.get(g),
                                        recording, options, tmp)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        m = _manifest(source, export_dir, entries, options, calib_clips, recording, time.perf_counter() - t_start)
        m.write(tmp)
        load_manifest(tmp)  # the new set verifies like any other
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_manifest(out)


def _convert_graph(g, model, source_entry: GraphEntry, precision, kept, int8_nodes, recording, options, folder):
    samples = recording.samples.get(g, [])
    inputs = [s.inputs for s in samples]
    converter, quantized, kept_fp32 = None, None, None
    if precision == "fp16":
        types = fp16_pass.elem_types(model)
        ranges = tensor_ranges(model, inputs, types)
        keep = dict(kept)
        for name, reason in out_of_range(model, ranges, options.data_max).items():
            keep.setdefault(name, reason)
        floats = {t for t, ty in types.items() if ty == onnx.TensorProto.FLOAT}
        keep.update(layout_followers(model, keep, floats))
        new, stats = fp16_pass.convert_to_fp16(model, keep)
        candidates = set(fp16_pass.fp16_candidates(model, types))
        kept_fp32 = group({n: r for n, r in keep.items() if n in candidates})
        converter = (f"s3rt.calibration.fp16 (AutoCast-style: design rules + data_max {options.data_max:g} on "
                     f"{len(inputs)} recorded calls), onnx {onnx.__version__}")
        quantized = {"fp16_nodes": stats["fp16_nodes"], "fp32_float_nodes": len(candidates) - stats["fp16_nodes"],
                     "casts": stats["casts"]}
    elif precision == "int8":
        # the CPU target quantizes every op type it can: keep all the FP32 regions out of it
        excluded_nodes = [n for n, r in kept.items() if r in INT8_EXCLUDED or options.int8_target == "cpu"]
        new = int8_pass.quantize(model, inputs, int8_nodes, method=options.method, qdq_outputs=options.qdq_outputs,
                                 target=options.int8_target, exclude=excluded_nodes, workdir=folder)
        summary = int8_pass.qdq_summary(new)
        if options.int8_target == "tensorrt" and not summary["symmetric"]:
            raise RuntimeError(f"{g}: the quantizer wrote non-zero zero points (not symmetric)")
        excluded = group({n: r for n, r in kept.items() if r in INT8_EXCLUDED})
        kept_fp32 = {**excluded, "not_int8_op": ["every other node (FP32): not one of "
                                                 + "/".join(options.int8_ops)
                                                 + " (Conv/ConvTranspose/MatMul/Gemm only with a weight)"]}
        acts = "symmetric int8" if options.int8_target == "tensorrt" else "uint8 with zero points (CPU target)"
        converter = (f"onnxruntime.quantization.quantize_static ({_dist_name()} {_ort_version()}), QDQ, {acts} "
                     f"activations, symmetric int8 per-channel weights, {options.method} calibration on "
                     f"{len(inputs)} recorded calls")
        ops = sorted(set(options.int8_ops)) if options.int8_target == "tensorrt" else "every type ONNX Runtime quantizes"
        quantized = {"target": options.int8_target, "op_types": ops,
                     "nodes": len(int8_nodes) if options.int8_target == "tensorrt" else
                     sum(1 for n in new.graph.node if n.op_type == "QuantizeLinear"),
                     "qdq_outputs": options.qdq_outputs or options.int8_target == "cpu", **summary}
    else:
        new = model
    _io_unchanged(new, source_entry)
    accuracy = None
    if precision != "fp32":
        accuracy = compare_outputs(new, samples)
        accuracy = {k: {kk: (round(vv, 8) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                    for k, v in accuracy.items()}
    counts: dict[str, int] = {}
    for n in new.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    fname, data = _save(new, folder, g)  # last: saving with external data moves the weights out of `new`
    return GraphEntry(
        name=g, file=fname, sha256=file_sha256(folder / fname), inputs=source_entry.inputs,
        outputs=source_entry.outputs, precision=precision, exporter=source_entry.exporter, data_file=data,
        data_sha256=file_sha256(folder / data) if data else None, op_counts=dict(sorted(counts.items())),
        export_check=source_entry.export_check if precision == "fp32" else None,
        converter=converter if precision != "fp32" else "copied from the FP32 set", kept_fp32=kept_fp32,
        quantized=quantized, accuracy=accuracy)


def _manifest(source: Manifest, export_dir: Path, entries, options, clips, recording, seconds) -> Manifest:
    from s3rt import __version__

    src_hash = hashlib.sha256((export_dir / MANIFEST_NAME).read_bytes()).hexdigest()
    calibration = {
        "precision": options.precision,
        "tools": {"s3rt": __version__, "onnx": onnx.__version__, "onnxruntime": f"{_dist_name()} {_ort_version()}"},
        "fp16": {"method": "AutoCast-style (s3rt.calibration.fp16): design rules + reference run",
                 "data_max": options.data_max, "init_max": 65504.0, "keep_io_types": True}
        if "fp16" in {e.precision for e in entries.values()} else None,
        "int8": {"tool": "onnxruntime.quantization.quantize_static (QDQ)", "method": options.method,
                 "graphs": list(options.int8_graphs), "op_types": list(options.int8_ops),
                 "target": options.int8_target,
                 "activations": "int8 symmetric per tensor" if options.int8_target == "tensorrt" else
                 "uint8 asymmetric per tensor (ONNX Runtime CPU format; TensorRT does not take it)",
                 "weights": "int8 symmetric per output channel",
                 "qdq_outputs": options.qdq_outputs or options.int8_target == "cpu",
                 "other_graphs": options.other_precision}
        if options.precision == "int8" else None,
        "kept_fp32_reasons": REASONS,
        "io": "float32 at every graph input and output (bool for mem_valid): the tracker's state buffers keep one "
              "dtype per tensor, as in the FP32 set",
        "calibration_set": {**clip_set_record(clips), "size": options.size, "mem_every": options.mem_every,
                            "frames_run": recording.frames_run, "frames_recorded": recording.frames_recorded,
                            "samples": recording.summary()},
        "seconds": round(seconds, 1),
    }
    return Manifest(
        spec=source.spec, model_config=source.model_config, checkpoint=source.checkpoint,
        s3rt_version=__version__, opset=source.opset, exporter=source.exporter, graphs=entries, seed=source.seed,
        checkpoint_file=source.checkpoint_file, torch_version=source.torch_version,
        source_sha256=source.source_sha256,
        derived_from={"directory": str(export_dir.resolve()), "manifest_sha256": src_hash,
                      "precisions": source.precisions,
                      "graphs_sha256": {g: e.sha256 for g, e in source.graphs.items()}},
        calibration=calibration)
