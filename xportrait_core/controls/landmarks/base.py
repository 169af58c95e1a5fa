"""What a face-landmark provider promises, and the per-frame result it returns.

The geometry code (alignment, local patches) depends only on this module: any detector that can give the 68
iBUG points, or a faithful mapping onto them, can drive X-Portrait.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from . import ibug68


@dataclass(frozen=True)
class FaceLandmarks:
    """Landmarks of one face per frame, in the pixel coordinates of the frames they were detected on.

    points_68:   (F, 68, 2) float32 (x, y), iBUG order (see `ibug68`); NaN where no face was found.
    face_found:  (F,) bool.
    face_boxes:  (F, 4) float32 detector box (x0, y0, x1, y1); NaN where no face was found.
    """

    points_68: np.ndarray
    face_found: np.ndarray
    face_boxes: np.ndarray

    def __post_init__(self) -> None:
        frames = self.face_found.shape[0]
        if self.points_68.shape != (frames, ibug68.NUM_POINTS, 2):
            raise ValueError(
                f"FaceLandmarks.points_68 must have shape ({frames}, {ibug68.NUM_POINTS}, 2) to match face_found "
                f"({frames} frames); got {tuple(self.points_68.shape)}."
            )
        if self.face_boxes.shape != (frames, 4):
            raise ValueError(
                f"FaceLandmarks.face_boxes must have shape ({frames}, 4); got {tuple(self.face_boxes.shape)}."
            )

    @classmethod
    def empty(cls, frames: int) -> FaceLandmarks:
        """A result for `frames` frames in which no face was found."""
        return cls(
            points_68=np.full((frames, ibug68.NUM_POINTS, 2), np.nan, dtype=np.float32),
            face_found=np.zeros(frames, dtype=bool),
            face_boxes=np.full((frames, 4), np.nan, dtype=np.float32),
        )

    @property
    def num_frames(self) -> int:
        return int(self.face_found.shape[0])

    @property
    def left_eye_centres(self) -> np.ndarray:
        """(F, 2) mean of the original's left-eye slice `points[43:48]`."""
        return self.points_68[:, ibug68.ORIGINAL_LEFT_EYE_SLICE].mean(axis=1)

    @property
    def right_eye_centres(self) -> np.ndarray:
        """(F, 2) mean of the original's right-eye slice `points[37:42]`."""
        return self.points_68[:, ibug68.ORIGINAL_RIGHT_EYE_SLICE].mean(axis=1)

    @property
    def mouth_centres(self) -> np.ndarray:
        """(F, 2) mean of the original's mouth slice `points[49:68]`."""
        return self.points_68[:, ibug68.ORIGINAL_MOUTH_SLICE].mean(axis=1)

    @property
    def landmark_boxes(self) -> np.ndarray:
        """(F, 4) bounding box (x0, y0, x1, y1) of the 68 points; the alignment matches these boxes."""
        return np.concatenate([self.points_68.min(axis=1), self.points_68.max(axis=1)], axis=1)


@runtime_checkable
class LandmarkProvider(Protocol):
    """Finds one face per frame and returns its 68 iBUG points.

    `detect` receives frames as (F, H, W, 3) uint8 RGB (X-Portrait detects on 256 x 256 copies) and returns one
    `FaceLandmarks` row per frame. With several faces in a frame a provider returns the
    most confident one.
    """

    name: str

    def detect(self, frames_fhwc_uint8: np.ndarray) -> FaceLandmarks: ...



@runtime_checkable
class MultiFaceProvider(Protocol):
    """A provider that can also give every face of one picture (face selection and tracking use it; a provider
    without it gives its one most confident face per frame).

    `detect_faces` receives one (H, W, 3) uint8 RGB picture and returns one `FaceLandmarks` row per face found, in
    no particular order (zero rows: none)."""

    name: str

    def detect_faces(self, picture_hwc_uint8: np.ndarray) -> FaceLandmarks: ...


def check_uint8_frames(frames_fhwc_uint8: np.ndarray) -> np.ndarray:
    """Returns the frames as an array after checking they are (F, H, W, 3) uint8, as providers expect."""
    frames = np.asarray(frames_fhwc_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            "A landmark provider expects frames as a (F, H, W, 3) uint8 RGB array; "
            f"got dtype {frames.dtype} and shape {tuple(frames.shape)}."
        )
    return frames
