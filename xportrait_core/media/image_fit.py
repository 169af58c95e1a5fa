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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..options import FitMode, check, default

logger = logging.getLogger(__name__)

UINT8_MAX = 255


@dataclass(frozen=True)
class Framing:
    """How images become the model's squares: the side in pixels, and how a non-square image is made square. Checked
    when made (OptionError on resolution or fit), so whoever holds a Framing holds a valid one."""

    resolution: int = default("resolution")
    fit: FitMode = default("fit")

    def __post_init__(self) -> None:
        check("resolution", self.resolution)
        check("fit", self.fit)

    def model_images(self, images_fhwc: torch.Tensor, what: str = "image") -> torch.Tensor:
        """IMAGE (B, H, W, 3) or (H, W, 3) in [0, 1] -> (B, 3, R, R) in [-1, 1]."""
        square = fit_square_fchw(images_to_fchw(images_fhwc, what), self.fit)
        note_upsampling(square, self.resolution, what)
        return resize_square_fchw(square, self.resolution) * 2 - 1


def note_upsampling(frames_fchw: torch.Tensor, size: int, what: str) -> None:
    """Log, once per input (callers resize it in chunks, which say nothing), that its frames are smaller than `size`
    and will be upsampled."""
    height, width = frames_fchw.shape[-2:]
    if min(height, width) < size:
        logger.info("%s: %dx%d frames upsampled to %d px; frames smaller than that give softer control hints and "
                    "less exact landmarks.", what, width, height, size)


def images_to_fchw(images: torch.Tensor, what: str) -> torch.Tensor:
    """ComfyUI IMAGE (F, H, W, C) or (H, W, C), float in [0, 1] -> (F, 3, H, W); an alpha channel is dropped.

    `what` names the input in error messages (e.g. "source image").
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"The {what} must be a torch tensor (ComfyUI IMAGE); got {type(images).__name__}.")
    if images.is_meta:
        raise ValueError(f"The {what} is a meta tensor (a shape without pixels); give images that hold their values "
                         "(on the CPU or a GPU).")
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


def fit_square_fchw(frames_fchw: torch.Tensor, mode: FitMode) -> torch.Tensor:
    """(F, C, H, W) -> (F, C, S, S) by `mode` (see module docstring); "resize" returns the frames unchanged,
    the later resize to a square does the stretching."""
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
    return F.interpolate(frames_fchw, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_uint8_fhwc(frames_fchw: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) float in [0, 1] -> (F, H, W, 3) uint8 numpy, rounded (as skimage's img_as_ubyte)."""
    scaled = (frames_fchw.clamp(0.0, 1.0) * UINT8_MAX).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def hints_of_images(images_fhwc: torch.Tensor, what: str) -> torch.Tensor:
    """IMAGE (F, R, R, 3) in [0, 1] -> hints (F, 3, R, R) in [-1, 1] (square frames, as the control nodes make)."""
    frames = images_to_fchw(images_fhwc, what).float()
    if frames.shape[-1] != frames.shape[-2]:
        raise ValueError(f"The {what} must be square frames (from the X-Portrait control nodes); "
                         f"got {frames.shape[-1]}x{frames.shape[-2]}.")
    return frames * 2 - 1


def images_of_hints(hints_fchw: torch.Tensor) -> torch.Tensor:
    """Hints (F, 3, R, R) in [-1, 1] -> IMAGE (F, R, R, 3) in [0, 1] on the CPU."""
    return ((hints_fchw.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous().cpu()
