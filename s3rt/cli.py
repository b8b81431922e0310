"""The `s3rt` command: a thin shell over the library. Each subcommand lives in
`s3rt/commands/<name>.py` with `add_arguments(parser)` and `main(args) -> int`.

Every failure the user can fix is one line on stderr, `s3rt <command>: error: ...`, and exit
code 2 (bad arguments, bad input files, outputs that cannot be written); warnings are one
line each, `s3rt <command>: warning: ...`. Ctrl-C and SIGTERM stop the command cleanly (its
temporary files are removed) with one line and exit codes 130 and 143.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import warnings

from s3rt import __version__
from s3rt.commands import UserError  # commands raise it; the cli prints it as one line

# name -> one-line help; the module s3rt.commands.<name> implements it.
COMMANDS = {
    "info": "list presets and what this machine can run (CUDA, kernel, ONNX Runtime, TensorRT)",
    "run": "track objects through a video from a first-frame mask",
    "eval": "score predicted masks against ground truth (J&F, DAVIS definition)",
    "export": "export a preset as ONNX graphs split at the memory, with a manifest",
    "build": "build TensorRT engines from a graph set on this GPU, with an engine manifest (or print trtexec lines)",
    "calibrate": "make an FP16 or INT8 graph set from an FP32 one (calibrated on real frames), with its manifest",
    "parity": "check exported graphs against the PyTorch reference (per graph and per stream)",
    "demo": "export, track and compare a synthetic clip with no files needed (a quick tour)",
    "train": "train a small S3 / Cutie network on synthetic clips (resumable; ships as the bundled checkpoint)",
    "triton-repo": "write a Triton Inference Server model repository serving many streams (sequence batcher, stream pool)",
}


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that clean-up code runs."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage above them)."""

    def error(self, message):  # noqa: D401 - argparse's API
        print(f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _one_line(text) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip()) or type(text).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """Show warnings as `s3rt <command>: warning: message`, one line each."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"s3rt {command}: warning: {_one_line(message)}", file=sys.stderr)

    old = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = old


@contextlib.contextmanager
def _sigterm_raises():
    """While the command runs, SIGTERM raises `Terminated` (main thread only)."""
    def handler(signum, frame):
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from s3rt.io.errors import InputError, OutputError

    def fail(message) -> int:
        print(f"s3rt {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return 2

    with _one_line_warnings(args.command), _sigterm_raises():
        try:
            return int(args._module.main(args) or 0)
        except (UserError, InputError, OutputError) as e:
            return fail(e)
        except MemoryError:
            return fail("out of memory; process at a smaller size (--size) or use shorter clips")
        except KeyboardInterrupt:
            print(f"s3rt {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
            return 130
        except Terminated:
            print(f"s3rt {args.command}: terminated (SIGTERM)", file=sys.stderr)
            return 143


if __name__ == "__main__":
    sys.exit(main())
