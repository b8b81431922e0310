#!/usr/bin/env python3
"""Time the fused top-k readout kernel against the PyTorch reference paths on a GPU.

For (memory tokens M, query pixels P) in (8100, 1620), (26000, 1620), (122000, 3680) - Cutie at
480p, Cutie with long-term memory, S3 at 720p with long-term memory - and 1 and 4 objects:
- kernel (channels_first): libs3rt_readout on values [B,N,V,M]
- kernel (slot_major):     libs3rt_readout on values [B,M,N*V] (coalesced gather)
- torch dense:             similarity + topk_softmax_dense + matmul (the official form)
- torch memory_readout:    s3rt.model.memory_readout.memory_readout (top-k + gather)

Timing: CUDA events around each call after warm-up, median of the repeats. Reported per method:
time (ms), effective bandwidth (bytes of queries + keys + shrinkage + values + valid, each read once,
divided by the time: the compulsory traffic, the same numerator for every method), peak memory
above the inputs (torch.cuda.max_memory_allocated), and the kernel's max |diff| to memory_readout.
Prints a table with the device and versions and writes benchmarks/results/readout_kernel_<device>.md.

    python benchmarks/bench_readout_kernel.py [--dtype float16] [--repeats 20] [--skip-dense]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s3rt.model.memory_readout import memory_readout, similarity, topk_softmax_dense  # noqa: E402
from s3rt.runtime import readout_kernel as rk  # noqa: E402

SIZES = [(8100, 1620), (26000, 1620), (122000, 3680)]
OBJECTS = [1, 4]
C, V, TOP_K = 64, 256, 30


def make_inputs(M: int, P: int, N: int, dtype: torch.dtype, seed: int = 0) -> dict:
    g = torch.Generator(device="cuda").manual_seed(seed)
    dev = "cuda"
    return {
        "query_key": torch.randn(1, C, P, device=dev, generator=g).to(dtype),
        "query_selection": torch.sigmoid(torch.randn(1, C, P, device=dev, generator=g)).to(dtype),
        "mem_key": torch.randn(1, C, M, device=dev, generator=g).to(dtype),
        "mem_shrinkage": (1 + torch.rand(1, 1, M, device=dev, generator=g) ** 2 * 2).to(dtype),
        "mem_values": torch.randn(1, N, V, M, device=dev, generator=g).to(dtype),
        "valid": torch.ones(1, M, dtype=torch.bool, device=dev),
    }


def input_bytes(d: dict) -> int:
    return sum(t.numel() * t.element_size() for t in d.values())


def time_fn(fn, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of fn() measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_extra_mib(fn) -> float:
    """Peak memory allocated during fn() above what was allocated before it (MiB)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return (peak - base) / 2**20


def methods(d: dict, N: int, slot_major_values: torch.Tensor) -> dict:
    def kernel_cf():
        return rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                                      d["mem_values"], d["valid"], TOP_K)

    def kernel_sm():
        return rk.cuda_memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                                      slot_major_values, d["valid"], TOP_K, values_layout="slot_major",
                                      num_objects=N)

    def dense():
        f = {k: (v.float() if v.is_floating_point() else v) for k, v in d.items()}
        sim = similarity(f["mem_key"], f["mem_shrinkage"], f["query_key"], f["query_selection"])
        sim = sim.masked_fill(~f["valid"].unsqueeze(2), float("-inf"))
        aff = topk_softmax_dense(sim, TOP_K)  # [B, M, P]
        B, _, _, M = f["mem_values"].shape
        return (f["mem_values"].reshape(B, -1, M) @ aff).reshape(B, N, V, -1)

    def gather_ref():
        return memory_readout(d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"],
                              d["mem_values"], d["valid"], top_k=TOP_K)

    return {"kernel (channels_first)": kernel_cf, "kernel (slot_major)": kernel_sm, "torch dense": dense,
            "torch memory_readout": gather_ref}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                    help="dtype of keys, queries and values (accumulation is FP32 either way)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-dense", action="store_true", help="skip the torch dense path (slow, memory-hungry)")
    ap.add_argument("--sweep-splits", action="store_true",
                    help="also time the slot-major kernel with 1, 2, 4, ..., 64 memory splits (tuning the plan)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_readout_kernel: no CUDA device (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}). Run it on a GPU machine.", file=sys.stderr)
        return 2
    avail = rk.is_available()
    if not avail:
        print(f"bench_readout_kernel: the readout kernel is unavailable: {avail.reason}", file=sys.stderr)
        return 2

    dtype = torch.float16 if args.dtype == "float16" else torch.float32
    props = torch.cuda.get_device_properties(0)
    device_name = torch.cuda.get_device_name(0)
    header = [
        f"# Readout kernel benchmark: {device_name}",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- device: {device_name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB, "
        f"compute capability {props.major}.{props.minor}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}, python {platform.python_version()}",
        f"- library: {rk.load_library()._name}",
        f"- C={C}, V={V}, top_k={TOP_K}, B=1, inputs {args.dtype}, output float32, all slots valid; "
        f"median of {args.repeats} after 3 warm-up calls (CUDA events)",
        "- bandwidth = (queries + keys + shrinkage + values + valid bytes) / time: compulsory traffic, "
        "the same numerator for every method",
        "- peak = torch.cuda.max_memory_allocated during the call minus the memory allocated before it",
        "",
    ]
    rows = []
    for M, P in SIZES:
        for N in OBJECTS:
            torch.cuda.empty_cache()
            d = make_inputs(M, P, N, dtype)
            B = 1
            sm_values = d["mem_values"].reshape(B, N * V, M).transpose(1, 2).contiguous()
            nbytes = input_bytes(d)
            fns = methods(d, N, sm_values)
            if args.sweep_splits:
                for splits in (1, 2, 4, 8, 16, 32, 64):
                    fns[f"kernel (slot_major, splits={splits})"] = (
                        lambda s=splits, d=d, sm=sm_values, N=N: rk.cuda_memory_readout(
                            d["query_key"], d["query_selection"], d["mem_key"], d["mem_shrinkage"], sm, d["valid"],
                            TOP_K, values_layout="slot_major", num_objects=N, num_splits=s))
            try:
                ref = fns["torch memory_readout"]()
            except torch.cuda.OutOfMemoryError:
                ref = None
            for name, fn in fns.items():
                if args.skip_dense and name == "torch dense":
                    continue
                try:
                    ms = time_fn(fn, args.repeats)
                    peak = peak_extra_mib(fn)
                    err = ""
                    if ref is not None and name.startswith("kernel"):
                        err = f"{(fn().float() - ref).abs().max().item():.2e}"
                    rows.append((M, P, N, name, f"{ms:.3f}", f"{nbytes / (ms * 1e-3) / 1e9:.1f}", f"{peak:.0f}", err))
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append((M, P, N, name, "OOM", "", "", ""))
                print("  ".join(str(x) for x in rows[-1]), flush=True)
            del d, sm_values, fns, ref

    cols = ["memory M", "pixels P", "objects", "method", "time (ms)", "eff. GB/s", "peak extra (MiB)",
            "max |diff| vs memory_readout"]
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    table += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    text = "\n".join(header + table) + "\n"
    print()
    print(text)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_").lower()
    out = args.out or ROOT / "benchmarks" / "results" / f"readout_kernel_{slug}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
