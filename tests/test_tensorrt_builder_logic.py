"""The builder's TensorRT code path executed against a stand-in `trt` module (no TensorRT here).

The API conformance test (test_tensorrt_api.py) proves every name and call exists in the real
10.x and 11.x bindings; this one runs the code's logic: the stand-in parser reads the real
exported ONNX graphs (input names, which dimensions are dynamic), so it checks that the
profile s3rt plans covers exactly the graph's dynamic inputs (with the batch axis of a graph set
exported with --max-streams: every input, the encoder's too), that 10.x sets STRONGLY_TYPED and
11.x does not, that TF32 is cleared unless asked for, and that the workspace, hardware and
version compatibility, timing cache and profile reach the builder config. What TensorRT does
with them (parsing, tactics, the engine) is only checked by the marked GPU tests."""

from pathlib import Path

import pytest

from conftest import shared_export
from s3rt.engines import BuildError, BuildOptions, batch_range, build_engines, plan_profiles
from s3rt.engines.builder import EngineBuilder

onnx = pytest.importorskip("onnx")


def fake_trt(version: str):
    class Enum:
        def __init__(self, name, value=0):
            self.name, self.value = name, value

        def __int__(self):
            return self.value

        def __repr__(self):
            return self.name

    class trt:  # noqa: N801 - stands in for the module
        __version__ = version

        class Logger:
            WARNING, VERBOSE = Enum("WARNING"), Enum("VERBOSE")

            def __init__(self, severity=None):
                self.severity = severity

        class NetworkDefinitionCreationFlag:
            STRONGLY_TYPED = Enum("STRONGLY_TYPED", 1)

        class BuilderFlag:
            VERSION_COMPATIBLE, TF32 = Enum("VERSION_COMPATIBLE"), Enum("TF32")

        class MemoryPoolType:
            WORKSPACE = Enum("WORKSPACE")

        class HardwareCompatibilityLevel:
            AMPERE_PLUS, SAME_COMPUTE_CAPABILITY = Enum("AMPERE_PLUS"), Enum("SAME_COMPUTE_CAPABILITY")

        class Tensor:
            def __init__(self, name, shape):
                self.name, self.shape = name, shape

        class Network:
            def __init__(self, flags):
                self.flags, self.inputs = flags, []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network
                self.num_errors = 0

            def parse_from_file(self, path):
                model = onnx.load(path, load_external_data=False)
                for i in model.graph.input:
                    dims = [d.dim_value if not d.dim_param else -1 for d in i.type.tensor_type.shape.dim]
                    self.network.inputs.append(trt.Tensor(i.name, dims))
                return True

            def get_error(self, i):
                return "?"

        class TimingCache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return self.data + b"|tuned"

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Config:
            def __init__(self):
                self.flags, self.cleared, self.pools, self.profiles = set(), set(), {}, []
                self.hardware_compatibility_level = None
                self.builder_optimization_level = None
                self.cache = None

            def set_memory_pool_limit(self, pool, size):
                self.pools[pool.name] = size

            def set_flag(self, flag):
                self.flags.add(flag.name)

            def clear_flag(self, flag):
                self.cleared.add(flag.name)

            def create_timing_cache(self, data):
                return trt.TimingCache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return True

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                return 0

        class Builder:
            def __init__(self, logger):
                self.built = []

            def create_network(self, flags=0):
                return trt.Network(flags)

            def create_builder_config(self):
                return trt.Config()

            def create_optimization_profile(self):
                return trt.Profile()

            def build_serialized_network(self, network, config):
                self.built.append((network, config))
                return bytearray(b"engine")

    return trt


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return shared_export(tmp_path_factory, "cutie-test")


@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
def test_builder_logic_on_the_real_graphs(graphs, version):
    trt = fake_trt(version)
    opts = BuildOptions(workspace_mib=256, hardware_compat="same-cc", version_compat=True, optimization_level=2)
    b = EngineBuilder(trt, opts, timing_cache=b"cache")
    profiles = plan_profiles(graphs, (1, 2, 3))
    for name in graphs.graphs:
        assert b.build(str(graphs.graph_path(name)), profiles[name]) == b"engine"
    assert b.serialized_timing_cache() == b"cache|tuned"
    for (network, config), name in zip(b.builder.built, graphs.graphs):
        assert network.flags == (2 if version.startswith("10.") else 0)  # 1 << STRONGLY_TYPED on 10.x only
        assert config.pools == {"WORKSPACE": 256 << 20} and config.builder_optimization_level == 2
        assert config.flags == {"VERSION_COMPATIBLE"} and config.cleared == {"TF32"}
        assert config.hardware_compatibility_level.name == "SAME_COMPUTE_CAPABILITY"
        assert config.cache.data == b"cache"
        dynamic = {t.name for t in network.inputs if -1 in t.shape}
        if name == "encoder":
            assert config.profiles == [] and dynamic == set()
        else:
            (profile,) = config.profiles
            assert set(profile.shapes) == dynamic and dynamic  # exactly the graph's dynamic inputs
            for inp, (lo, opt, hi) in profile.shapes.items():
                shape = next(t.shape for t in network.inputs if t.name == inp)
                for dims in (lo, opt, hi):  # the plan agrees with the graph's static dims
                    assert all(s in (-1, d) for s, d in zip(shape, dims)) and len(dims) == len(shape)


@pytest.mark.parametrize("opt_streams", [None, 2])
def test_builder_profiles_span_the_batch_axis_of_the_real_graphs(tmp_path_factory, opt_streams):
    from test_engines import streams_export

    graphs = streams_export(tmp_path_factory)
    trt = fake_trt("11.4.0.106")
    b = EngineBuilder(trt, BuildOptions(opt_streams=opt_streams))
    batches = batch_range(BuildOptions(opt_streams=opt_streams), graphs.spec)
    assert batches == (1, opt_streams or 3, 3)
    profiles = plan_profiles(graphs, (1, 2, 3), batches)
    for name in graphs.graphs:
        b.build(str(graphs.graph_path(name)), profiles[name])
    for (network, config), name in zip(b.builder.built, graphs.graphs):
        (profile,) = config.profiles  # every graph has a profile: axis 0 is dynamic in the ONNX graph
        dynamic = {t.name for t in network.inputs if -1 in t.shape}
        assert set(profile.shapes) == dynamic == {t.name for t in network.inputs}, name
        for inp, (lo, opt, hi) in profile.shapes.items():
            shape = next(t.shape for t in network.inputs if t.name == inp)
            assert shape[0] == -1 and (lo[0], opt[0], hi[0]) == batches, (name, inp)
            for dims in (lo, opt, hi):
                assert all(s in (-1, d) for s, d in zip(shape, dims)) and len(dims) == len(shape)


def test_builder_refuses_a_graph_that_does_not_match_its_manifest(graphs):
    trt = fake_trt("11.4.0.106")
    b = EngineBuilder(trt, BuildOptions())
    profiles = plan_profiles(graphs, (1, 2, 3))
    with pytest.raises(BuildError, match="does not match its manifest"):
        b.build(str(graphs.graph_path("decoder")), profiles["fusion"])


def test_tf32_and_defaults(graphs):
    trt = fake_trt("11.4.0.106")
    b = EngineBuilder(trt, BuildOptions(tf32=True))
    b.build(str(graphs.graph_path("encoder")), plan_profiles(graphs, (1, 1, 1))["encoder"])
    (_, config), = b.builder.built
    assert config.cleared == set() and config.flags == set() and config.pools == {}
    assert config.hardware_compatibility_level is None and config.cache.data == b""


def test_the_whole_build_through_the_real_builder_class(graphs, tmp_path):
    trt = fake_trt("10.16.1.11")
    m = build_engines(graphs.directory, tmp_path / "e", BuildOptions(timing_cache=str(tmp_path / "t.cache")),
                      progress=False, trt=trt, gpu=("NVIDIA L4", (8, 9)))
    assert m.tensorrt_version == "10.16.1.11" and m.options["tensorrt_major"] == 10
    assert (tmp_path / "t.cache").read_bytes() == b"|tuned"
    assert sorted(p.name for p in Path(tmp_path / "e").iterdir())[0] == "decoder.engine"


def test_same_cc_needs_tensorrt_10_9(graphs):
    b = EngineBuilder(fake_trt("10.8.0.43"), BuildOptions(hardware_compat="same-cc"))
    with pytest.raises(BuildError, match="same-cc needs TensorRT 10.9 or later; this is TensorRT 10.8.0.43"):
        b.build(str(graphs.graph_path("encoder")), plan_profiles(graphs, (1, 1, 1))["encoder"])


def test_tensorrt_versions_outside_the_supported_range_are_refused(monkeypatch):
    import sys
    import types

    from s3rt.engine_manifest import TensorRTUnavailable, import_tensorrt

    for version, ok in (("10.2.0", False), ("10.3.0", True), ("11.4.0.106", True), ("12.0.0", False)):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
        if ok:
            assert import_tensorrt().__version__ == version
        else:
            with pytest.raises(TensorRTUnavailable, match="supports TensorRT 10.3 to 11.x"):
                import_tensorrt()
