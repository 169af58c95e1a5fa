"""Bringing ComfyUI IMAGE tensors to the square grids X-Portrait works on (256 px for landmarks, R for hints).

The model was trained on square frames. The original simply resized every input to a square, which stretches
non-square videos; here the choice is explicit:

- "center_crop" (default): the largest centred square; no distortion, loses the sides of a landscape video.
- "pad": the whole frame centred on a black square (black = what alignment puts outside the frame too).
- "resize": stretch to a square, exactly the original's behaviour.

Inputs smaller than the target size are upsampled bilinearly (logged), never rejected.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Latents are an eighth of the pixels and the UNets halve them three times (the appearance net's skips must match):
# the sampling resolution must be a multiple of 8 x 2**3 pixels.
RESOLUTION_MULTIPLE = 64
RELEASED_RESOLUTION = 512  # what the released X-Portrait model was trained at

FitMode = Literal["center_crop", "pad", "resize"]
FIT_MODES: tuple[str, ...] = ("center_crop", "pad", "resize")
DEFAULT_FIT: FitMode = "center_crop"
UINT8_MAX = 255


def check_resolution(resolution: object, what: str = "resolution") -> None:
    """ValueError unless `resolution` is a whole multiple of 64 pixels, naming the nearest sizes that work; `what` is
    how the caller's user sets it (e.g. "--resolution")."""
    if isinstance(resolution, int) and not isinstance(resolution, bool) and resolution >= RESOLUTION_MULTIPLE \
            and resolution % RESOLUTION_MULTIPLE == 0:
        return
    near = ""
    if isinstance(resolution, (int, float)) and not isinstance(resolution, bool) and resolution > 0:
        below = max(RESOLUTION_MULTIPLE, int(resolution) // RESOLUTION_MULTIPLE * RESOLUTION_MULTIPLE)
        near = f" (nearest: {below} or {below + RESOLUTION_MULTIPLE})"
    raise ValueError(f"{what} must be a multiple of {RESOLUTION_MULTIPLE} pixels (the model downsamples by 64), "
                     f"e.g. {RELEASED_RESOLUTION} for the released model; got {resolution!r}{near}.")


def images_to_fchw(images: torch.Tensor, what: str) -> torch.Tensor:
    """ComfyUI IMAGE (F, H, W, C) or (H, W, C), float in [0, 1] -> (F, 3, H, W); an alpha channel is dropped.

    `what` names the input in error messages (e.g. "source image").
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"The {what} must be a torch tensor (ComfyUI IMAGE); got {type(images).__name__}.")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or images.shape[0] == 0:
        raise ValueError(
            f"The {what} must be a ComfyUI IMAGE of shape (F, H, W, 3) or (H, W, 3) with at least one frame; "
            f"got shape {tuple(images.shape)}."
        )
    if not images.is_floating_point():
        raise ValueError(f"The {what} must hold floats in [0, 1] (ComfyUI IMAGE); got dtype {images.dtype}.")
    return images[..., :3].permute(0, 3, 1, 2)


def fit_square_fchw(frames_fchw: torch.Tensor, mode: FitMode = DEFAULT_FIT) -> torch.Tensor:
    """(F, C, H, W) -> (F, C, S, S) by `mode` (see module docstring); "resize" returns the frames unchanged,
    the later resize to a square does the stretching."""
    if mode not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}; got {mode!r}.")
    height, width = frames_fchw.shape[-2:]
    if mode == "resize" or height == width:
        return frames_fchw
    if mode == "center_crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return frames_fchw[..., top : top + side, left : left + side]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return F.pad(frames_fchw, (left, side - width - left, top, side - height - top), value=0.0)


def resize_square_fchw(frames_fchw: torch.Tensor, size: int) -> torch.Tensor:
    """(F, C, H, W) float -> (F, C, size, size), bilinear with antialiasing when shrinking (as skimage's resize,
    which the original uses, filters before downsampling). Frames already at that size are returned as they are."""
    height, width = frames_fchw.shape[-2:]
    if (height, width) == (size, size):
        return frames_fchw
    if min(height, width) < size:
        logger.info("Upsampling %dx%d frames to %d px; small inputs give soft control hints.", width, height, size)
    return F.interpolate(frames_fchw, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_uint8_fhwc(frames_fchw: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) float in [0, 1] -> (F, H, W, 3) uint8 numpy, rounded (as skimage's img_as_ubyte)."""
    scaled = (frames_fchw.clamp(0.0, 1.0) * UINT8_MAX).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).contiguous().cpu().numpy()
