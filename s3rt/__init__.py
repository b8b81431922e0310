"""s3rt: real-time deployment of S3 and Cutie video object segmentation."""

__version__ = "0.1.0"

from s3rt.model import build_model, get_config, PRESETS  # noqa: E402

__all__ = ["build_model", "get_config", "PRESETS", "__version__"]
