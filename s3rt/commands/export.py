"""Export a preset as five ONNX graphs (encoder, readout, fusion, decoder, mask_encoder) and a
manifest.json, for one padded resolution, a dynamic object axis (1..--max-objects) and a fixed
memory capacity (--max-mem-frames frames of (H/16)*(W/16) tokens, + --long-term-tokens).

--size is the padded resolution HxW (a multiple of the preset's pad multiple: 16 for Cutie,
32 for S3); a DAVIS 480p frame (854 wide, 480 high) pads to 480x864 with either. The
graphs are written into a temporary folder and moved into --out when all five passed
onnx.checker, the TensorRT operator check and an ONNX Runtime run against PyTorch.
Run the graphs with `s3rt run --backend onnxruntime --export DIR` and check them against the
reference with `s3rt parity --export DIR ...`.
"""

from __future__ import annotations

import argparse

from s3rt.commands import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help="model preset (s3rt info lists them)")
    parser.add_argument("--checkpoint", metavar="PTH", help="official S3 / Cutie weights (default: random, seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights when no checkpoint is given")
    parser.add_argument("--size", required=True, metavar="HxW", help="padded resolution, e.g. 480x864")
    parser.add_argument("--max-objects", type=int, default=4, metavar="K",
                        help="largest number of objects (the object axis is dynamic in 1..K; default 4)")
    parser.add_argument("--max-mem-frames", type=int, default=5, metavar="T",
                        help="memory frames including the permanent first one, as the tracker's option (default 5)")
    parser.add_argument("--long-term-tokens", type=int, default=0, metavar="L",
                        help="long-term memory tokens (0 = no long-term memory; default 0)")
    parser.add_argument("--flip-aug", action="store_true", help="batch 2: the frame and its mirror image")
    parser.add_argument("--top-k", type=int, default=30, help="top-k of the memory readout (default 30)")
    parser.add_argument("--max-streams", type=int, default=1, metavar="S",
                        help="streams one graph call may batch (the stream pool, s3rt.serving): S > 1 makes axis 0 "
                             "the dynamic axis 'batch' in 1..S (1..2S with --flip-aug); default 1, a fixed batch")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, 17..24 (default 18)")
    parser.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                        help="auto: dynamo, falling back to TorchScript for a graph it cannot export")
    parser.add_argument("--external-data", choices=("auto", "yes", "no"), default="auto",
                        help="weights in a side <graph>.onnx.data file (auto: when over 100 MiB)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check per graph")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty or an earlier export)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from s3rt.export import ExportError, export_graphs
    from s3rt.model import CheckpointMismatchError

    external = {"auto": "auto", "yes": True, "no": False}[args.external_data]
    try:
        m = export_graphs(args.preset, args.out, checkpoint=args.checkpoint, seed=args.seed, size=args.size,
                          max_objects=args.max_objects, max_mem_frames=args.max_mem_frames,
                          long_term_tokens=args.long_term_tokens, flip_aug=args.flip_aug, top_k=args.top_k,
                          max_streams=args.max_streams,
                          opset=args.opset, exporter=args.exporter, external_data=external,
                          verify=not args.no_verify, progress=not args.quiet)
    except (ExportError, CheckpointMismatchError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    except ValueError as e:  # unknown preset and other bad options
        raise UserError(str(e)) from e
    print(f"exported {m.spec.describe()} ({m.checkpoint}), opset {m.opset}, {m.exporter}")
    for name, g in m.graphs.items():
        size = sum((m.directory / f).stat().st_size for f in (g.file, g.data_file) if f) / 2**20
        check = (f", ONNX Runtime vs torch max |Δ| {g.export_check['max_abs']:.1e} "
                 f"(relative {g.export_check['max_rel']:.1e})" if g.export_check else "")
        print(f"  {g.file:<18} {size:8.1f} MiB  {g.exporter}{check}")
    print(f"wrote {m.directory}/manifest.json")
    return 0
