"""Opening an engine set (a folder written by `s3rt build`): read and check `engines.json`
(files, TensorRT version, GPU, the source graph set) before TensorRT is touched, then
deserialize each engine once and make one execution context per engine whose scratch memory is
a PyTorch CUDA tensor (PyTorch owns the CUDA context, streams and memory; no cuda-python or
pycuda is used).

The TensorRT calls live in `deserialize`; the API conformance test checks each name against the
real 10.3, 10.16 and 11.4 bindings (the module is `trt`, TensorRT objects bound to plain names).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import torch

from s3rt.engine_manifest import EngineManifest, EngineManifestError, import_tensorrt, load_engine_manifest
from s3rt.graphs import GRAPHS, Manifest


@dataclass
class TrtEngines:
    """An engine set opened on one GPU: what the runner needs."""

    manifest: EngineManifest
    tensorrt_version: str
    engines: dict = field(default_factory=dict)  # graph -> trt.ICudaEngine
    contexts: dict = field(default_factory=dict)  # graph -> trt.IExecutionContext
    dtypes: dict = field(default_factory=dict)  # graph -> {tensor name: torch dtype}
    scratch: dict = field(default_factory=dict)  # graph -> torch uint8 CUDA tensor (the context's device memory)
    runtime: object = None
    logger: object = None


def gpu_of(device: torch.device) -> tuple[str, tuple[int, int]]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index))


def check_engine_set(engine_dir, *, tensorrt_version: str | None, gpu: tuple[str, tuple[int, int]] | None,
                     graphs: Manifest | None = None, check_graphs: bool = True, verify: bool = True) -> EngineManifest:
    """Every check that needs neither TensorRT nor a GPU (given their versions): raises
    EngineManifestError with one line naming both sides and the fixing command; warns when the
    GPU differs but may run the engines."""
    m, notes = load_engine_manifest(engine_dir, verify=verify, tensorrt_version=tensorrt_version, gpu=gpu,
                                    graphs=graphs, check_graphs=check_graphs)
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=3)
    return m


def torch_dtypes(trt) -> dict:
    """TensorRT data types -> torch dtypes (the ones s3rt's graphs use)."""
    return {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.BF16: torch.bfloat16,
            trt.DataType.BOOL: torch.bool, trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
            trt.DataType.INT8: torch.int8, trt.DataType.UINT8: torch.uint8}


def deserialize(trt, m: EngineManifest, device: torch.device) -> TrtEngines:
    """Deserialize every engine of `m` on `device` (TensorRT and a GPU needed)."""
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        runtime = trt.Runtime(logger)
    except TypeError as e:  # the factory returned nullptr
        raise EngineManifestError(f"TensorRT {trt.__version__} could not create a runtime ({e}): it needs an "
                                  "NVIDIA GPU with a working driver") from e
    if m.version_compatible:
        runtime.engine_host_code_allowed = True  # version-compatible engines embed the lean runtime
    dtypes = torch_dtypes(trt)
    opened = TrtEngines(manifest=m, tensorrt_version=str(trt.__version__), runtime=runtime, logger=logger)
    with torch.cuda.device(device):
        for name in GRAPHS:
            path = m.engine_path(name)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise EngineManifestError(f"TensorRT {trt.__version__} could not deserialize {path} (its log above "
                                          f"says why): rebuild the engines here: {m.build_command()}")
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            entry = m.engines[name]
            want = [t["name"] for t in entry.inputs] + [t["name"] for t in entry.outputs]
            if sorted(names) != sorted(want):
                raise EngineManifestError(f"{path} has tensors {names}, the manifest says {want}: rebuild the "
                                          f"engines: {m.build_command()}")
            context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is None:
                raise EngineManifestError(f"TensorRT could not make an execution context for {path} (out of GPU "
                                          "memory?)")
            size = int(engine.device_memory_size_v2)
            scratch = torch.empty(max(size, 1), dtype=torch.uint8, device=device)
            context.set_device_memory(scratch.data_ptr(), size)
            opened.engines[name] = engine
            opened.contexts[name] = context
            opened.scratch[name] = scratch
            opened.dtypes[name] = {n: dtypes[engine.get_tensor_dtype(n)] for n in names}
    return opened


def load_engines(engine_dir: str | os.PathLike, *, device: str | torch.device = "cuda", graphs: Manifest | None = None,
                 check_graphs: bool = True, verify: bool = True, trt=None) -> TrtEngines:
    """Open the engine set in `engine_dir` on `device` after every check passed.

    graphs: the graph-set manifest the engines must have been built from (default: the recorded
    source folder when it still exists); check_graphs=False skips that; verify: check the engine
    files' sha256. Raises TensorRTUnavailable (what to install) or EngineManifestError."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"the tensorrt backend runs on a CUDA device, not {device}: pass device='cuda'")
    # what needs no TensorRT first: a broken engine folder is reported even where TensorRT is missing
    check_engine_set(engine_dir, tensorrt_version=None, gpu=None, graphs=graphs, check_graphs=check_graphs,
                     verify=verify)
    trt = trt or import_tensorrt()
    if not torch.cuda.is_available():
        raise EngineManifestError(f"PyTorch {torch.__version__} sees no CUDA GPU: the tensorrt backend runs on the "
                                  "GPU the engines were built for, with a CUDA build of PyTorch")
    m = check_engine_set(engine_dir, tensorrt_version=str(trt.__version__), gpu=gpu_of(device), graphs=graphs,
                         check_graphs=False, verify=False)
    return deserialize(trt, m, device)
