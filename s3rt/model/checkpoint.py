"""Loading official checkpoints: unchanged keys, Cutie's single-object conversions, and a
refusal that names every missing, unexpected or mis-shaped key, or any tensor holding NaN or
infinity."""

from __future__ import annotations

import hashlib
import os
import re
import warnings

import torch
import torch.nn as nn


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the network built from the preset."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if os.path.isdir(path):
        raise CheckpointMismatchError(f"checkpoint {path} is a folder; give the .pth file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            # torch's remarks on the pickle protocol of a file it then refuses anyway: the error says it
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, non-torch files
        raise CheckpointMismatchError(_unreadable(path, e)) from e
    # Training wrappers sometimes nest the weights.
    for key in ("model", "state_dict", "network"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"{path} does not hold a state_dict (a dict of tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _unreadable(path, e: Exception) -> str:
    """One line for a file torch.load(weights_only=True) refuses. Torch's own text runs to
    several lines and advises weights_only=False, which would run any code in the file; a
    state_dict never needs it, so that advice is left out."""
    text = str(e)
    if "Weights only load failed" in text:
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
        detail = " ".join(m.group(1).split()) if m else ""
        if "Unsupported global" in detail:
            return (f"cannot read {path}: it holds Python objects, not only tensors ({detail[:160]}); "
                    "s3rt loads plain state_dicts (save model.state_dict())")
        return f"cannot read {path}: not a PyTorch checkpoint, or a damaged one ({detail[:160] or 'unpickling failed'})"
    if isinstance(e, EOFError) or os.path.getsize(path) == 0:
        return f"cannot read {path}: the file is empty or cut short"
    first = " ".join(text.split(". ")[0].split()) or type(e).__name__
    return f"cannot read {path}: not a PyTorch checkpoint, or a damaged or truncated one ({first[:160]})"


def check_finite(state: dict[str, torch.Tensor], keys=None) -> None:
    """Refuse weights holding NaN or infinity, naming the tensors (a checkpoint saved from a
    run that diverged loads fine and then segments nothing)."""
    bad = []
    for k in (state if keys is None else keys):
        v = state.get(k)
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel():
            n = int((~torch.isfinite(v)).sum())
            if n:
                bad.append(f"{k} ({n} of {v.numel()})")
    if bad:
        raise CheckpointMismatchError(
            f"the checkpoint has NaN or infinite values in {len(bad)} tensor(s): {_describe(bad, 5)}; "
            "it was probably saved after training diverged; use an earlier checkpoint")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_single_object(state: dict[str, torch.Tensor], sensory_dim: int) -> dict[str, torch.Tensor]:
    """Cutie's single-object weights have 4 mask-encoder input channels (no 'others' mask) and a
    sensory compressor over sensory+1 channels. Add the missing channel as zeros, so the
    multi-object network computes exactly what the single-object one did. (The official
    `load_weights` fills it with a random orthogonal init unless asked for zeros, which makes
    results differ run to run; zeros are the faithful and reproducible choice.)"""
    state = dict(state)
    w = state.get("mask_encoder.conv1.weight")
    if w is not None and w.dim() == 4 and w.shape[1] == 4:
        state["mask_encoder.conv1.weight"] = torch.cat([w, w.new_zeros(w.shape[0], 1, *w.shape[2:])], 1)
    w = state.get("pixel_fuser.sensory_compress.weight")
    if w is not None and w.dim() == 4 and w.shape[1] == sensory_dim + 1:
        state["pixel_fuser.sensory_compress.weight"] = torch.cat([w, w.new_zeros(w.shape[0], 1, *w.shape[2:])], 1)
    return state


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mis_shaped = sorted(
        (k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape)
    return missing, unexpected, mis_shaped


def _describe(items, limit=20):
    items = [str(i) for i in items]
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_checkpoint(model: nn.Module, source, *, strict: bool = True, preset: str = "?") -> None:
    """Load a path or a state dict into `model`. With strict=True (default) any missing,
    unexpected or mis-shaped key is an error that lists them all; strict=False loads what fits
    and warns loudly about the rest."""
    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    state = convert_single_object(state, model.cfg.sensory_dim)
    missing, unexpected, mis_shaped = check_state_dict(model, state)
    check_finite(state, [k for k in model.state_dict() if k in state])
    if missing or unexpected or mis_shaped:
        lines = [f"checkpoint does not match preset {preset!r}:"]
        if missing:
            lines.append(f"  {len(missing)} missing keys: {_describe(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected keys: {_describe(unexpected)}")
        if mis_shaped:
            lines.append("  %d mis-shaped keys (checkpoint vs model): %s" % (
                len(mis_shaped), _describe(f"{k} {a} vs {b}" for k, a, b in mis_shaped)))
        message = "\n".join(lines)
        if strict:
            raise CheckpointMismatchError(
                message + "\nCheck the preset (s3rt info lists them), or pass strict=False to load what fits.")
        warnings.warn("LOADING ONLY PART OF THE CHECKPOINT (strict=False): " + message, stacklevel=2)
        for k, _, _ in mis_shaped:
            del state[k]
        for k in unexpected:
            del state[k]
    model.load_state_dict(state, strict=False)
