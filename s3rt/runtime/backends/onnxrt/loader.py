"""Opening a graph set in ONNX Runtime: read and check the manifest, choose the execution
providers, set the session options, make one session per graph, and detect a provider fallback.

ONNX Runtime silently falls back to the CPU when a requested execution provider cannot load (for
example CUDA without a driver); `load_sessions` compares `session.get_providers()` with the
request and warns (or raises ProviderFallbackError with strict_providers=True).

Threads: ONNX Runtime's workers do not spin between calls by default here, because the tracker
runs PyTorch code between graph calls that spinning workers starve (on 2 cores that made small
frames 7x slower); `spinning=True` turns it back on.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from s3rt.graphs import GRAPHS, Manifest, load_manifest

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class ProviderFallbackError(RuntimeError):
    """A requested ONNX Runtime execution provider is not active (strict_providers=True)."""


class GraphLoadError(ValueError):
    """ONNX Runtime cannot open a graph of the set (a damaged or foreign file)."""


@dataclass
class OrtSessions:
    """A graph set opened in ONNX Runtime: what the runner needs."""

    manifest: Manifest
    sessions: dict  # graph name -> onnxruntime.InferenceSession
    providers: list[str]  # the active providers, in priority order
    requested_providers: list[str]
    ort_version: str

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] in GPU_PROVIDERS


def _provider_name(p) -> str:
    return p[0] if isinstance(p, (tuple, list)) else str(p)


def _fallback(providers: list[str], why: str, instead: list[str], strict: bool) -> None:
    where = "the CPU" if instead == ["CPUExecutionProvider"] else ", ".join(instead)
    msg = (f"onnxruntime: requested execution provider(s) {', '.join(providers)} {why}; the graphs run on "
           f"{where} instead. Install the matching onnxruntime build (e.g. onnxruntime-gpu with a CUDA "
           "driver) or request only the providers you have")
    if strict:
        raise ProviderFallbackError(msg + " (strict_providers=True)")
    warnings.warn(msg + " (pass strict_providers=True to make this an error)", RuntimeWarning, stacklevel=4)


def session_options(threads: int | None = None, spinning: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def load_sessions(graph_dir: str | os.PathLike, providers=("CPUExecutionProvider",), *,
                  strict_providers: bool = False, threads: int | None = None, options=None, spinning: bool = False,
                  verify: bool = True, preset: str | None = None, checkpoint=None) -> OrtSessions:
    """Open the graphs in `graph_dir` (written by `s3rt export`).

    providers: execution providers in priority order (names or (name, options) pairs);
    strict_providers: raise instead of warning when one is not active; threads: intra-op threads
    (default: ONNX Runtime's); options: a ready onnxruntime.SessionOptions (overrides threads and
    spinning); verify: check the files' sha256; preset / checkpoint: what the graphs must have been
    exported from (ManifestError otherwise).
    """
    import onnxruntime as ort

    manifest = load_manifest(graph_dir, verify=verify, preset=preset, checkpoint=checkpoint)
    requested = list(providers) if providers else ["CPUExecutionProvider"]
    requested_names = [_provider_name(p) for p in requested]
    available = ort.get_available_providers()
    missing = [p for p in requested_names if p not in available]
    if missing:
        kept = [p for p in requested if _provider_name(p) in available] or ["CPUExecutionProvider"]
        _fallback(missing, f"not available in this onnxruntime {ort.__version__} (available: {', '.join(available)})",
                  [_provider_name(p) for p in kept], strict_providers)
        requested = kept
    so = options if options is not None else session_options(threads, spinning)
    sessions = {}
    for name in GRAPHS:
        path = manifest.graph_path(name)
        try:
            sessions[name] = ort.InferenceSession(str(path), so, providers=requested)
        except Exception as e:  # noqa: BLE001 - ORT raises its own types (InvalidProtobuf, Fail, ...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise GraphLoadError(f"ONNX Runtime cannot open {path} ({type(e).__name__}: {first[:200]}); the file is "
                                 f"damaged or not this graph set's: re-export it (s3rt export ... --out "
                                 f"{manifest.directory})") from e
    active = sessions["encoder"].get_providers()
    inactive = [p for p in requested_names if p not in active and p not in missing]
    if inactive:
        _fallback(inactive, "failed to start (ONNX Runtime's log says why)", active, strict_providers)
    return OrtSessions(manifest=manifest, sessions=sessions, providers=active, requested_providers=requested_names,
                       ort_version=ort.__version__)
