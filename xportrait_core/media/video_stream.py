"""Writing a video from chunks of uint8 frames as they are made, for clips too large to hold at once (paste-back of
a long clip at 4K). The same formats and settings as `video_io.write_video` (.mp4 H.264 or .webm VP9, yuv420p),
written beside the path and renamed when complete. An odd width or height gets one more column or row, a copy of
the last one (`video_io.pad_to_even`): yuv420p needs even sizes, and nothing of the picture is cut.
"""
from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .safe_output import atomic_output
from .video_io import DEFAULT_CRF, MAX_RATE_DENOMINATOR, VideoWriteError, pad_to_even

STREAM_SUFFIXES = (".mp4", ".webm")


def write_video_chunks(path: str | Path, chunks: Iterable[torch.Tensor | np.ndarray], fps: float,
                       crf: int = DEFAULT_CRF) -> tuple[int, int, int]:
    """Encodes every chunk (f, H, W, 3) uint8 in order; returns (frames, width, height) as written (even sizes)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STREAM_SUFFIXES:
        raise VideoWriteError(f"Cannot write {path} chunk by chunk: the suffix must be one of "
                              f"{', '.join(STREAM_SUFFIXES)}.")
    if fps <= 0:
        raise VideoWriteError(f"fps must be positive to write {path}, got {fps}.")
    rate = Fraction(fps).limit_denominator(MAX_RATE_DENOMINATOR)
    codec = "libx264" if suffix == ".mp4" else "libvpx-vp9"
    options = {"crf": str(crf)} if suffix == ".mp4" else {"crf": str(crf), "b:v": "0"}
    count, size = 0, (0, 0)
    try:
        with atomic_output(path) as partial, av.open(str(partial), mode="w") as container:
            stream = None
            for chunk in chunks:
                frames = pad_to_even(np.asarray(chunk, dtype=np.uint8))
                if stream is None:
                    stream = container.add_stream(codec, rate=rate, options=options)
                    stream.width, stream.height = frames.shape[2], frames.shape[1]
                    stream.pix_fmt = "yuv420p"
                    stream.time_base = 1 / rate
                    size = (frames.shape[2], frames.shape[1])
                for frame_rgb in frames:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
                    frame.pts = count
                    container.mux(stream.encode(frame))
                    count += 1
            if stream is None:
                raise VideoWriteError(f"No frames to write to {path}.")
            container.mux(stream.encode())
    except (av.FFmpegError, OSError) as error:
        raise VideoWriteError(f"Writing {path} failed ({error}); any earlier file there is unchanged. Check the free "
                              "disk space and the folder's permissions.") from error
    return count, size[0], size[1]
