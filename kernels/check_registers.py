#!/usr/bin/env python3
"""Register / spill report of the readout kernels for every target architecture.

Compiles kernels/memory_readout.cu to a cubin per architecture with `nvcc -Xptxas -v` (in
parallel), prints registers, shared memory, stack frame and spills of every kernel, and exits 1 if
any kernel spills to local memory (spill stores or loads > 0) or if the main (select) kernel uses
more registers than its launch bounds allow for two blocks of 256 threads per SM. Needs only nvcc
(no GPU); takes ~10-30 s.

    python3 kernels/check_registers.py [--arch 75 80 ...] [--nvcc PATH] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "memory_readout.cu"
ARCHS = ("75", "80", "86", "87", "89", "90")
MAIN_KERNEL = "select_kernel"
MAIN_MAX_REGISTERS = 128  # __launch_bounds__(256, 2): 65536 / (2 * 256)

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")


def demangle(names: list[str]) -> dict[str, str]:
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    if len(out) != len(names):
        return {n: n for n in names}
    return {n: d.replace("s3rt_readout::", "").replace("(Params)", "") for n, d in zip(names, out)}


def parse(text: str) -> dict[str, dict]:
    """ptxas -v output -> {mangled kernel: {registers, smem, stack, spill_stores, spill_loads}}"""
    info: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = m.group(1)
            info.setdefault(current, {})
            continue
        m = _PROPS.search(line)
        if m:
            current = m.group(1)
            info.setdefault(current, {})
            continue
        if current is None:
            continue
        m = _FRAME.search(line)
        if m:
            info[current].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
            continue
        m = _USED.search(line)
        if m:
            info[current].update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
    return info


def compile_arch(nvcc: str, arch: str, outdir: Path) -> tuple[str, int, str, float]:
    cmd = [nvcc, "-std=c++17", "-O3", f"-arch=sm_{arch}", "-cubin", "-Xptxas", "-v", "-o",
           str(outdir / f"memory_readout_sm_{arch}.cubin"), str(SOURCE)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return arch, proc.returncode, proc.stdout + proc.stderr, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", nargs="+", default=list(ARCHS), help="SM versions (default: %(default)s)")
    ap.add_argument("--nvcc", default=os.environ.get("NVCC") or shutil.which("nvcc") or "nvcc")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    if shutil.which(args.nvcc) is None and not Path(args.nvcc).is_file():
        print(f"nvcc not found ({args.nvcc}); set --nvcc or $NVCC", file=sys.stderr)
        return 2
    version = subprocess.run([args.nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    print(f"# register report of {SOURCE.name} ({version[-1] if version else 'nvcc'})")

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="s3rt_regs_") as tmp:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(lambda a: compile_arch(args.nvcc, a, Path(tmp)), args.arch))
    rows = []
    for arch, rc, text, secs in results:
        if rc != 0:
            failures.append(f"sm_{arch}: nvcc failed")
            print(f"\n## sm_{arch}: nvcc failed (exit {rc})\n{text[-3000:]}")
            continue
        info = parse(text)
        if not info:
            failures.append(f"sm_{arch}: no ptxas report")
            continue
        names = demangle(sorted(info))
        for mangled in sorted(info, key=lambda n: names[n]):
            d = info[mangled]
            rows.append((f"sm_{arch}", names[mangled], d.get("registers", -1), d.get("smem", 0), d.get("stack", 0),
                         d.get("spill_stores", 0), d.get("spill_loads", 0)))
            if d.get("spill_stores", 0) or d.get("spill_loads", 0):
                failures.append(f"sm_{arch} {names[mangled]}: {d.get('spill_stores')} bytes spill stores, "
                                f"{d.get('spill_loads')} bytes spill loads")
            if MAIN_KERNEL in mangled and d.get("registers", 0) > MAIN_MAX_REGISTERS:
                failures.append(f"sm_{arch} {names[mangled]}: {d['registers']} registers > {MAIN_MAX_REGISTERS}")
        print(f"# sm_{arch}: compiled in {secs:.1f} s")
    w = max((len(r[1]) for r in rows), default=10)
    print(f"\n{'arch':7} {'kernel':{w}} {'regs':>5} {'smem':>6} {'stack':>6} {'spill st':>9} {'spill ld':>9}")
    for r in rows:
        print(f"{r[0]:7} {r[1]:{w}} {r[2]:5d} {r[3]:6d} {r[4]:6d} {r[5]:9d} {r[6]:9d}")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"\nOK: {len(rows)} kernel builds, no local-memory spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
