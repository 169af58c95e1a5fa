"""Square crops of a larger picture and the record that puts them back: the geometry face framing, tracking and
paste-back share.

A crop is an integer square of the picture (`CropBox`, which may reach past the picture's border) resized to the
model's resolution R. Pixel centres sit at integer coordinates, so crop pixel (u, v) shows picture point
    x = left + (u + 0.5) * side / R - 0.5,   y = top + (v + 0.5) * side / R - 0.5
which is `CropRecord.affine` (crop -> picture) and what `F.interpolate(align_corners=False)` samples. Where the box
reaches past the border the picture is continued by reflection (by repeating the edge where the reach is longer
than the picture itself), so a face at the border keeps its size and place in the crop: nothing is shrunk or
shifted to fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropBox:
    """A square of the picture in whole pixels: columns left..left+side-1, rows top..top+side-1 (may reach outside)."""

    left: int
    top: int
    side: int

    def __post_init__(self) -> None:
        if self.side < 1:
            raise ValueError(f"a crop box needs a side of at least 1 pixel, got {self.side}")

    @classmethod
    def around(cls, centre_x: float, centre_y: float, side: float) -> CropBox:
        """The whole-pixel square of about `side` pixels whose centre is nearest (centre_x, centre_y)."""
        whole = max(1, int(round(side)))
        return cls(int(round(centre_x - whole / 2 + 0.5)), int(round(centre_y - whole / 2 + 0.5)), whole)

    @property
    def centre(self) -> tuple[float, float]:
        """Centre in picture pixel coordinates (pixel centres at integers)."""
        return self.left + (self.side - 1) / 2, self.top + (self.side - 1) / 2

    def inside(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the part of the box inside a width x height picture (x1, y1 exclusive; may be empty)."""
        return (max(0, self.left), max(0, self.top), min(width, self.left + self.side),
                min(height, self.top + self.side))


@dataclass(frozen=True)
class CropRecord:
    """Where a crop came from, for paste-back.

    box: the square of the picture that was cut. crop_size: R, the crop's side in pixels. picture_size: (width,
    height) of the picture. face_box: (x0, y0, x1, y1) of the face's 68 landmarks in picture pixels (sizes the
    paste-back mask). faces_found: how many faces the picture had (the face chosen is one of them).
    """

    box: CropBox
    crop_size: int
    picture_size: tuple[int, int]
    face_box: tuple[float, float, float, float]
    faces_found: int = 1

    @property
    def scale(self) -> float:
        """Picture pixels per crop pixel."""
        return self.box.side / self.crop_size

    @property
    def affine(self) -> np.ndarray:
        """(2, 3) float64 crop -> picture pixel map (see the module docstring)."""
        scale = self.scale
        return np.array([[scale, 0.0, self.box.left + 0.5 * scale - 0.5],
                         [0.0, scale, self.box.top + 0.5 * scale - 0.5]])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) picture points -> crop points (the inverse of `affine`)."""
        affine = self.affine
        return (np.asarray(points, np.float64) - affine[:, 2]) / self.scale


def crop_square_fchw(frames_fchw: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """(F, C, H, W) float -> (F, C, size, size): the box cut out (continued past the border, see the module
    docstring) and resized, bilinear with antialiasing when shrinking."""
    height, width = frames_fchw.shape[-2:]
    x0, y0, x1, y1 = box.inside(width, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the crop box {box} lies wholly outside the {width}x{height} picture")
    region = frames_fchw[..., y0:y1, x0:x1].float()
    pads = (x0 - box.left, box.left + box.side - x1, y0 - box.top, box.top + box.side - y1)
    if any(pads):
        # reflect needs each pad shorter than the region it mirrors; past that the edge is repeated
        reflectable = max(pads[:2]) < region.shape[-1] and max(pads[2:]) < region.shape[-2]
        region = F.pad(region, pads, mode="reflect" if reflectable else "replicate")
    if box.side == size:
        return region
    return F.interpolate(region, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
