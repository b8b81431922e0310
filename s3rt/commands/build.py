"""Build TensorRT engines from a graph set (a folder with manifest.json written by `s3rt export`,
or FP16 / INT8 graphs from calibration) on this machine's GPU: one engine per graph, strongly
typed (the graphs' types decide the precision; TensorRT 10.3+ and 11.x), an optimization profile
over the object axis (--min/--opt/--max-objects), and engines.json beside them (TensorRT
version, GPU and compute capability, compatibility settings, the graph set's hashes, precision
per graph, profile, options, build time), which the tensorrt backend checks before it loads them.

Everything that needs no TensorRT is checked first (the graph set against its manifest, the
options, --out). --print-trtexec prints the equivalent trtexec command lines instead of
building (no TensorRT or GPU needed). --timing-cache FILE is read before and written after the
build, and makes rebuilds on the same GPU and TensorRT much faster.
"""

from __future__ import annotations

import argparse

from s3rt.commands import UserError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--graphs", required=True, metavar="DIR", help="a graph set (s3rt export / calibration)")
    parser.add_argument("--out", metavar="DIR", help="the engine folder to write (new, empty, or an earlier engine "
                                                     "set with --overwrite); not needed with --print-trtexec")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier engine set in --out")
    p = parser.add_argument_group("optimization profile over the object axis")
    p.add_argument("--min-objects", type=_positive, default=None, metavar="N", help="default 1")
    p.add_argument("--opt-objects", type=_positive, default=None, metavar="N",
                   help="the count TensorRT tunes for (default 2, or --max-objects when smaller)")
    p.add_argument("--max-objects", type=_positive, default=None, metavar="N",
                   help="default: the graph set's --max-objects")
    p.add_argument("--opt-streams", type=_positive, default=None, metavar="S",
                   help="graph sets exported with --max-streams: the streams per call TensorRT tunes for (default: "
                        "all of them, what a busy server batches; the profile always covers 1..max-streams)")
    b = parser.add_argument_group("builder")
    b.add_argument("--workspace", type=_positive, default=None, metavar="MIB",
                   help="workspace memory pool limit in MiB (default: TensorRT's, the GPU's memory)")
    b.add_argument("--timing-cache", metavar="FILE", help="timing cache file: read if it exists, written after")
    b.add_argument("--hardware-compat", choices=("none", "ampere+", "same-cc"), default="none",
                   help="engines for other GPUs: ampere+ (any Ampere or later GPU; slower kernels) or same-cc (GPUs of "
                        "this compute capability); default none (this GPU model)")
    b.add_argument("--version-compat", action="store_true",
                   help="engines that later TensorRT versions can run (embeds the lean runtime; may be slower)")
    b.add_argument("--opt-level", type=int, default=None, metavar="0-5",
                   help="builder optimization level (default: TensorRT's, 3)")
    b.add_argument("--tf32", action="store_true",
                   help="let FP32 layers use TF32 tensor cores (faster; off by default so that FP32 engines match "
                        "the reference to ~1e-4)")
    b.add_argument("--device", type=int, default=0, metavar="INDEX", help="CUDA device index (default 0)")
    b.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    parser.add_argument("--print-trtexec", action="store_true",
                        help="print the equivalent trtexec command lines (for building elsewhere) and exit")
    parser.add_argument("--tensorrt-major", type=int, choices=(10, 11), default=None,
                        help="the TensorRT major version the --print-trtexec lines are for (default: the installed "
                             "one, else 11)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from(args) -> "BuildOptions":  # noqa: F821
    from s3rt.engines import BuildOptions

    return BuildOptions(min_objects=args.min_objects, opt_objects=args.opt_objects, max_objects=args.max_objects,
                        opt_streams=args.opt_streams, workspace_mib=args.workspace, timing_cache=args.timing_cache,
                        hardware_compat=args.hardware_compat, version_compat=args.version_compat,
                        optimization_level=args.opt_level, tf32=args.tf32)


def _installed_major() -> int | None:
    from s3rt.engine_manifest import TensorRTUnavailable, import_tensorrt, parse_version

    try:
        return parse_version(import_tensorrt().__version__)[0]
    except TensorRTUnavailable:
        return None


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from s3rt.engine_manifest import EngineManifestError, TensorRTUnavailable
    from s3rt.engines import BuildError, build_engines, check_out, describe_plan, prepare, trtexec_commands
    from s3rt.graphs import ManifestError

    options = options_from(args)
    try:
        graphs, objects, profiles = prepare(args.graphs, options)
        if args.print_trtexec:
            major = args.tensorrt_major or _installed_major() or 11
            out = Path(args.out) if args.out else Path(args.graphs).with_name(Path(args.graphs).name + "-engines")
            print(f"# s3rt build --print-trtexec: TensorRT {major}.x command lines for the graph set "
                  f"{graphs.directory}")
            for line in describe_plan(graphs, objects, profiles):
                print("# " + line)
            print("# engines built with trtexec have no engines.json, so s3rt's tensorrt backend does not load them")
            for line in trtexec_commands(graphs, out, options, profiles, tensorrt_major=major):
                print(line)
            return 0
        if not args.out:
            raise UserError("--out DIR is required (or --print-trtexec to print trtexec command lines)")
        check_out(Path(args.out), args.overwrite)
        m = build_engines(args.graphs, args.out, options, overwrite=args.overwrite, progress=not args.quiet,
                          verbose=args.verbose, device=args.device)
    except TensorRTUnavailable as e:
        raise UserError(f"{e}; or print the trtexec command lines for another machine with --print-trtexec") from e
    except (BuildError, ManifestError, EngineManifestError) as e:
        raise UserError(str(e)) from e
    print(f"built {m.describe()} in {m.build_seconds:.1f} s")
    for name, e in m.engines.items():
        print(f"  {e.file:<20} {e.bytes / 2**20:8.1f} MiB  {e.precision:<5} {e.build_seconds:7.1f} s")
    if options.timing_cache:
        print(f"timing cache: {options.timing_cache}")
    print(f"wrote {m.directory}/engines.json")
    return 0
