"""The `trtexec` command lines equivalent to `s3rt build`, for users who build elsewhere
(`s3rt build --print-trtexec`). Plain strings: no TensorRT needed to print them.

Differences by version: `--stronglyTyped` is given for 10.x (in 11.x every network is strongly
typed and the flag is a no-op, so it is left out). `--memPoolSize=workspace:<N>M`,
`--timingCacheFile`, `--hardwareCompatibilityLevel`, `--versionCompatible`,
`--builderOptimizationLevel`, `--noTF32` and `--min/opt/maxShapes` are the same in both.

Engines built this way have no `engines.json`, so the tensorrt backend (which checks that
manifest) does not load them; they are for users with their own runtime.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from s3rt.engines.options import BuildOptions, is_dynamic
from s3rt.graphs import GRAPHS, Manifest

# s3rt's names -> trtexec's --hardwareCompatibilityLevel values
TRTEXEC_HARDWARE = {"ampere+": "ampere+", "same-cc": "sameComputeCapability"}


def _shapes(profile: dict[str, dict[str, list[int]]], which: str) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[which])}" for name, shapes in profile.items())


def trtexec_commands(graphs: Manifest, out_dir, options: BuildOptions, profiles: dict, *,
                     tensorrt_major: int = 11, engine_suffix: str = ".engine") -> list[str]:
    """One trtexec command line per graph (paths shell-quoted)."""
    if tensorrt_major not in (10, 11):
        raise ValueError(f"tensorrt_major must be 10 or 11, got {tensorrt_major}")
    out_dir = Path(out_dir)
    lines = []
    for name in GRAPHS:
        args = ["trtexec", f"--onnx={graphs.graph_path(name)}", f"--saveEngine={out_dir / (name + engine_suffix)}"]
        if tensorrt_major == 10:
            args.append("--stronglyTyped")
        profile = profiles.get(name) or {}
        if is_dynamic(profile):  # static graphs (the encoder) need no shapes
            args += [f"--minShapes={_shapes(profile, 'min')}", f"--optShapes={_shapes(profile, 'opt')}",
                     f"--maxShapes={_shapes(profile, 'max')}"]
        if options.workspace_mib is not None:
            args.append(f"--memPoolSize=workspace:{options.workspace_mib}M")
        if options.timing_cache:
            args.append(f"--timingCacheFile={options.timing_cache}")
        if options.hardware_compat != "none":
            args.append(f"--hardwareCompatibilityLevel={TRTEXEC_HARDWARE[options.hardware_compat]}")
        if options.version_compat:
            args.append("--versionCompatible")
        if not options.tf32:
            args.append("--noTF32")
        if options.optimization_level is not None:
            args.append(f"--builderOptimizationLevel={options.optimization_level}")
        lines.append(" ".join(shlex.quote(a) for a in args))
    return lines
