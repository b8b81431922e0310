"""Engine building (`s3rt build`): TensorRT engines from a graph set, and their manifest.

Beside export/ and calibration/: it reads the graph contracts and the graph-set manifest
(`s3rt.graphs`) and writes the engine manifest (`s3rt.engine_manifest`), which the tensorrt
backend reads; the runtime never imports this package. Only `builder.py` needs TensorRT.
"""

from s3rt.engines.build import ENGINE_SUFFIX, build_engines, check_out, describe_plan, gpu_info, prepare
from s3rt.engines.options import (BuildError, BuildOptions, batch_range, check_options, object_range,
                                 plan_profiles)
from s3rt.engines.trtexec import trtexec_commands

__all__ = ["build_engines", "prepare", "check_out", "describe_plan", "gpu_info", "ENGINE_SUFFIX", "BuildError",
           "BuildOptions", "batch_range", "check_options", "object_range", "plan_profiles", "trtexec_commands"]
