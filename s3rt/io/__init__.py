"""Files in and out: frames (video, image folders, DAVIS layout), id masks (palette PNGs),
overlays (PNG / video), all writes atomic."""

from s3rt.io.atomic import atomic_write
from s3rt.io.errors import InputError, InputNotFoundError
from s3rt.io.frames import FrameSource, find_sequence_dir, list_images, open_frames
from s3rt.io.masks import davis_palette, list_masks, read_mask, write_mask
from s3rt.io.overlay import VideoWriter, overlay, video_codecs, write_overlay_pngs, write_overlay_video

__all__ = [
    "atomic_write",
    "InputError",
    "InputNotFoundError",
    "FrameSource",
    "open_frames",
    "find_sequence_dir",
    "list_images",
    "davis_palette",
    "read_mask",
    "write_mask",
    "list_masks",
    "overlay",
    "VideoWriter",
    "video_codecs",
    "write_overlay_pngs",
    "write_overlay_video",
]
