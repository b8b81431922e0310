"""Engine building without TensorRT: options, profiles over the object axis (and the batch axis
of graph sets made for several streams per call), trtexec command lines, the whole
`build_engines` flow with a stand-in builder (temporary folder, install,
timing cache, engines.json), the engine manifest's checks and refusals, and `s3rt build`'s
one-line errors. The real TensorRT build is in tests/test_tensorrt_gpu.py (marked)."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import EXPORT_MAX_OBJECTS, EXPORT_SIZE, shared_export
from s3rt import cli
from s3rt.engine_manifest import (ENGINE_MANIFEST_NAME, EngineManifestError, check_gpu, check_source,
                                  check_tensorrt_version, load_engine_manifest, parse_version, read_engine_manifest)
from s3rt.engines import (BuildError, BuildOptions, batch_range, build_engines, check_options, plan_profiles,
                          trtexec_commands)
from s3rt.graphs import BATCH_AXIS, MANIFEST_NAME, GraphSetSpec, load_manifest

H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture(scope="module")
def graphs_dir(tmp_path_factory):
    return Path(shared_export(tmp_path_factory, "cutie-test").directory)


@pytest.fixture(scope="module")
def graphs(graphs_dir):
    return load_manifest(graphs_dir)


def streams_export(tmp_path_factory):
    """cutie-test exported with --max-streams 3 (the folder tests/test_serving_pool_onnxrt.py uses:
    one export per pytest session)."""
    from s3rt.export import export_graphs
    h, w = EXPORT_SIZE
    out = tmp_path_factory.getbasetemp() / f"export-cutie-test-{h}x{w}-streams3"
    return export_graphs("cutie-test", out, size=EXPORT_SIZE, max_objects=EXPORT_MAX_OBJECTS, max_streams=3,
                         progress=False, reuse=True)


@pytest.fixture(scope="module")
def streams_graphs(tmp_path_factory):
    return streams_export(tmp_path_factory)


class FakeBuilder:
    """Stands in for EngineBuilder: 'engines' are the graph bytes' hash plus the profile."""

    version = "10.16.1.11"
    major = 10

    def __init__(self, options, cache):
        self.cache_in = cache
        self.built = []

    def build(self, onnx_path, profile):
        self.built.append((Path(onnx_path).name, profile))
        return b"ENGINE " + Path(onnx_path).name.encode() + json.dumps(profile).encode()

    def serialized_timing_cache(self):
        return (self.cache_in or b"") + b"+timings"


def fake_build(graphs_dir, out, options=BuildOptions(), gpu=H100, version="10.16.1.11", **kw):
    made = []

    def make(opts, cache):
        b = FakeBuilder(opts, cache)
        b.version = version
        b.major = parse_version(version)[0]
        made.append(b)
        return b

    m = build_engines(graphs_dir, out, options, progress=False, gpu=gpu, make_builder=make, **kw)
    return m, made[0]


@pytest.fixture
def engine_set(graphs_dir, tmp_path):
    src = tmp_path / "graphs"
    shutil.copytree(graphs_dir, src)
    m, _ = fake_build(src, tmp_path / "engines")
    return src, tmp_path / "engines", m


def one_line(e) -> str:
    text = str(e.value if hasattr(e, "value") else e)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------ options
def test_object_range_defaults_and_refusals():
    m = EXPORT_MAX_OBJECTS
    assert check_options(BuildOptions(), m) == (1, 2, m)
    assert check_options(BuildOptions(max_objects=1), m) == (1, 1, 1)
    assert check_options(BuildOptions(min_objects=3), m) == (3, 3, 3)
    with pytest.raises(BuildError, match=r"--max-objects 9 but the graph set takes at most 3.*s3rt export"):
        check_options(BuildOptions(max_objects=9), m)
    with pytest.raises(BuildError, match="1 <= --min-objects <= --opt-objects <= --max-objects"):
        check_options(BuildOptions(min_objects=2, opt_objects=1), m)
    with pytest.raises(BuildError, match="--hardware-compat"):
        check_options(BuildOptions(hardware_compat="turing+"), m)
    with pytest.raises(BuildError, match="--opt-level"):
        check_options(BuildOptions(optimization_level=7), m)
    with pytest.raises(BuildError, match="--workspace"):
        check_options(BuildOptions(workspace_mib=0), m)


def test_profiles_cover_the_object_axis_only(graphs):
    from s3rt.engines.options import is_dynamic

    p = plan_profiles(graphs, (1, 2, 3))
    assert set(p["encoder"]) == {"image"} and not is_dynamic(p["encoder"])  # no object axis: a static engine
    assert all(is_dynamic(p[g]) for g in ("readout", "fusion", "decoder", "mask_encoder"))
    mv = p["readout"]["mem_values"]
    assert [mv["min"][1], mv["opt"][1], mv["max"][1]] == [1, 2, 3]
    assert p["readout"]["mem_key"]["min"] == p["readout"]["mem_key"]["max"]  # fixed memory capacity
    for name in ("fusion", "decoder", "mask_encoder"):
        for shapes in p[name].values():
            assert len(shapes["min"]) == len(shapes["max"])
    # the manifest's shapes agree with the contracts' (graph_io)
    from s3rt.engines.options import expected_inputs
    want = expected_inputs(graphs)
    for name, g in graphs.graphs.items():
        assert [t["name"] for t in g.inputs] == [t["name"] for t in want[name]]


def test_batch_range_spans_one_stream_to_the_graph_sets_streams():
    one = GraphSetSpec("cutie-test", (64, 96))
    assert batch_range(BuildOptions(), one) is None  # a fixed batch: no batch profile
    assert batch_range(BuildOptions(opt_streams=1), one) is None
    with pytest.raises(BuildError, match=r"one stream per call.*--max-streams 2"):
        batch_range(BuildOptions(opt_streams=2), one)
    s8 = GraphSetSpec("cutie-test", (64, 96), max_streams=8)
    assert batch_range(BuildOptions(), s8) == (1, 8, 8)  # opt: full batches (see engines/options.py)
    assert batch_range(BuildOptions(opt_streams=4), s8) == (1, 4, 8)
    for bad in (0, 9):
        with pytest.raises(BuildError, match=r"opt_streams must be in 1..8"):
            batch_range(BuildOptions(opt_streams=bad), s8)
    flip = GraphSetSpec("cutie-test", (64, 96), max_streams=3, flip_aug=True)
    assert batch_range(BuildOptions(), flip) == (2, 6, 6)  # rows: 2 per stream
    assert batch_range(BuildOptions(opt_streams=2), flip) == (2, 4, 6)


def test_profiles_cover_the_batch_axis(streams_graphs):
    from s3rt.engines.options import expected_inputs, is_dynamic

    g = streams_graphs
    assert g.spec.graph_batch == BATCH_AXIS
    p = plan_profiles(g, (1, 2, 3), batch_range(BuildOptions(), g.spec))
    assert plan_profiles(g, (1, 2, 3)) == p  # the default batch profile
    assert all(is_dynamic(p[name]) for name in p)  # the encoder too: its batch axis
    for name, inputs in p.items():
        for inp, shapes in inputs.items():
            assert [shapes["min"][0], shapes["opt"][0], shapes["max"][0]] == [1, 3, 3], (name, inp)
    mv = p["readout"]["mem_values"]
    assert [mv["min"][1], mv["opt"][1], mv["max"][1]] == [1, 2, 3]  # with the object axis
    assert p["readout"]["mem_key"]["min"][1:] == p["readout"]["mem_key"]["max"][1:]  # the rest is fixed
    p2 = plan_profiles(g, (1, 2, 3), batch_range(BuildOptions(opt_streams=2), g.spec))
    assert p2["encoder"]["image"]["opt"][0] == 2 and p2["encoder"]["image"]["max"][0] == 3
    want = expected_inputs(g)  # the contracts with the batch axis agree with the manifest
    for name, graph in g.graphs.items():
        assert [(t["name"], list(t["shape"])) for t in graph.inputs] == \
               [(t["name"], list(t["shape"])) for t in want[name]], name


def test_trtexec_lines_with_the_batch_axis(streams_graphs, tmp_path):
    from s3rt.engines import describe_plan, prepare

    g, objects, profiles = prepare(streams_graphs.directory, BuildOptions())
    lines = trtexec_commands(g, tmp_path / "out", BuildOptions(), profiles, tensorrt_major=11)
    h, w = EXPORT_SIZE
    encoder = lines[0]
    assert f"--minShapes=image:1x3x{h}x{w}" in encoder and f"--optShapes=image:3x3x{h}x{w}" in encoder
    assert f"--maxShapes=image:3x3x{h}x{w}" in encoder
    readout = next(line for line in lines if "readout.onnx" in line)
    assert "mem_values:1x1x64x" in readout.split("--optShapes=")[0] and "mem_values:3x3x64x" in readout
    assert "streams per call 1..3 (opt 3)" in describe_plan(g, objects, profiles)[0]


def test_cli_opt_streams(streams_graphs, graphs_dir, tmp_path, capsys):
    h, w = EXPORT_SIZE
    rc, out, err = run_cli(capsys, "--graphs", streams_graphs.directory, "--out", tmp_path / "e", "--print-trtexec",
                           "--tensorrt-major", "11", "--opt-streams", "2")
    assert rc == 0, err
    assert "streams per call 1..3 (opt 2)" in out and f"--optShapes=image:2x3x{h}x{w}" in out
    rc, _, err = run_cli(capsys, "--graphs", streams_graphs.directory, "--out", tmp_path / "e", "--print-trtexec",
                         "--tensorrt-major", "11", "--opt-streams", "4")
    assert rc == 2 and "1..3" in err and err.count("\n") == 1, err
    rc, _, err = run_cli(capsys, "--graphs", graphs_dir, "--out", tmp_path / "e", "--print-trtexec",
                         "--tensorrt-major", "11", "--opt-streams", "2")  # a one-stream set
    assert rc == 2 and "--max-streams" in err, err


def test_trtexec_lines_for_10_and_11(graphs, tmp_path):
    opts = BuildOptions(workspace_mib=2048, timing_cache="cache dir/t.cache", hardware_compat="same-cc",
                        version_compat=True, optimization_level=4)
    profiles = plan_profiles(graphs, (1, 2, 3))
    ten = trtexec_commands(graphs, tmp_path / "out", opts, profiles, tensorrt_major=10)
    eleven = trtexec_commands(graphs, tmp_path / "out", opts, profiles, tensorrt_major=11)
    assert len(ten) == len(eleven) == 5
    assert all("--stronglyTyped" in line for line in ten) and not any("--stronglyTyped" in x for x in eleven)
    assert not any(flag in " ".join(ten + eleven) for flag in ("--fp16", "--int8", "--best"))
    readout = next(line for line in eleven if "readout.onnx" in line)
    assert "--minShapes=key:1x16x4x6," in readout and "mem_values:1x1x64x" in readout
    assert "mem_values:1x3x64x" in readout.split("--maxShapes=")[1]
    assert "--minShapes" not in eleven[0]  # the encoder has no object axis
    for flag in ("--memPoolSize=workspace:2048M", "--hardwareCompatibilityLevel=sameComputeCapability",
                 "--versionCompatible", "--builderOptimizationLevel=4", "'--timingCacheFile=cache dir/t.cache'"):
        assert flag in readout


# ------------------------------------------------------------------------ the build flow
def test_build_writes_engines_and_a_complete_manifest(graphs_dir, tmp_path):
    cache = tmp_path / "cache" / "timing.cache"
    cache.parent.mkdir()
    cache.write_bytes(b"old")
    out = tmp_path / "engines"
    m, builder = fake_build(graphs_dir, out, BuildOptions(timing_cache=str(cache), hardware_compat="ampere+",
                                                          workspace_mib=512))
    assert builder.cache_in == b"old" and cache.read_bytes() == b"old+timings"  # read, then written
    assert [b[0] for b in builder.built] == [f"{g}.onnx" for g in m.engines]
    assert sorted(p.name for p in out.iterdir()) == sorted([ENGINE_MANIFEST_NAME] + [f"{g}.engine" for g in m.engines])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    d = json.loads((out / ENGINE_MANIFEST_NAME).read_text())
    assert d["tensorrt_version"] == "10.16.1.11"
    assert d["gpu"] == {"name": H100[0], "compute_capability": [9, 0]}
    assert d["compat"] == {"hardware": "ampere+", "version_compatible": False}
    assert d["profile"]["num_objects"] == {"min": 1, "opt": 2, "max": EXPORT_MAX_OBJECTS}
    assert "batch" not in d["profile"] and m.batches is None  # one stream per call: a fixed batch
    assert d["options"]["workspace_mib"] == 512 and d["options"]["strongly_typed"] is True
    assert d["source"]["manifest_sha256"] and set(d["source"]["graphs"]) == set(d["engines"])
    for name, e in d["engines"].items():
        assert e["precision"] == "fp32" and e["graph_sha256"] == d["source"]["graphs"][name]["sha256"]
        assert e["bytes"] == (out / e["file"]).stat().st_size
    assert d["built_at"] and d["build_seconds"] >= 0
    m2, notes = load_engine_manifest(out, tensorrt_version="10.16.1.11", gpu=H100)
    assert m2.spec == m.spec and notes == []


def test_build_records_the_batch_profile(streams_graphs, tmp_path):
    out = tmp_path / "engines"
    m, builder = fake_build(streams_graphs.directory, out)
    assert m.batches == (1, 3, 3)
    d = json.loads((out / ENGINE_MANIFEST_NAME).read_text())
    assert d["profile"]["batch"] == {"min": 1, "opt": 3, "max": 3}
    assert d["spec"]["max_streams"] == 3
    for name, profile in builder.built:  # what the builder was given: axis 0 of every input 1..3
        assert all([s["min"][0], s["opt"][0], s["max"][0]] == [1, 3, 3] for s in profile.values()), name
    m2, _ = load_engine_manifest(out, tensorrt_version="10.16.1.11", gpu=H100)
    assert m2.batches == (1, 3, 3) and "streams per call 1..3 (opt 3)" in m2.describe()
    m3, _ = fake_build(streams_graphs.directory, out, BuildOptions(opt_streams=2), overwrite=True)
    d = json.loads((out / ENGINE_MANIFEST_NAME).read_text())
    assert m3.batches == (1, 2, 3) and d["profile"]["batch"]["opt"] == 2 and d["options"]["opt_streams"] == 2


def test_an_engine_manifest_without_a_fitting_batch_profile_is_refused(streams_graphs, tmp_path):
    out = tmp_path / "engines"
    fake_build(streams_graphs.directory, out)
    path = out / ENGINE_MANIFEST_NAME
    good = json.loads(path.read_text())
    d = json.loads(path.read_text())
    del d["profile"]["batch"]
    path.write_text(json.dumps(d))
    with pytest.raises(EngineManifestError, match=r"batch axis \(up to 3 streams per call\) but record no batch "
                                                  r"profile: rebuild them: s3rt build") as e:
        read_engine_manifest(out)
    one_line(e)
    d = json.loads(json.dumps(good))
    d["profile"]["batch"]["max"] = 4
    path.write_text(json.dumps(d))
    with pytest.raises(EngineManifestError, match=r"batch profile \[1, 3, 4\] .* does not fit the graph set's "
                                                  r"batch 1..3"):
        read_engine_manifest(out)


def test_build_refuses_bad_out_and_overwrites_only_when_asked(graphs_dir, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(BuildError, match="not an s3rt engine set"):
        fake_build(graphs_dir, tmp_path / "busy")
    fake_build(graphs_dir, tmp_path / "e")
    with pytest.raises(BuildError, match="--overwrite"):
        fake_build(graphs_dir, tmp_path / "e")
    m, _ = fake_build(graphs_dir, tmp_path / "e", BuildOptions(max_objects=2), overwrite=True)
    assert read_engine_manifest(tmp_path / "e").objects == (1, 2, 2)


def test_build_refuses_ampere_plus_on_an_older_gpu(graphs_dir, tmp_path):
    with pytest.raises(BuildError, match="ampere\\+ needs an Ampere or later GPU"):
        fake_build(graphs_dir, tmp_path / "e", BuildOptions(hardware_compat="ampere+"), gpu=("Tesla T4", (7, 5)))
    assert not (tmp_path / "e").exists()


def test_a_failed_build_leaves_nothing(graphs_dir, tmp_path):
    def make(opts, cache):
        b = FakeBuilder(opts, cache)
        b.build = lambda path, profile: (_ for _ in ()).throw(BuildError("parse failed"))
        return b

    with pytest.raises(BuildError, match="parse failed"):
        build_engines(graphs_dir, tmp_path / "e", progress=False, gpu=H100, make_builder=make)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------- manifest refusals
def test_tensorrt_version_rules(engine_set):
    _, _, m = engine_set
    check_tensorrt_version(m, "10.16.0.5")  # same major.minor
    with pytest.raises(EngineManifestError) as e:
        check_tensorrt_version(m, "10.15.1.1")
    assert "TensorRT 10.16.1.11" in one_line(e) and "TensorRT 10.15.1.1" in one_line(e) and "s3rt build" in one_line(e)
    with pytest.raises(EngineManifestError, match="--version-compat"):
        check_tensorrt_version(m, "11.4.0.106")
    m.version_compatible = True
    check_tensorrt_version(m, "11.4.0.106")  # later: fine when built version-compatible
    with pytest.raises(EngineManifestError, match="same or later"):
        check_tensorrt_version(m, "10.8.0.43")


def test_gpu_rules(engine_set):
    _, _, m = engine_set
    assert check_gpu(m, *H100) is None
    with pytest.raises(EngineManifestError) as e:
        check_gpu(m, "NVIDIA A100-SXM4-80GB", (8, 0))
    text = one_line(e)
    assert "H100" in text and "A100" in text and "9.0" in text and "8.0" in text and "s3rt build" in text
    assert "H200" in check_gpu(m, "NVIDIA H200", (9, 0))  # same cc, other model: a warning
    m.hardware_compat = "same-cc"
    assert check_gpu(m, "NVIDIA H200", (9, 0)) and "a build here may be faster" in check_gpu(m, "NVIDIA H200", (9, 0))
    with pytest.raises(EngineManifestError, match="same compute capability"):
        check_gpu(m, "NVIDIA L4", (8, 9))
    m.hardware_compat = "ampere+"
    check_gpu(m, "NVIDIA L4", (8, 9))
    with pytest.raises(EngineManifestError, match="Ampere and later.*7.5"):
        check_gpu(m, "Tesla T4", (7, 5))


def test_missing_and_edited_engine_files(engine_set):
    _, out, _ = engine_set
    (out / "fusion.engine").write_bytes(b"tampered")
    with pytest.raises(EngineManifestError) as e:
        load_engine_manifest(out)
    assert "fusion" in one_line(e) and "edited or replaced" in one_line(e) and "s3rt build" in one_line(e)
    (out / "fusion.engine").unlink()
    with pytest.raises(EngineManifestError, match="fusion: engine file .* is missing.*s3rt build"):
        load_engine_manifest(out)


def test_changed_graphs_are_refused(engine_set):
    src, out, _ = engine_set
    load_engine_manifest(out)  # the recorded source is unchanged
    # a graph re-exported (file and manifest both changed)
    d = json.loads((src / MANIFEST_NAME).read_text())
    g = d["graphs"]["decoder"]
    (src / g["file"]).write_bytes((src / g["file"]).read_bytes() + b"\0")
    from s3rt.engine_manifest import file_sha256
    g["sha256"] = file_sha256(src / g["file"])
    (src / MANIFEST_NAME).write_text(json.dumps(d, indent=2))
    with pytest.raises(EngineManifestError) as e:
        load_engine_manifest(out)
    text = one_line(e)
    assert "changed since" in text and "decoder" in text and f"s3rt build --graphs {src.resolve()}" in text
    assert load_engine_manifest(out, check_graphs=False)  # a self-contained engine set still loads


def test_another_graph_set_given_explicitly_is_refused(engine_set):
    import dataclasses

    src, _, m = engine_set
    graphs = load_manifest(src)
    other = dataclasses.replace(graphs, spec=dataclasses.replace(graphs.spec, max_mem_frames=3))
    with pytest.raises(EngineManifestError, match="were built for cutie-test .*5 memory frames.*3 memory frames"):
        check_source(m, other)


def test_a_folder_that_is_not_an_engine_set(graphs_dir, tmp_path):
    with pytest.raises(EngineManifestError, match="it holds a graph set: build engines from it"):
        read_engine_manifest(graphs_dir)
    with pytest.raises(EngineManifestError, match="does not exist"):
        read_engine_manifest(tmp_path / "nope")
    (tmp_path / ENGINE_MANIFEST_NAME).write_text("{")
    with pytest.raises(EngineManifestError, match="cannot read"):
        read_engine_manifest(tmp_path)


# ------------------------------------------------------------------------------ the command
def run_cli(capsys, *argv):
    try:
        rc = cli.main(["build", *map(str, argv)])
    except SystemExit as e:  # argparse's errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_without_tensorrt_says_what_to_install(graphs_dir, tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    rc, out, err = run_cli(capsys, "--graphs", graphs_dir, "--out", tmp_path / "e")
    assert rc == 2 and err.count("\n") == 1
    assert "TensorRT is not installed" in err and "pip install tensorrt" in err and "--print-trtexec" in err
    assert not (tmp_path / "e").exists()


def test_cli_errors_are_one_line(graphs_dir, tmp_path, capsys):
    for argv, expect in [((), "--out DIR is required"),
                         (("--out", tmp_path / "e", "--max-objects", 9), "at most 3 objects"),
                         (("--out", tmp_path / "e", "--min-objects", 0), "must be at least 1"),
                         (("--out", tmp_path / "e", "--hardware-compat", "turing"), "invalid choice")]:
        rc, out, err = run_cli(capsys, "--graphs", graphs_dir, *argv)
        assert rc == 2 and expect in err and err.count("\n") == 1, err
    rc, _, err = run_cli(capsys, "--graphs", tmp_path / "missing", "--out", tmp_path / "e")
    assert rc == 2 and "does not exist" in err


def test_cli_prints_trtexec_lines_without_tensorrt(graphs_dir, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "--graphs", graphs_dir, "--out", tmp_path / "e", "--print-trtexec",
                           "--tensorrt-major", "10", "--max-objects", "2", "--timing-cache", tmp_path / "t.cache")
    assert rc == 0, err
    lines = [x for x in out.splitlines() if x.startswith("trtexec ")]
    assert len(lines) == 5 and all("--stronglyTyped" in x for x in lines)
    assert "objects 1..2 (opt 2)" in out and "have no engines.json" in out
    assert not (tmp_path / "e").exists()


def test_build_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["build", "--help"])
    text = capsys.readouterr().out
    for flag in ("--timing-cache", "--workspace", "--hardware-compat", "--version-compat", "--print-trtexec",
                 "--min-objects", "--opt-objects", "--max-objects", "--opt-streams"):
        assert flag in text
