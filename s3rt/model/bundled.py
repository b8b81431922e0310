"""Checkpoints that ship inside the package (trained by `s3rt train`; see the model card,
`s3rt/training/MODEL_CARD.md` in the source tree: training/MODEL_CARD.md).

`s3rt.build_model(PRESET, "bundled")` (and `--checkpoint bundled` on the command line) loads
`s3rt/model/weights/<PRESET>.pth`. Only presets listed by `bundled_presets()` have one.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = "bundled"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def bundled_path(preset: str) -> Path | None:
    """The bundled checkpoint of `preset`, or None when the package has none."""
    p = WEIGHTS_DIR / f"{preset}.pth"
    return p if p.is_file() else None


def bundled_presets() -> list[str]:
    """Presets with a bundled checkpoint, sorted."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pth"))


def require_bundled(preset: str) -> Path:
    p = bundled_path(preset)
    if p is None:
        have = bundled_presets()
        raise FileNotFoundError(
            f"no bundled checkpoint for preset {preset!r}; presets with one: {', '.join(have) if have else 'none'} "
            f"(train one with: s3rt train --preset {preset} --out {preset}.pth)")
    return p


def bundled_meta(preset: str) -> dict:
    """The metadata stored with a bundled checkpoint (step, training time, recipe), or {}."""
    import torch
    p = bundled_path(preset)
    if p is None:
        return {}
    obj = torch.load(p, map_location="cpu", weights_only=True)
    return dict(obj.get("meta", {})) if isinstance(obj, dict) else {}
