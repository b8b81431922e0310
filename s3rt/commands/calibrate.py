"""Make an FP16 or INT8 graph set from an FP32 one (written by s3rt export), for TensorRT's
strongly typed engines (TensorRT 11 has no FP16/INT8 builder flags: precision lives in the graph)
and for ONNX Runtime.

fp16: an AutoCast-style mixed-precision conversion. LayerNorm, softmax statistics and top-k,
reductions and norms, the sensory GRU, aggregate, the object summarizer and the final prediction
conv stay FP32, as does every node whose values go beyond --data-max on the calibration clips;
graph inputs and outputs stay FP32.

int8: explicit symmetric Q/DQ with per-channel weights (ONNX Runtime's static quantizer, QDQ
format), calibrated on the inputs each graph receives while the FP32 graphs track the
calibration clips (first frames, memory frames and later frames with a full memory). By default
the encoder and mask encoder go INT8 and the other graphs FP16 (--other-precision).

Calibration clips (--calib, repeatable): DAVIS-style sequence folders (JPEGImages/ and
Annotations/ with the first frame's mask) or synthetic[:SEED[:FRAMES]]; default: two synthetic
clips of 30 frames at the graph set's size. The output folder gets the graphs and a manifest
(precision, tool and version per graph, nodes kept in FP32 and why, accuracy against FP32 on the
recorded inputs, the calibration set and the source set's hash); it is built under a temporary
name and renamed when complete. Run it like any graph set: s3rt run --backend onnxruntime
--export DIR2, s3rt parity --export DIR2.
"""

from __future__ import annotations

import argparse

from s3rt.commands import UserError


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", required=True, metavar="DIR", help="the FP32 graph set (written by s3rt export)")
    parser.add_argument("--precision", required=True, choices=("fp16", "int8"), help="what to make")
    parser.add_argument("--calib", action="append", metavar="CLIP",
                        help="a calibration clip: DAVIS-style folder or synthetic[:SEED[:FRAMES]] (repeatable; "
                             "default: synthetic:1 and synthetic:2, 30 frames each)")
    parser.add_argument("--out", required=True, metavar="DIR2", help="output folder (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace a graph set already in --out")
    parser.add_argument("--size", type=int, default=480,
                        help="the tracker's processing size while recording (shorter side; -1 = native; default 480)")
    parser.add_argument("--frames", type=int, metavar="N", help="use only the first N frames of each clip")
    parser.add_argument("--int8-graphs", type=_names, default=("encoder", "mask_encoder"), metavar="G,G",
                        help="graphs that go INT8 (default encoder,mask_encoder)")
    parser.add_argument("--int8-ops", type=_names, default=("Conv", "ConvTranspose", "MatMul", "Gemm"), metavar="OP,OP",
                        help="node types that go INT8 (default Conv,ConvTranspose,MatMul,Gemm, taken only with a "
                             "weight; also allowed: Add, MaxPool, AveragePool, GlobalAveragePool, Concat, Mul, Relu, "
                             "Resize, which keep a convolutional trunk in int8)")
    parser.add_argument("--other-precision", choices=("fp16", "fp32"), default="fp16",
                        help="precision of the graphs an INT8 set does not quantize (default fp16)")
    parser.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="entropy",
                        help="INT8 activation calibration (default entropy, as ModelOpt)")
    parser.add_argument("--qdq-outputs", action="store_true",
                        help="also quantize the INT8 ops' outputs (lets ONNX Runtime's CPU provider use its int8 "
                             "kernels; TensorRT does not need it)")
    parser.add_argument("--int8-target", choices=("tensorrt", "cpu"), default="tensorrt",
                        help="tensorrt (default): symmetric int8 activations, Q/DQ on inputs, as TensorRT wants; cpu: "
                             "ONNX Runtime's x86 format (uint8 activations with zero points, Q/DQ everywhere it can), "
                             "which its CPU int8 kernels need to beat FP32; TensorRT does not take it")
    parser.add_argument("--data-max", type=float, default=512.0,
                        help="FP16: keep in FP32 the nodes whose values go beyond this (default 512, AutoCast's)")
    parser.add_argument("--max-samples", type=int, default=32, metavar="N",
                        help="recorded calls kept per graph for calibration (default 32)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from s3rt.calibration import CalibrationError, CalibrationOptions, calibrate
    from s3rt.graphs import ManifestError

    options = CalibrationOptions(
        precision=args.precision, int8_graphs=args.int8_graphs, int8_ops=args.int8_ops,
        other_precision=args.other_precision, method=args.method, qdq_outputs=args.qdq_outputs,
        int8_target=args.int8_target,
        data_max=args.data_max, size=args.size, max_samples=args.max_samples, frames=args.frames)
    try:
        m = calibrate(args.export, args.out, options, clips=args.calib, progress=not args.quiet,
                      overwrite=args.overwrite, log=(lambda *a: None) if args.quiet else print)
    except (CalibrationError, ManifestError) as e:
        raise UserError(str(e)) from e
    cs = m.calibration["calibration_set"]
    print(f"{args.precision} graph set in {m.directory}: {m.spec.describe()}; calibrated on {len(cs['clips'])} clip(s), "
          f"{cs['frames']} frames (sha256 {cs['sha256'][:12]})")
    for name, g in m.graphs.items():
        worst = max((v["max_rel"] for v in (g.accuracy or {}).values()), default=0.0)
        kept = sum(len(v) for k, v in (g.kept_fp32 or {}).items() if k != "not_int8_op")
        size = sum((m.directory / f).stat().st_size for f in (g.file, g.data_file) if f) / 2**20
        extra = f", {g.quantized['nodes']} int8 nodes" if g.precision == "int8" else ""
        print(f"  {name:13s} {g.precision:5s} {size:7.1f} MiB  max |Δ| / scale vs FP32 {worst:.1e}, "
              f"{kept} nodes kept in FP32{extra}")
    return 0
