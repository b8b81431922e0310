"""The layer order (docs/architecture.md): imports go one way, and the runtime never needs onnx.

    cli -> commands -> (parity, benchmarks) -> runtime -> graphs (contracts) -> model, io

export/, calibration/ and engine building sit beside the runtime: they read the contracts
(s3rt.graphs); the runtime reads their manifests, never their code. Training is a room of its
own that nothing in the product imports.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import s3rt

PACKAGE = Path(s3rt.__file__).resolve().parent
ROOT = PACKAGE.parent
# where each installed subpackage's sources live (package-dir in pyproject.toml)
SOURCES = {"s3rt.export": ROOT / "export", "s3rt.calibration": ROOT / "calibration", "s3rt.training": ROOT / "training",
           "s3rt.engines": ROOT / "engines", "s3rt.serving": ROOT / "serving"}

# package -> packages it must never import (directly or lazily inside a function)
ABOVE = ("s3rt.cli", "s3rt.commands", "s3rt.training")  # training: only its command imports it
FORBIDDEN = {
    "s3rt.io": ABOVE + ("s3rt.model", "s3rt.graphs", "s3rt.runtime", "s3rt.export", "s3rt.calibration", "s3rt.parity",
                        "s3rt.engines", "s3rt.engine_manifest"),
    "s3rt.metrics": ABOVE + ("s3rt.model", "s3rt.graphs", "s3rt.runtime", "s3rt.export", "s3rt.calibration",
                             "s3rt.parity", "s3rt.engines", "s3rt.engine_manifest"),
    "s3rt.model": ABOVE + ("s3rt.graphs", "s3rt.runtime", "s3rt.export", "s3rt.calibration", "s3rt.parity",
                           "s3rt.engines", "s3rt.engine_manifest"),
    "s3rt.graphs": ABOVE + ("s3rt.runtime", "s3rt.export", "s3rt.calibration", "s3rt.parity", "s3rt.engines",
                            "s3rt.engine_manifest"),
    # the engine manifest sits beside the graph contracts: the builder writes it, the runtime reads it
    "s3rt.engine_manifest": ABOVE + ("s3rt.runtime", "s3rt.export", "s3rt.calibration", "s3rt.parity",
                                     "s3rt.engines"),
    "s3rt.runtime": ABOVE + ("s3rt.export", "s3rt.calibration", "s3rt.parity", "s3rt.engines"),
    "s3rt.export": ABOVE + ("s3rt.runtime", "s3rt.calibration", "s3rt.parity", "s3rt.engines"),
    "s3rt.engines": ABOVE + ("s3rt.runtime", "s3rt.export", "s3rt.calibration", "s3rt.parity"),
    "s3rt.parity": ABOVE + ("s3rt.export", "s3rt.calibration", "s3rt.engines"),
    # beside the runtime: runs the FP32 tracker and records its graph calls with parity's RecordingBackend
    "s3rt.calibration": ABOVE + ("s3rt.export", "s3rt.engines"),
    "s3rt.commands": ("s3rt.cli",),
    # serving (the stream pool, the Triton model repository) sits beside parity, above the runtime
    "s3rt.serving": ABOVE + ("s3rt.export", "s3rt.calibration", "s3rt.parity", "s3rt.engines"),
}
# nothing below serving imports it (the commands do)
for _pkg in ("s3rt.io", "s3rt.metrics", "s3rt.model", "s3rt.graphs", "s3rt.engine_manifest", "s3rt.runtime",
             "s3rt.export", "s3rt.engines", "s3rt.parity", "s3rt.calibration"):
    FORBIDDEN[_pkg] = FORBIDDEN.get(_pkg, ABOVE) + ("s3rt.serving",)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield "s3rt." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts), path
    for name, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else []:
            yield name + "." + ".".join(path.relative_to(folder).with_suffix("").parts), path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [a.name]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]


def test_imports_go_one_way():
    bad = []
    for module, path in _modules():
        rules = [(pkg, banned) for pkg, banned in FORBIDDEN.items() if module == pkg or module.startswith(pkg + ".")]
        for imported, _ in _imports(path):
            for pkg, banned in rules:
                for b in banned:
                    if imported == b or imported.startswith(b + "."):
                        bad.append(f"{module} imports {imported} ({pkg} sits below {b})")
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_across_packages():
    bad = []
    for module, path in _modules():
        own = module.rsplit(".", 1)[0]
        for imported, names in _imports(path):
            if not imported.startswith("s3rt"):
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__") and imported.rsplit(".", 1)[0] != own \
                        and imported != own:
                    bad.append(f"{module} imports {n} from {imported}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["s3rt.runtime", "s3rt.runtime.tracker", "s3rt.runtime.backends.onnxrt",
                                    "s3rt.runtime.backends.tensorrt", "s3rt"])
def test_the_runtime_does_not_import_onnx(module):
    code = (f"import sys, {module}; bad = [m for m in ('onnx', 's3rt.export', 's3rt.engines') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
