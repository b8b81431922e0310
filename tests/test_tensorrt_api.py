"""TensorRT API conformance: every TensorRT name s3rt's code uses exists, with the arguments
passed, in the version it is used with (tests/trt_stubs/api_check.py reads the code; no
hand-kept list).

- Against the real Python bindings of TensorRT 10.3 (the oldest s3rt supports), 10.16 and 11.4,
  imported with stub native libraries (tests/trt_stubs/setup.sh DEST; then S3RT_TRT_BINDINGS=DEST).
  CI sets that up and sets S3RT_REQUIRE_TRT_BINDINGS=1, so there a missing setup fails instead of
  skipping.
- Against the member-list dumps in ../shared/reference/tensorrt_api/ (names only), everywhere.
- And the checker itself: a misspelt name, a flag removed in 11.x used on 11.x, a wrong argument
  count and an assignment to a read-only property are each reported.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED

CHECKER = REPO / "tests" / "trt_stubs" / "api_check.py"


def _package_sources() -> list[Path]:
    """Every folder pyproject.toml installs as part of s3rt (package-dir): the code users can reach."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return [REPO / d for d in ("s3rt", "engines", "export", "calibration", "serving", "training")
                if (REPO / d).is_dir()]
    dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    return sorted({REPO / d for d in dirs if (REPO / d).is_dir()})


SOURCES = _package_sources()
DUMPS = {10: SHARED / "reference" / "tensorrt_api" / "tensorrt-10.16.1.11.json",
         11: SHARED / "reference" / "tensorrt_api" / "tensorrt-11.4.0.106.json"}
BINDINGS = os.environ.get("S3RT_TRT_BINDINGS")
REQUIRED = os.environ.get("S3RT_REQUIRE_TRT_BINDINGS") == "1"

VERSIONS = ["10.3", "10.16", "11.4"]  # the labels tests/trt_stubs/setup.sh installs

# what a clean run must have reached, so that a checker that silently stopped typing is noticed
MUST_REACH = {
    10: {"NetworkDefinitionCreationFlag.STRONGLY_TYPED", "IExecutionContext.execute_async_v3()",
         "IExecutionContext.set_tensor_address()", "Builder.build_serialized_network()",
         "IBuilderConfig.set_timing_cache()", "Runtime.deserialize_cuda_engine()"},
    11: {"IExecutionContext.execute_async_v3()", "IExecutionContext.set_tensor_address()",
         "Builder.build_serialized_network()", "IBuilderConfig.set_timing_cache()",
         "Runtime.deserialize_cuda_engine()"},
}

BAD_CODE = '''
def build(trt, path):
    builder = trt.Builder(trt.Logger())
    major = int(trt.__version__.split(".")[0])
    network = builder.create_netwrok(0)                      # misspelt
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.TF32)                    # fine in both
    if major >= 11:
        config.set_flag(trt.BuilderFlag.FP16)                # removed in 11.x: wrong on 11 only
    else:
        config.set_flag(trt.BuilderFlag.FP16)                # exists in 10.x
    config.set_timing_cache(config.create_timing_cache(b""))  # missing ignore_mismatch
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(b"")
    engine.num_io_tensors = 3                                # read-only property
    return trt.BuilderFlg.REFIT                             # misspelt class
'''


def _load_checker():
    spec = importlib.util.spec_from_file_location("s3rt_trt_api_check", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


api_check = _load_checker()


def _real_reports(label: str, groups) -> list[dict]:
    """One subprocess per version (importing two TensorRT versions in one process is impossible):
    one report per group of paths."""
    if not BINDINGS:
        if REQUIRED:
            pytest.fail("S3RT_REQUIRE_TRT_BINDINGS=1 but S3RT_TRT_BINDINGS is not set: run tests/trt_stubs/setup.sh")
        pytest.skip("TensorRT bindings with stub libraries not set up (tests/trt_stubs/setup.sh DEST, then "
                    "S3RT_TRT_BINDINGS=DEST); CI runs this")
    root = Path(BINDINGS) / label
    if not (root / "site" / "tensorrt_bindings").is_dir():
        pytest.fail(f"{root}/site has no tensorrt_bindings: run tests/trt_stubs/setup.sh {BINDINGS}")
    env = {**os.environ, "LD_LIBRARY_PATH": str(root / "lib"), "PYTHONPATH": str(root / "site")}
    argv = [a for g in groups for a in ["::", *map(str, g)]][1:]
    out = subprocess.run([sys.executable, str(CHECKER), "--json", *argv], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip(), out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def snippets(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt-snippets")
    (d / "bad.py").write_text(BAD_CODE)
    (d / "untyped.py").write_text(UNTYPED_CODE)
    return d


_CACHE = {}


def _real(label: str, which: str, snippets) -> dict:
    """The report for 'sources', 'bad' or 'untyped' under TensorRT `label` (one run per version)."""
    if label not in _CACHE:
        _CACHE[label] = dict(zip(("sources", "bad", "untyped"),
                                 _real_reports(label, [SOURCES, [snippets / "bad.py"], [snippets / "untyped.py"]])))
    return _CACHE[label][which]


# ---------------------------------------------------------------------- the real bindings
@pytest.mark.parametrize("label", VERSIONS)
def test_every_tensorrt_name_in_s3rt_exists_in_the_real_bindings(label, snippets):
    report = _real(label, "sources", snippets)
    major = int(label.split(".")[0])
    assert report["version"].startswith(f"{label}.")
    assert report["errors"] == [], "\n".join(report["errors"])
    assert report["untyped"] == [], "\n".join(report["untyped"])
    missing = MUST_REACH[major] - set(report["checked"])
    assert not missing, f"the checker did not reach {missing}"
    files = {Path(f).name for f in report["files"]}
    assert {"builder.py", "loader.py", "runner.py"} <= files
    assert {REPO / "s3rt", REPO / "engines", REPO / "export"} <= set(SOURCES)


@pytest.mark.parametrize("label", VERSIONS)
def test_the_real_bindings_catch_wrong_names_removed_flags_and_arguments(label, snippets):
    major = int(label.split(".")[0])
    errors = "\n".join(_real(label, "bad", snippets)["errors"])
    assert "create_netwrok" in errors
    assert "BuilderFlg" in errors
    assert "ignore_mismatch" in errors
    assert "num_io_tensors" in errors and "read-only" in errors
    fp16 = [e for e in errors.splitlines() if "FP16" in e]
    if major == 11:
        assert len(fp16) == 1 and ":9:" in fp16[0], errors  # only the 11.x branch
    else:
        assert fp16 == [], errors
    assert "TF32" not in errors


# ---------------------------------------------------------------------- the member dumps
@pytest.mark.parametrize("major", [10, 11])
def test_every_tensorrt_name_exists_in_the_reference_dumps(major):
    if not DUMPS[major].is_file():
        pytest.skip(f"{DUMPS[major]} not here (../shared missing)")
    api = api_check.DumpAPI(json.loads(DUMPS[major].read_text()), DUMPS[major].stem.split("-")[1])
    report = api_check.check(SOURCES, api, major)
    assert report.errors == [] and report.untyped == []
    assert {"tensorrt.Builder", "tensorrt.Runtime", "BuilderFlag.VERSION_COMPATIBLE"} <= report.checked


def test_the_dump_check_catches_the_removed_fp16_flag_on_11_only(tmp_path):
    if not DUMPS[11].is_file():
        pytest.skip("../shared missing")
    bad = tmp_path / "bad.py"
    bad.write_text(BAD_CODE)
    for major in (10, 11):
        api = api_check.DumpAPI(json.loads(DUMPS[major].read_text()), str(major))
        errors = "\n".join(api_check.check([bad], api, major).errors)
        assert "BuilderFlg" in errors
        assert ("BuilderFlag.FP16" in errors) == (major == 11)


UNTYPED_CODE = '''
def run(contexts, graph, stream):
    context = contexts[graph]
    context.execute_async_v3(stream)                         # unknown receiver: cannot be checked
    typed: "trt.IExecutionContext" = contexts[graph]
    typed.execute_async_v3(stream)                           # checked
'''


@pytest.mark.parametrize("label", VERSIONS)
def test_a_tensorrt_call_the_check_cannot_reach_is_reported(label, snippets):
    report = _real(label, "untyped", snippets)
    assert len(report["untyped"]) == 1 and ":4: context.execute_async_v3()" in report["untyped"][0]
    assert "IExecutionContext.execute_async_v3()" in report["checked"]


# ---------------------------------------------------------------------- the checker's parts
def test_docstring_signatures_are_parsed_with_overloads_and_defaults():
    doc = ("create_execution_context(*args, **kwargs)\nOverloaded function.\n\n"
           "1. create_execution_context(self: tensorrt.ICudaEngine, "
           "strategy: tensorrt.ExecutionContextAllocationStrategy = "
           "<ExecutionContextAllocationStrategy.STATIC: 0>) -> tensorrt.IExecutionContext\n\n"
           "2. create_execution_context(self: tensorrt.ICudaEngine, a: int, b: int) -> None\n")
    sigs = api_check.parse_signatures(doc, "create_execution_context")
    assert [[p for p, _ in s.params] for s in sigs] == [["strategy"], ["a", "b"]]
    assert sigs[0].accepts(0, []) is None and sigs[0].accepts(2, []) is not None
    assert sigs[1].accepts(1, ["b"]) is None and "twice" in sigs[1].accepts(1, ["a"])
    assert sigs[0].returns.endswith("IExecutionContext")
    sig = api_check.parse_signatures("set_timing_cache(self: tensorrt_bindings.tensorrt.IBuilderConfig, cache: "
                                     "tensorrt_bindings.tensorrt.ITimingCache, ignore_mismatch: bool) -> bool",
                                     "set_timing_cache")[0]
    assert "ignore_mismatch" in sig.accepts(1, [])


def test_version_gates_are_evaluated():
    import ast

    checker = api_check.Checker(api=None, major=11, report=api_check.Report("11"))
    gate = lambda text: checker.gate(ast.parse(text, mode="eval").body)  # noqa: E731
    assert gate("major >= 11") is True and gate("major < 11") is False and gate("self.major == 10") is False
    assert gate("not major < 11") is True and gate("major >= 11 and flag") is None and gate("flag") is None
    checker = api_check.Checker(api=None, major=(10, 8), report=api_check.Report("10.8"))
    gate = lambda text: checker.gate(ast.parse(text, mode="eval").body)  # noqa: E731
    assert gate("version < (10, 9)") is True and gate("self.version >= (10,)") is True and gate("major < 11") is True
