"""Reading driving videos and writing result videos as ComfyUI IMAGE batches.

Frames are float32 tensors `(F, H, W, 3)` in [0, 1] (the ComfyUI IMAGE layout), so what the command
line reads is exactly what the nodes receive inside ComfyUI. Containers go through PyAV; frame folders
and single images through Pillow.
"""
from __future__ import annotations

import errno
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..options import VIDEO_OUTPUT_SUFFIXES
from .safe_output import atomic_output

logger = logging.getLogger(__name__)

DEFAULT_FOLDER_FPS = 25.0  # frame folders and single images carry no rate; 25 fps is the common video default
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
# Pillow's modes for 16-bit greyscale (a 16-bit PNG opens as "I;16", or as 32-bit "I" in older Pillow versions);
# PNG stores at most 16 bits per sample, so these hold 0..65535.
SIXTEEN_BIT_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I"})
SIXTEEN_BIT_MAX = 65535
# x264 quality: 18 is visually near-lossless, small enough for comparison clips.
DEFAULT_CRF = 18
GIF_PALETTE_SIZE = 256  # the GIF format's colour table limit
# A frame rate as a Fraction with a small denominator keeps NTSC rates exact (29.97 -> 30000/1001).
MAX_RATE_DENOMINATOR = 1001
MIN_FPS = 1 / (2 * MAX_RATE_DENOMINATOR)  # slower rates round to 0 at that denominator
WHOLE_NUMBER_RANGE_TOP = 1.0  # whole-number frames above this are 0..255 images given for 0..1 ones


class VideoReadError(ValueError):
    """A driving video, frame folder or image could not be read."""


class VideoWriteError(ValueError):
    """Frames could not be written as the requested video."""


@dataclass(frozen=True)
class VideoClip:
    """Decoded frames and their rate.

    frames: float32 `(F, H, W, 3)` in [0, 1]. fps: frames per second of `frames` (already divided by
    the frame step, so the clip keeps its real-time duration).
    """

    frames: torch.Tensor
    fps: float


def natural_sort_key(name: str) -> list[object]:
    """Sort key that orders `frame2.png` before `frame10.png`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def read_video(
    path: str | Path,
    max_frames: int | None = None,
    frame_step: int = 1,
    default_fps: float = DEFAULT_FOLDER_FPS,
    what: str = "input",
) -> VideoClip:
    """Read a video file, a folder of frames or a single image as a `VideoClip`.

    path: a video file (mp4/webm/gif/mov/..., anything PyAV decodes), a folder of png/jpg/webp frames
    (natural order: frame2 before frame10) or one image (a one-frame clip).
    max_frames: keep at most this many frames (after stepping); None keeps all.
    frame_step: keep every n-th frame; the returned fps is divided by it (not for a single image).
    default_fps: rate for folders and images, which carry none.
    what: what the file is to the caller ("source image", "driving video", ...), named in error messages.
    """
    path = Path(path)
    if frame_step < 1:
        raise VideoReadError(f"frame_step must be 1 or more, got {frame_step}.")
    if max_frames is not None and max_frames < 1:
        raise VideoReadError(f"max_frames must be 1 or more (or None for all), got {max_frames}.")
    if not path.exists():
        raise VideoReadError(f"The {what} {path} does not exist. Give a video file, a folder of frames or an image.")
    if not path.is_dir() and not path.is_file():  # reading a named pipe or a device could block forever
        raise VideoReadError(f"The {what} {path} is not a regular file (a named pipe, socket or device?). Give a video "
                             "file, a folder of frames or an image.")

    if path.is_dir():
        frames_uint8, fps = _read_frame_folder(path, max_frames, frame_step), default_fps / frame_step
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        frames_uint8, fps = [_read_image(path)], default_fps
    else:
        frames_uint8, source_fps = _read_container(path, max_frames, frame_step, default_fps, what)
        fps = source_fps / frame_step

    if not frames_uint8:
        raise VideoReadError(f"The {what} {path} holds no frames. Check that the file is a video and is not empty.")
    stacked = torch.from_numpy(np.stack(frames_uint8))
    return VideoClip(frames=stacked.to(torch.float32) / 255.0, fps=fps)


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return image_to_rgb8(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as error:
        raise VideoReadError(f"Refused to read image {path}: it claims more pixels than Pillow's safety limit "
                             f"({Image.MAX_IMAGE_PIXELS} pixels), as a decompression bomb does; give a smaller image "
                             "(a portrait of a few megapixels is plenty).") from error
    except (OSError, ValueError) as error:
        raise VideoReadError(f"Cannot read image {path}: {error}. Is it a valid png/jpg/webp file?") from error


def image_to_rgb8(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of any Pillow image, scaled by its real bit depth.

    Pillow's own convert("RGB") clips 16-bit greyscale at 255 instead of scaling it, which turns a normal photo
    almost white (and its face undetectable); those are scaled from 0..65535 here. Palette,
    grey + alpha, CMYK and the rest convert as Pillow does (an alpha channel is dropped, as ComfyUI's LoadImage
    keeps colour and alpha apart)."""
    if image.mode in SIXTEEN_BIT_GREY_MODES:
        grey = np.asarray(image, dtype=np.float64)
        scaled = np.clip(np.round(grey / SIXTEEN_BIT_MAX * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(scaled[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _read_frame_folder(folder: Path, max_frames: int | None, frame_step: int) -> list[np.ndarray]:
    names = sorted(
        (p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=natural_sort_key,
    )
    if not names:
        raise VideoReadError(
            f"Frame folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}). "
            "Put the driving frames there or give a video file."
        )
    picked = names[::frame_step][:max_frames]
    frames = [_read_image(folder / name) for name in picked]
    first_shape = frames[0].shape
    for name, frame in zip(picked, frames):
        if frame.shape != first_shape:
            raise VideoReadError(
                f"Frame {folder / name} is {frame.shape[1]}x{frame.shape[0]} but {folder / picked[0]} is "
                f"{first_shape[1]}x{first_shape[0]}; all frames of a folder must have the same size."
            )
    return frames


def _read_container(
    path: Path, max_frames: int | None, frame_step: int, default_fps: float, what: str
) -> tuple[list[np.ndarray], float]:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise VideoReadError(f"Cannot open video {path} (the {what}): {error}. Is it a video file PyAV/FFmpeg can "
                             f"decode, or an image ({', '.join(sorted(IMAGE_SUFFIXES))})?") from error
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path} (the {what}) has no video stream (audio only?). Give a file with video.")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else default_fps
        frames: list[np.ndarray] = []
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % frame_step:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except av.FFmpegError as error:
            raise VideoReadError(f"Decoding {path} failed after {len(frames)} frames: {error}.") from error
    return frames, fps


def write_video(path: str | Path, frames: torch.Tensor, fps: float, crf: int = DEFAULT_CRF) -> Path:
    """Write `frames` `(F, H, W, 3)` in [0, 1] as a video at `fps`; the suffix picks the format.

    .mp4: H.264, yuv420p (plays everywhere); .webm: VP9, yuv420p; .gif: 256-colour palette per frame
    (GIF delays are in 1/100 s, so odd rates are rounded). yuv420p needs even width and height, so odd
    sizes are padded by repeating the last row/column; the padded size is what reads back.
    crf: quality for mp4/webm (lower is better). Returns the written path. The video is written beside `path` and
    renamed over it when complete (`safe_output.atomic_output`): a failure never leaves a partial file there.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_OUTPUT_SUFFIXES:
        raise VideoWriteError(f"Cannot write {path}: the suffix must be one of {', '.join(VIDEO_OUTPUT_SUFFIXES)}.")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise VideoWriteError(f"Expected frames shaped (F, H, W, 3) with F >= 1 for {path}, got {tuple(frames.shape)}.")
    rate = check_frame_rate(fps, f"to write {path}")
    frames_float = frames.detach().to("cpu", torch.float32)
    _check_frame_values(frames_float, path)
    frames_uint8 = (frames_float.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    try:
        with atomic_output(path) as partial:
            if suffix == ".gif":
                _write_gif(partial, frames_uint8, rate)
            else:
                codec = "libx264" if suffix == ".mp4" else "libvpx-vp9"
                options = {"crf": str(crf)} if suffix == ".mp4" else {"crf": str(crf), "b:v": "0"}
                _encode(partial, pad_to_even(frames_uint8), rate, codec=codec, pix_fmt="yuv420p", options=options)
    except (av.FFmpegError, OSError) as error:
        raise VideoWriteError(f"Writing {path} failed ({error}); any earlier file there is unchanged. "
                              f"{write_advice(error, path)}") from error
    return path


def write_advice(error: BaseException, path: Path) -> str:
    """What to do about a failed write, from its cause: only a full disk is blamed on disk space."""
    number = getattr(error, "errno", None)
    if number in (errno.ENOSPC, errno.EDQUOT):
        return "The disk is full: free some space or write elsewhere."
    if number == errno.ENOENT and not path.parent.is_dir():
        return f"The folder {path.parent} does not exist (any more): create it or write elsewhere."
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"The folder {path.parent} cannot be written: check its permissions or write elsewhere."
    if number == errno.ENAMETOOLONG:
        return "The file name is too long for this file system: give a shorter name."
    return "Check the folder and the disk, or write elsewhere."


def check_frame_rate(fps: float, purpose: str) -> Fraction:
    """The rate a video is written at, as stored (a fraction with a denominator of at most 1001), or
    VideoWriteError when `fps` cannot be stored: not positive, not finite, or below the slowest storable rate."""
    if not math.isfinite(fps) or fps <= 0:
        raise VideoWriteError(f"fps must be a positive number {purpose}, got {fps}.")
    rate = Fraction(fps).limit_denominator(MAX_RATE_DENOMINATOR)
    if rate <= 0 or fps < MIN_FPS:
        raise VideoWriteError(f"{fps:g} fps is too slow {purpose}: the slowest rate a video can store here is "
                              f"{MIN_FPS:g} fps (one frame per {1 / MIN_FPS:g} s).")
    return rate


def _check_frame_values(frames: torch.Tensor, path: Path) -> None:
    """NaN frames would be written black and 0..255 frames almost white, both without a word: refuse them."""
    finite = torch.isfinite(frames)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite.flatten(1).all(dim=1)).flatten().tolist()
        raise VideoWriteError(f"Cannot write {path}: frames {_listing(bad)} hold NaN or infinite values (they would be "
                              "written black); the frames must be finite numbers in 0..1.")
    top = float(frames.max()) if frames.numel() else 0.0
    if top > WHOLE_NUMBER_RANGE_TOP and bool((frames == frames.round()).all()):
        raise VideoWriteError(f"Cannot write {path}: the frames hold whole numbers up to {top:g}, as 0..255 images "
                              "do, but write_video expects floats in the range 0..1 (ComfyUI IMAGE); divide by 255 "
                              "first.")


def _listing(indices: list[int], shown: int = 5) -> str:
    text = ", ".join(str(i) for i in indices[:shown])
    return text + (f" and {len(indices) - shown} more" if len(indices) > shown else "")


def pad_to_even(frames_uint8: np.ndarray) -> np.ndarray:
    """Pad `(F, H, W, 3)` frames by repeating the last row/column so H and W are even (yuv420p)."""
    pad_h = frames_uint8.shape[1] % 2
    pad_w = frames_uint8.shape[2] % 2
    if not (pad_h or pad_w):
        return frames_uint8
    logger.info("Padding %dx%d frames to even size for yuv420p.", frames_uint8.shape[2], frames_uint8.shape[1])
    return np.pad(frames_uint8, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _encode(
    path: Path, frames_uint8: np.ndarray, rate: Fraction, codec: str, pix_fmt: str, options: dict[str, str]
) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width = frames_uint8.shape[2]
        stream.height = frames_uint8.shape[1]
        stream.pix_fmt = pix_fmt
        stream.time_base = 1 / rate
        for index, frame_rgb in enumerate(frames_uint8):
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _write_gif(path: Path, frames_uint8: np.ndarray, rate: Fraction) -> None:
    # FFmpeg's scaler cannot turn rgb24 into pal8, so Pillow quantizes each frame to its own palette.
    # (Pillow's own GIF writer is not used: it merges identical consecutive frames, changing the count.)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("gif", rate=rate)
        stream.width = frames_uint8.shape[2]
        stream.height = frames_uint8.shape[1]
        stream.pix_fmt = "pal8"
        for index, frame_rgb in enumerate(frames_uint8):
            # av's stub omits the (image, palette) pair that pal8 takes (av.VideoFrame.from_ndarray's docstring).
            frame = av.VideoFrame.from_ndarray(_to_palette_image(frame_rgb), format="pal8")  # type: ignore[arg-type]
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _to_palette_image(frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    quantized = Image.fromarray(frame_rgb).quantize(GIF_PALETTE_SIZE)
    palette_rgb = np.asarray(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)
    opaque = np.full((palette_rgb.shape[0], 1), 255, dtype=np.uint8)
    palette_argb = np.concatenate([opaque, palette_rgb], axis=1)  # PyAV takes pal8 palettes as ARGB rows
    palette_argb = np.pad(palette_argb, ((0, GIF_PALETTE_SIZE - palette_argb.shape[0]), (0, 0)))
    return np.asarray(quantized), palette_argb


def side_by_side(panels: Sequence[torch.Tensor], height: int | None = None) -> torch.Tensor:
    """Concatenate IMAGE batches left to right, e.g. driving | local patches | result.

    panels: each `(F, H_i, W_i, 3)`; a one-frame panel (a source image) is repeated over F.
    height: common height; each panel is resized to it keeping its aspect ratio. None uses the last
    panel's height (by the driving | patches | result convention, the result keeps its resolution).
    Returns `(F, height, sum of resized widths, 3)`.
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel.")
    frame_counts = {panel.shape[0] for panel in panels if panel.shape[0] != 1}
    if len(frame_counts) > 1:
        raise ValueError(
            f"Panels have different frame counts {[panel.shape[0] for panel in panels]}; "
            "trim them to the same length first (one-frame panels are repeated)."
        )
    frame_count = frame_counts.pop() if frame_counts else 1
    target_height = height if height is not None else panels[-1].shape[1]
    # an alpha channel (RGBA IMAGEs from other nodes) is dropped, as everywhere images enter
    resized = [_resize_to_height(panel[..., :3], target_height).expand(frame_count, -1, -1, -1) for panel in panels]
    return torch.cat(resized, dim=2)


def _resize_to_height(frames_fhwc: torch.Tensor, height: int) -> torch.Tensor:
    if frames_fhwc.shape[1] == height:
        return frames_fhwc
    width = max(1, round(frames_fhwc.shape[2] * height / frames_fhwc.shape[1]))
    frames_fchw = frames_fhwc.permute(0, 3, 1, 2).to(torch.float32)
    resized = F.interpolate(frames_fchw, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp(0, 1).permute(0, 2, 3, 1)
