"""The TensorRT part of `s3rt build`: one ONNX graph -> one serialized engine. Everything
around it (options, profiles, the manifest, trtexec lines) is plain Python elsewhere.

Written against the TensorRT Python API directly (not Polygraphy's loaders) so that every
TensorRT name s3rt calls is in this file and the runtime's, where the API conformance test
(tests/test_tensorrt_api.py) checks each one against the real 10.3, 10.16 and 11.4 bindings, and so
that the version gates are explicit:

- 10.x: networks are made strongly typed with NetworkDefinitionCreationFlag.STRONGLY_TYPED
  (the graph's types decide the precision, as in 11.x); no FP16/INT8 builder flags are used in
  either version.
- 11.x: every network is strongly typed; the flag is documented as ignored, so it is not set.

- 10.3 to 10.8 have no HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY: --hardware-compat
  same-cc is refused there (10.9 and later, and 11.x, have it).

Conventions the conformance test relies on: the module is always called `trt`, the version
gates are `major` compared with an int and `version` ((major, minor)) compared with a tuple,
and TensorRT objects are bound to plain names.
"""

from __future__ import annotations

from s3rt.engines.options import BuildError, BuildOptions


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def tensorrt_version(trt) -> tuple[int, int]:
    major, minor = str(trt.__version__).split(".")[:2]
    return int(major), int(minor)


class EngineBuilder:
    """One builder, logger and timing cache for a whole graph set."""

    def __init__(self, trt, options: BuildOptions, timing_cache: bytes | None = None, verbose: bool = False):
        self.trt = trt
        self.options = options
        major = tensorrt_major(trt)
        self.major = major
        self.trt_version = tensorrt_version(trt)
        self.version = str(trt.__version__)
        self.logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        try:
            self.builder = trt.Builder(self.logger)
        except TypeError as e:  # the factory returned nullptr: no usable GPU / CUDA driver for TensorRT
            raise BuildError(f"TensorRT {trt.__version__} could not create a builder ({e}): it needs an NVIDIA GPU "
                             "with a working driver") from e
        self._cache_bytes = timing_cache if timing_cache is not None else b""
        self.timing_cache = None

    def build(self, onnx_path: str, profile: dict[str, dict[str, list[int]]]) -> bytes:
        """The serialized engine of the ONNX graph at `onnx_path`; `profile`: every input -> its
        min/opt/max shape (given to TensorRT for the inputs that are dynamic in the graph)."""
        trt = self.trt
        builder = self.builder
        major = self.major
        flags = 0
        if major < 11:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors or 'no detail'}")
        dynamic = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dynamic[tensor.name] = any(int(d) < 0 for d in tensor.shape)
        unknown = sorted(set(profile) - set(dynamic))
        unplanned = sorted(n for n, dyn in dynamic.items() if dyn and n not in profile)
        if unknown or unplanned:
            raise BuildError(f"{onnx_path} has inputs {', '.join(dynamic)}, its manifest lists {', '.join(profile)}: "
                             "the graph does not match its manifest; re-export it")

        config = builder.create_builder_config()
        if self.options.workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.options.workspace_mib) << 20)
        if self.options.optimization_level is not None:
            config.builder_optimization_level = int(self.options.optimization_level)
        if self.options.hardware_compat == "ampere+":
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        elif self.options.hardware_compat == "same-cc":
            version = self.trt_version
            if version < (10, 9):
                raise BuildError(f"--hardware-compat same-cc needs TensorRT 10.9 or later; this is TensorRT "
                                 f"{trt.__version__}: use --hardware-compat ampere+ or none")
            else:
                config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
        if self.options.version_compat:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if not self.options.tf32:
            config.clear_flag(trt.BuilderFlag.TF32)  # FP32 layers stay FP32 (TF32 is on by default)
        if self.timing_cache is None:
            timing_cache = config.create_timing_cache(self._cache_bytes)
            self.timing_cache = timing_cache
        if not config.set_timing_cache(self.timing_cache, False):
            raise BuildError("TensorRT refused the timing cache (made by another TensorRT version or GPU?): "
                             "delete the --timing-cache file or pass another one")
        if any(dynamic.values()):  # one profile: the object axis (and any other dynamic dim) pinned by the plan
            opt_profile = builder.create_optimization_profile()
            for name, shapes in profile.items():
                if dynamic[name]:
                    opt_profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
            config.add_optimization_profile(opt_profile)

        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BuildError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (its log above "
                             "says why)")
        return bytes(serialized)

    def serialized_timing_cache(self) -> bytes | None:
        if self.timing_cache is None:
            return None
        timing_cache = self.timing_cache
        return bytes(timing_cache.serialize())
