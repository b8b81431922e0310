"""The `s3rt` command: a thin shell over the library. Each subcommand lives in
`s3rt/commands/<name>.py` with `add_arguments(parser)` and `main(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys

from s3rt import __version__

# name -> one-line help; the module s3rt.commands.<name> implements it.
COMMANDS = {
    "info": "list presets and what this machine can run (CUDA, kernel, ONNX Runtime, TensorRT)",
    "run": "track objects through a video from a first-frame mask",
    "eval": "score predicted masks against ground truth (J&F, DAVIS definition)",
    "export": "export a preset as ONNX graphs split at the memory, with a manifest",
    "parity": "check exported graphs against the PyTorch reference (per graph and per stream)",
    "demo": "export, track and compare a synthetic clip with no files needed (a quick tour)",
    "train": "train a small S3 / Cutie network on synthetic clips (resumable; ships as the bundled checkpoint)",
}


class UserError(Exception):
    """Bad input: printed as one clear line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3rt",
        description="Deploy S3 / Cutie video object segmentation: reference model, export, runtime, parity.",
    )
    parser.add_argument("--version", action="version", version=f"s3rt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"s3rt.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._module.main(args) or 0)
    except UserError as e:
        print(f"s3rt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
