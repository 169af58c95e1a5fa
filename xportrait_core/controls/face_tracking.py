"""Following the face through a full-frame driving video with a square crop that does not jitter.

The track starts at the largest face of the first frame that has one (searched in the whole frame) and then takes,
in each frame, the face nearest to where it was last seen (searched around its last crop, in the whole frame only
when it is not there), so another face passing by does not take the crop. Each detection gives a crop box as the
source's does (`face_framing.crop_box_for`: centre and side from the 68-point box and the margin). A frame without
a face takes a box on the line between those of the nearest frames with one before and after it. The boxes'
centres and sides are then smoothed over time by a local quadratic fit with Gaussian weights (`smooth_path`): a
face moving steadily is followed without lag, while the detector's frame-to-frame noise is averaged out. Each
frame's smoothed box is cut out and resized like the source's crop.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..media.crop_geometry import CropBox, crop_square_fchw
from ..media.image_fit import images_to_fchw, to_uint8_fhwc
from ..options import DEFAULT_FACE_MARGIN, OptionError, check, default
from .face_framing import Face, crop_box_for, detection_copy, faces_in
from .frame_hooks import FrameCounter
from .landmarks import LandmarkProvider

logger = logging.getLogger(__name__)

# Whole driving frames are searched on copies at most this long: a 720p frame as it is, where the HOG detector with
# one upsampling finds faces down to about 40 px (60 px in a 1080p frame, 120 px at 4K).
TRACK_DETECT_LONG_SIDE = 1280
# Once found, the face is searched in a square SEARCH_AREA times its last crop's side (4.5 face sizes at the default
# margin: room for fast head motion), on a copy SEARCH_SIDE pixels wide (the face is then about 70 px, a size the
# detector finds, however small or large the face is in the frame).
SEARCH_AREA = 1.5
SEARCH_SIDE = 320
GAUSSIAN_REACH = 3  # the smoothing weights are cut at this many sigmas
PATH_DEGREE = 2  # the smoothing fits a parabola: it follows a head that turns back without cutting the corner


@dataclass(frozen=True)
class FaceTracking:
    """How the driving face is followed: the crop's margin around the face (as the source's) and the smoothing
    (Gaussian sigma in frames). Checked when made."""

    margin: float = DEFAULT_FACE_MARGIN
    smoothing: float = default("track_smoothing")

    def __post_init__(self) -> None:
        check("face_margin", self.margin)
        check("track_smoothing", self.smoothing)


def tracking_for(driving_crop: str, margin: float = DEFAULT_FACE_MARGIN,
                 smoothing: float = default("track_smoothing")) -> FaceTracking | None:
    """The tracking a driving_crop choice asks for (checked): None for full_frame, for track_face a FaceTracking."""
    check("driving_crop", driving_crop)
    return FaceTracking(margin, smoothing) if driving_crop == "track_face" else None


@dataclass(frozen=True)
class FaceTrack:
    """The face's crop through a video.

    detected:   (F, 3) float64 crop centre x, y and side from each frame's own detection; NaN where none.
    smoothed:   (F, 3) the boxes cut: gaps filled from the nearest frames, then smoothed over time.
    face_found: (F,) bool.
    frame_size: (width, height) of the frames.
    """

    detected: np.ndarray
    smoothed: np.ndarray
    face_found: np.ndarray
    frame_size: tuple[int, int]

    @property
    def frames_without_face(self) -> list[int]:
        return [int(index) for index in np.flatnonzero(~self.face_found)]

    def box(self, frame: int) -> CropBox:
        return CropBox.around(*self.smoothed[frame])


def smooth_path(values: np.ndarray, sigma: float) -> np.ndarray:
    """(F, K) values over time -> (F, K) local quadratic fits with Gaussian weights of `sigma` frames, evaluated at
    each frame: a path that moves steadily or turns smoothly is kept (also at the ends, where a plain average would
    lag), while the detector's frame-to-frame noise is averaged out. sigma 0: a copy."""
    values = np.asarray(values, np.float64)
    frames = values.shape[0]
    if sigma <= 0 or frames < 2:
        return values.copy()
    reach = int(math.ceil(GAUSSIAN_REACH * sigma))
    smoothed = np.empty_like(values)
    for frame in range(frames):
        low, high = max(0, frame - reach), min(frames, frame + reach + 1)
        offsets = np.arange(low, high, dtype=np.float64) - frame
        degree = min(PATH_DEGREE, high - low - 1)
        weights = np.exp(-0.25 * (offsets / sigma) ** 2)  # polyfit squares them: Gaussian weights of sigma
        smoothed[frame] = np.polynomial.polynomial.polyfit(offsets, values[low:high], degree, w=weights)[0]
    return smoothed


def fill_gaps(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """(F, K) values with the rows where `found` is False drawn on the straight line between the nearest found rows
    before and after (before the first or after the last: that row repeated)."""
    frames = np.arange(len(found))
    return np.stack([np.interp(frames, frames[found], column[found]) for column in values.T], axis=1)


def _search(frame_fchw: torch.Tensor, provider: LandmarkProvider, near: CropBox | None) -> list[Face]:
    """Faces in one frame (1, 3, H, W), in frame pixels: around `near` (a square of SEARCH_AREA times its side,
    searched at SEARCH_SIDE pixels), else in the whole frame (at most TRACK_DETECT_LONG_SIDE long)."""
    if near is None:
        copy, scale = detection_copy(frame_fchw, TRACK_DETECT_LONG_SIDE)
        return faces_in(provider, copy[0], scale)
    area = CropBox.around(*near.centre, SEARCH_AREA * near.side)
    size = SEARCH_SIDE
    copy = to_uint8_fhwc(crop_square_fchw(frame_fchw, area, size).clamp(0, 1))
    scale = area.side / size
    return [Face(face.points_68 + (area.left, area.top))
            for face in faces_in(provider, copy[0], scale)]


def track_face(driving_fhwc: torch.Tensor, provider: LandmarkProvider, tracking: FaceTracking = FaceTracking(),
               counter: FrameCounter | None = None) -> FaceTrack:
    """The face's crop boxes through a driving video (IMAGE (F, H, W, 3) in [0, 1]). counter: one frame of work per
    frame searched. OptionError naming the driving video when no frame has a face.

    Each frame is searched around the face's last crop (fast: a small copy), and in the whole frame only until the
    face is first found or when it is not where it was."""
    frames_fchw = images_to_fchw(driving_fhwc, "driving video")
    counter = counter or FrameCounter(None, frames_fchw.shape[0])
    height, width = frames_fchw.shape[-2:]
    detected = np.full((frames_fchw.shape[0], 3), np.nan)
    last: Face | None = None
    for frame in range(frames_fchw.shape[0]):
        counter.check()
        near = None if last is None else CropBox.around(*crop_box_for(last.box, tracking.margin))
        faces = _search(frames_fchw[frame:frame + 1], provider, near)
        if not faces and near is not None:
            faces = _search(frames_fchw[frame:frame + 1], provider, None)
        if faces:
            if last is None:  # the track starts at the largest face
                last = max(faces, key=lambda face: face.size)
            else:  # then stays with the face nearest to where it was
                previous = last.centre
                last = min(faces, key=lambda face: math.dist(face.centre, previous))
            detected[frame] = crop_box_for(last.box, tracking.margin)
        counter.advance(1)
    found = ~np.isnan(detected[:, 0])
    if not found.any():
        raise OptionError("driving", f"no face was found in any of the {len(found)} driving frames by the "
                          f"'{provider.name}' landmark provider, so there is no face to follow; use a video with a "
                          "visible face, or {driving_crop=full_frame}", leads=False)
    smoothed = smooth_path(fill_gaps(detected, found), tracking.smoothing)
    track = FaceTrack(detected=detected, smoothed=smoothed, face_found=found, frame_size=(int(width), int(height)))
    if track.frames_without_face:  # the one warning for it, whichever node or command tracks
        logger.warning("Face tracking: no face in driving frames %s (%d of %d; their crop follows the nearest "
                       "frames).", track.frames_without_face, len(track.frames_without_face), len(found))
    return track


def crop_tracked(driving_fhwc: torch.Tensor, track: FaceTrack, size: int, counter: FrameCounter | None = None
                 ) -> torch.Tensor:
    """IMAGE (F, H, W, 3) -> IMAGE (F, size, size, 3): each frame's tracked box cut out and resized (on the CPU,
    a frame at a time, so a long 4K clip never exists in float at once)."""
    frames_fchw = images_to_fchw(driving_fhwc, "driving video")
    crops = torch.empty(frames_fchw.shape[0], size, size, 3, dtype=torch.float32)
    for frame in range(frames_fchw.shape[0]):
        if counter is not None:
            counter.check()
        crop = crop_square_fchw(frames_fchw[frame:frame + 1], track.box(frame), size)
        crops[frame] = crop[0].clamp(0, 1).permute(1, 2, 0)
        if counter is not None:
            counter.advance(1)
    return crops


def tracking_work(frames: int) -> int:
    """Frames of work `track_face` then `crop_tracked` report."""
    return 2 * frames
