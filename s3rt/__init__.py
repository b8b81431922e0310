"""s3rt: real-time deployment of S3 and Cutie video object segmentation."""

__version__ = "0.1.0"

from s3rt.model import PRESETS, build_model, get_config  # noqa: E402
from s3rt.runtime.tracker import Tracker, TrackResult  # noqa: E402

__all__ = ["build_model", "get_config", "PRESETS", "Tracker", "TrackResult", "__version__"]
