"""A driving clip made from a real photo by known head motions, with exact landmarks.

The portrait is ``skimage.data.astronaut()`` (public domain, bundled with scikit-image), cropped to the
face. Frame i is the portrait under a similarity transform (rotation, scale, shift about the centre) that
follows a smooth loop, so what alignment should recover is known exactly.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from kornia.geometry.transform import warp_affine

from ..controls.alignment import transform_points
from ..controls.landmarks.replay import ReplayLandmarkProvider
from ..media.image_fit import resize_square_fchw, to_uint8_fhwc

ASTRONAUT_FACE_CROP = (slice(20, 300), slice(85, 365))  # rows, columns of the 512 px photo: the head
LANDMARK_GRID = 256
LANDMARKS_FILE = Path(__file__).parent / "data" / "astronaut_landmarks_256.json"
MAX_ROTATION_DEG = 8.0
MAX_SCALE_CHANGE = 0.08
MAX_SHIFT = 0.05  # of the frame size


def astronaut_portrait(size: int = 256) -> torch.Tensor:
    """IMAGE (1, size, size, 3) in [0, 1]: the astronaut's face crop."""
    from skimage.data import astronaut

    crop = torch.from_numpy(astronaut()[ASTRONAUT_FACE_CROP].copy()).float().div(255)
    return resize_square_fchw(crop.permute(2, 0, 1)[None], size).permute(0, 2, 3, 1).clamp(0, 1)


def astronaut_landmarks_256() -> np.ndarray:
    """(68, 2) iBUG landmarks of the crop on the 256 px grid (recorded once with dlib)."""
    return np.asarray(json.loads(LANDMARKS_FILE.read_text())["points_256"], np.float32)


def head_motion(frame: int, frames: int, size: int) -> torch.Tensor:
    """(2, 3) float64 pixel affine of frame ``frame``: rotation and scale about the centre, then a shift."""
    phase = 2 * math.pi * frame / frames
    angle = math.radians(MAX_ROTATION_DEG * math.sin(phase))
    scale = 1 + MAX_SCALE_CHANGE * math.sin(2 * phase)
    shift = (MAX_SHIFT * size * math.cos(phase) - MAX_SHIFT * size, MAX_SHIFT * size * math.sin(phase))
    centre = (size - 1) / 2
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[cos, -sin, centre - cos * centre + sin * centre + shift[0]],
                         [sin, cos, centre - sin * centre - cos * centre + shift[1]]], dtype=torch.float64)


@dataclass
class DemoClip:
    source: torch.Tensor          # IMAGE (1, S, S, 3)
    driving: torch.Tensor         # IMAGE (F, S, S, 3)
    motions: torch.Tensor         # (F, 2, 3) pixel affines source -> frame
    landmarks_256: np.ndarray     # (F, 68, 2) exact landmarks of each frame on the 256 px grid
    source_landmarks_256: np.ndarray  # (68, 2)

    def replay_provider(self) -> ReplayLandmarkProvider:
        """Serves the exact landmarks for the 256 px copies the pipeline detects on."""
        frames = torch.cat([self.source, self.driving]).permute(0, 3, 1, 2)
        copies = to_uint8_fhwc(resize_square_fchw(frames, LANDMARK_GRID))
        return ReplayLandmarkProvider(copies, np.concatenate([self.source_landmarks_256[None], self.landmarks_256]))


def head_motion_clip(frames: int = 24, size: int = 256) -> DemoClip:
    source = astronaut_portrait(size)
    motions = torch.stack([head_motion(i, frames, size) for i in range(frames)])
    source_fchw = source.permute(0, 3, 1, 2).expand(frames, -1, -1, -1)
    driving = warp_affine(source_fchw, motions.float(), dsize=(size, size), mode="bilinear",
                          padding_mode="zeros", align_corners=True).clamp(0, 1)
    points = astronaut_landmarks_256()
    to_grid = LANDMARK_GRID / size
    landmarks = np.stack([transform_points(points / to_grid, motion) * to_grid for motion in motions])
    return DemoClip(source=source, driving=driving.permute(0, 2, 3, 1), motions=motions,
                    landmarks_256=landmarks, source_landmarks_256=points)
