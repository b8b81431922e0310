"""The register / spill check of the readout kernels (kernels/check_registers.py) for every target
architecture. Needs nvcc only (no GPU); skipped without it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "kernels" / "check_registers.py"


@pytest.mark.slow  # .ci/run runs the same script and prints its report
def test_no_register_spills_on_any_architecture():
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc:
        pytest.skip("nvcc not found on PATH: the register check needs the CUDA compiler")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--nvcc", nvcc], capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    for arch in ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90"):
        assert f"{arch}   void select_kernel<64, 1, float>" in report, report
    assert "no local-memory spills" in report
