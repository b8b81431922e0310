"""List the model presets and what this machine can run: PyTorch and CUDA, the fused readout
kernel, ONNX Runtime and its execution providers, TensorRT."""

from __future__ import annotations

import argparse
import importlib.util
import platform

import torch

from s3rt import __version__
from s3rt.model.bundled import bundled_presets
from s3rt.model.config import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", action="store_true", help="also count each preset's parameters (builds them)")


def _row(name: str, value: str) -> str:
    return f"  {name:<22} {value}"


def main(args) -> int:
    print(f"s3rt {__version__} (Python {platform.python_version()}, {platform.machine()})")
    print("presets:")
    bundled = set(bundled_presets())
    for name, cfg in PRESETS.items():
        extra = ""
        if args.params:
            from s3rt.model import build_model
            with torch.device("meta"):
                n = sum(p.numel() for p in build_model(name).parameters())
            extra = f", {n / 1e6:.1f} M parameters"
        arch = "S3 (ViT adapter, discriminative queries)" if cfg.is_s3_encoder else f"Cutie ({cfg.pixel_encoder})"
        if name in bundled:
            extra += ", bundled checkpoint (--checkpoint bundled)"
        print(_row(name, f"{arch}, {cfg.num_queries} queries, {cfg.num_blocks} blocks, pad {cfg.pad_multiple}{extra}"))
    print(_row("bundled checkpoints", ", ".join(sorted(bundled)) if bundled else
               "none (train one: s3rt train --preset s3-test --out s3-test.pth)"))
    print("runtime:")
    cuda = torch.cuda.is_available()
    print(_row("torch", f"{torch.__version__}, CUDA {'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available'}"))
    from s3rt.runtime import readout_kernel
    ok, why = readout_kernel.is_available()
    print(_row("readout kernel", "ready" if ok else f"not available ({why})"))
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort
        print(_row("onnxruntime", f"{ort.__version__}, providers: {', '.join(ort.get_available_providers())}"))
    else:
        print(_row("onnxruntime", "not installed (pip install 's3rt[onnx]')"))
    if importlib.util.find_spec("tensorrt"):
        import tensorrt as trt
        print(_row("tensorrt", trt.__version__))
    else:
        print(_row("tensorrt", "not installed (engines need TensorRT 10.x or 11.x on the target GPU)"))
    return 0
