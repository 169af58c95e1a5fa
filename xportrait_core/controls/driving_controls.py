"""Driving-video preparation: from a driving video and a source portrait to X-Portrait's two control hints, in the
two calls the original's `x_portrait_data_prep` makes one after the other (batched here):

`align_driving` (the pose hint):
1. every frame and the source are made square (`image_fit.Framing`) and copied to 256 px uint8 for landmarks;
2. best frame: the driving frame whose 68 landmarks are closest to the source's ("auto"), a given index, or "off"
   (no alignment, the original's `--best_frame -2`); only the landmarks that choice needs are detected;
3. every driving frame, resized to the sampling resolution R, is warped by the box-to-box affine of the source
   and the best frame (`alignment`); the result in [-1, 1] is the pose hint (F, 3, R, R).

`local_patches` (the local hint): landmarks are detected again on 256 px copies of the aligned frames and give three
squares (eyes, mouth) of the pose hint, black elsewhere (`local_patches`). `local_patches_from_landmarks` skips that
second detection and takes landmarks moved by the alignment affine instead (faster after "auto", which detected
every driving frame already).

Differences from the original, all deliberate: a source image without a face is an error (the original silently
skips alignment); a driving frame without a face gets an all-black local hint and is counted (the original
crashes), or borrows the nearest good frame's landmarks with missing_face "nearest"; non-square inputs are fitted
as chosen (the original stretches); resizing is torch's antialiased bilinear instead of skimage's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..media.image_fit import (
    Framing,
    fit_square_fchw,
    images_to_fchw,
    note_upsampling,
    resize_square_fchw,
    to_uint8_fhwc,
)
from ..options import BEST_FRAME_OFF, MissingFace, OptionError
from .alignment import LANDMARK_GRID, align_frames_fchw, alignment_affine, find_best_frame, transform_points
from .face_tracking import FaceTrack, FaceTracking, crop_tracked, track_face, tracking_work
from .frame_hooks import FrameCounter, detect_landmarks
from .landmarks import FaceLandmarks, LandmarkProvider
from .local_patches import landmarks_for_patches, local_hints_fchw, patch_centres

logger = logging.getLogger(__name__)

BestFrame = str | int  # "auto", "off" or a frame index (`options.check_best_frame`)
DEFAULT_CHUNK_FRAMES = 4  # frames resized and warped at once: bounds the peak memory of long videos, and an
# interrupt is checked between chunks


class SourceFaceNotFoundError(OptionError):
    """No face was found in the source image, so the driving video cannot be aligned to it."""

    def __init__(self, provider_name: str) -> None:
        super().__init__(
            "source",
            f"No face was found in the source image (the portrait to animate) by the '{provider_name}' landmark "
            "provider, so the driving video cannot be aligned to it. Use a source with a clearly visible, roughly "
            "frontal face (at least about a fifth of the image wide), or switch alignment off "
            f"({{best_frame={BEST_FRAME_OFF}}}) for driving frames that are already aligned.", leads=False)


class DrivingFaceNotFoundError(OptionError):
    """No face was found in any frame of the driving video: the result would follow no motion."""

    def __init__(self, provider_name: str, frames: int) -> None:
        super().__init__(
            "driving",
            f"No face was found in any of the driving video's {frames} frames by the '{provider_name}' "
            "provider, so the animation would follow no motion. Use a driving video that shows a clearly visible, "
            "roughly frontal face (at least about a fifth of the frame wide) in most frames.", leads=False)


@dataclass(frozen=True)
class AlignedDriving:
    """The pose control and how it was made.

    pose_hints:       (F, 3, R, R) float32 in [-1, 1], the aligned driving frames.
    source_image:     (1, 3, R, R) float32 in [-1, 1], the source fitted like the driving video; None without one.
    best_frame:       driving frame the alignment was computed from; None when frames were not aligned.
    affine_256:       (2, 3) float64 driving -> source map on the 256 px landmark grid; None when not aligned.
    affine:           (2, 3) float64, the same map in pixels of the R grid (the one applied to the frames).
    driving_landmarks: every driving frame's landmarks on the 256 px grid of the unaligned frames, when the best
                      frame was chosen "auto" (None otherwise: they were not detected).
    track:            the face followed through a full-frame video (`face_tracking`), whose crops were aligned; None
                      when the frames were used whole.
    """

    pose_hints: torch.Tensor
    source_image: torch.Tensor | None
    best_frame: int | None
    affine_256: torch.Tensor | None
    affine: torch.Tensor | None
    driving_landmarks: FaceLandmarks | None
    track: FaceTrack | None = None

    @property
    def resolution(self) -> int:
        return int(self.pose_hints.shape[-1])

    @property
    def aligned(self) -> bool:
        return self.affine is not None


@dataclass(frozen=True)
class LocalPatches:
    """The local control and what it was measured on.

    local_hints:   (F, 3, R, R) float32 in [-1, 1], eye and mouth squares of the pose hints, -1 elsewhere.
    face_found:    (F,) bool, a face was detected on the frame the patches were measured on.
    centres:       (F, 3, 2) int64 (x, y) at R: left eye, right eye, mouth; -1 for all-black local hints.
    landmarks_256: (F, 68, 2) float32 landmarks the centres came from (NaN where none was used).
    """

    local_hints: torch.Tensor
    face_found: torch.Tensor
    centres: torch.Tensor
    landmarks_256: np.ndarray

    @property
    def frames_without_face(self) -> int:
        return int((~self.face_found).sum())


def alignment_work(frames: int, best_frame: BestFrame, tracked: bool = False) -> int:
    """Frames of work `align_driving` reports: the face tracking when asked, the landmark detections its best frame
    needs, then the warping."""
    tracking = tracking_work(frames) if tracked else 0
    if best_frame == BEST_FRAME_OFF:
        return tracking + frames
    return tracking + frames + 1 + (frames if best_frame == "auto" else 1)


def patches_work(frames: int, detect: bool) -> int:
    """Frames of work of `local_patches` (detect True) or `local_patches_from_landmarks`."""
    return 2 * frames if detect else frames


def _landmark_copies(frames_fchw: torch.Tensor, device: torch.device, chunk: int) -> np.ndarray:
    """(F, 3, H, W) in [0, 1] -> (F, 256, 256, 3) uint8, the copies landmarks are detected on."""
    copies = [
        to_uint8_fhwc(resize_square_fchw(frames_fchw[start : start + chunk].to(device, torch.float32), LANDMARK_GRID))
        for start in range(0, frames_fchw.shape[0], chunk)
    ]
    return np.concatenate(copies, axis=0)


def _best_frame_landmarks(driving_fchw: torch.Tensor, source_fchw: torch.Tensor, provider: LandmarkProvider,
                          best_frame: BestFrame, device: torch.device, chunk_frames: int, counter: FrameCounter
                          ) -> tuple[int | None, np.ndarray, np.ndarray | None, FaceLandmarks | None]:
    """(best frame or None, source points, best frame's points, every driving frame's landmarks if detected)."""
    found = detect_landmarks(provider, _landmark_copies(source_fchw, device, 1), counter)
    if not found.face_found[0]:
        raise SourceFaceNotFoundError(provider.name)
    source_points = found.points_68[0]
    if best_frame == "auto":
        driving = detect_landmarks(provider, _landmark_copies(driving_fchw, device, chunk_frames), counter)
        chosen = find_best_frame(source_points, driving.points_68, driving.face_found)
        if chosen is None:
            raise DrivingFaceNotFoundError(provider.name, len(driving.face_found))
        return chosen, source_points, driving.points_68[chosen], driving
    assert isinstance(best_frame, int)
    one = detect_landmarks(provider, _landmark_copies(driving_fchw[best_frame : best_frame + 1], device, 1), counter)
    if not one.face_found[0]:
        logger.warning("No face found in best frame %d: the driving video is not aligned to the source.", best_frame)
        return None, source_points, None, None
    return best_frame, source_points, one.points_68[0], None


def align_driving(driving_fhwc: torch.Tensor, source_hwc: torch.Tensor | None, provider: LandmarkProvider,
                  framing: Framing, best_frame: BestFrame, *, device: torch.device, counter: FrameCounter,
                  chunk_frames: int = DEFAULT_CHUNK_FRAMES, tracking: FaceTracking | None = None) -> AlignedDriving:
    """The pose hints of a driving video aligned to a source portrait (steps 1-3 of the module docstring).

    driving_fhwc: ComfyUI IMAGE (F, H, W, 3) float in [0, 1]. source_hwc: (1, H, W, 3) or (H, W, 3); may be None only
    with best_frame "off". best_frame: checked by the caller (`options.check_best_frame`). device: where resizing and
    warping run (and the hints live). counter: progress over `alignment_work` frames, and the interrupt check before
    each frame or group of frames. tracking: follow the face of a full-frame video and align its square crops.
    """
    track = None
    if tracking is not None:
        track = track_face(driving_fhwc, provider, tracking, counter)
        driving_fhwc = crop_tracked(driving_fhwc, track, framing.resolution, counter)
    driving_fchw = fit_square_fchw(images_to_fchw(driving_fhwc, "driving video"), framing.fit)
    frame_count = driving_fchw.shape[0]
    # Its frames are resized for the landmarks (when aligned) and to the resolution, chunk by chunk: said once here.
    note_upsampling(driving_fchw, framing.resolution if best_frame == BEST_FRAME_OFF
                    else max(framing.resolution, LANDMARK_GRID), "driving video")
    if isinstance(best_frame, int) and best_frame >= frame_count:
        raise OptionError("best_frame", f"frame {best_frame} is past the end of the driving video, which has "
                          f"{frame_count} frames (0..{frame_count - 1})")
    source_fchw = None
    if source_hwc is not None:
        source_fchw = fit_square_fchw(images_to_fchw(source_hwc, "source image"), framing.fit)
        if source_fchw.shape[0] != 1:
            raise OptionError("source", f"must be a single image; got {source_fchw.shape[0]}")
    chosen, driving_landmarks, affine_256, affine = None, None, None, None
    if best_frame != BEST_FRAME_OFF:
        if source_fchw is None:
            raise OptionError("source", "is needed to align the driving video to it; give it, or set {best_frame} "
                              f"{BEST_FRAME_OFF}")
        chosen, source_points, best_points, driving_landmarks = _best_frame_landmarks(
            driving_fchw, source_fchw, provider, best_frame, device, chunk_frames, counter)
        if chosen is not None:
            assert best_points is not None, "a chosen best frame comes with its landmarks"
            affine_256 = alignment_affine(source_points, best_points, LANDMARK_GRID)
            affine = alignment_affine(source_points, best_points, framing.resolution)

    pose_hints = torch.empty(frame_count, 3, framing.resolution, framing.resolution, dtype=torch.float32,
                             device=device)
    for start in range(0, frame_count, chunk_frames):
        counter.check()
        frames = resize_square_fchw(driving_fchw[start:start + chunk_frames].to(device, torch.float32),
                                    framing.resolution)
        if affine is not None:
            frames = align_frames_fchw(frames, affine)
        pose_hints[start:start + frames.shape[0]] = frames * 2 - 1
        counter.advance(frames.shape[0])
    source_image = None
    if source_fchw is not None:
        source_image = resize_square_fchw(source_fchw.to(device, torch.float32), framing.resolution) * 2 - 1
    return AlignedDriving(pose_hints=pose_hints, source_image=source_image, best_frame=chosen, affine_256=affine_256,
                          affine=affine, driving_landmarks=driving_landmarks, track=track)


def local_patches(pose_hints_fchw: torch.Tensor, provider: LandmarkProvider, missing_face: MissingFace, *,
                  counter: FrameCounter, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> LocalPatches:
    """The local hints of aligned frames (F, 3, R, R) in [-1, 1]: landmarks are detected on their 256 px uint8 copies,
    as the original does. counter: progress over `patches_work(F, detect=True)` frames."""
    note_upsampling(pose_hints_fchw, LANDMARK_GRID, "local patches")  # once here, not per chunk
    copies = np.concatenate([
        to_uint8_fhwc(resize_square_fchw((pose_hints_fchw[start:start + chunk_frames].float() + 1) / 2,
                                         LANDMARK_GRID))
        for start in range(0, pose_hints_fchw.shape[0], chunk_frames)])
    return local_patches_from_landmarks(pose_hints_fchw, detect_landmarks(provider, copies, counter), missing_face,
                                        counter=counter, chunk_frames=chunk_frames, provider_name=provider.name)


def local_patches_from_landmarks(pose_hints_fchw: torch.Tensor, landmarks_256: FaceLandmarks,
                                 missing_face: MissingFace, *, counter: FrameCounter,
                                 chunk_frames: int = DEFAULT_CHUNK_FRAMES, provider_name: str = "landmark"
                                 ) -> LocalPatches:
    """The local hints of aligned frames from their landmarks on the 256 px grid (detected on them, or moved there
    by the alignment affine). counter: progress over `patches_work(F, detect=False)` frames. A video without a face
    in any frame is a DrivingFaceNotFoundError (`provider_name` names the detector in it)."""
    frames, resolution = pose_hints_fchw.shape[0], pose_hints_fchw.shape[-1]
    face_found = np.asarray(landmarks_256.face_found, dtype=bool)
    if not face_found.any():
        raise DrivingFaceNotFoundError(provider_name, frames)
    points, usable = landmarks_for_patches(landmarks_256.points_68, face_found, missing_face)
    centres = patch_centres(points, usable, resolution)
    local_hints = torch.empty_like(pose_hints_fchw)
    for start in range(0, frames, chunk_frames):
        counter.check()
        stop = start + chunk_frames
        local_hints[start:stop] = local_hints_fchw(pose_hints_fchw[start:stop], centres[start:stop])
        counter.advance(local_hints[start:stop].shape[0])
    missing = int((~face_found).sum())
    if missing:
        fallback = "nearest frame's landmarks" if missing_face == "nearest" and face_found.any() else \
            "all-black local hint"
        logger.warning("No face found in %d of %d driving frames (%s used).", missing, frames, fallback)
    return LocalPatches(local_hints=local_hints, face_found=torch.from_numpy(face_found), centres=centres,
                        landmarks_256=np.where(usable[:, None, None], points, np.nan).astype(np.float32))


def moved_landmarks(aligned: AlignedDriving) -> FaceLandmarks | None:
    """The driving landmarks `align_driving` detected ("auto"), moved by its affine onto the aligned frames' 256 px
    grid; None when it detected none."""
    found = aligned.driving_landmarks
    if found is None:
        return None
    if aligned.affine_256 is None:
        return found
    return FaceLandmarks(points_68=transform_points(found.points_68, aligned.affine_256).astype(np.float32),
                         face_found=found.face_found, face_boxes=found.face_boxes)
