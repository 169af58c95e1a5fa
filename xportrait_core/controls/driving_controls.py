"""Driving-video preparation: from a driving video and a source portrait to X-Portrait's two control hints.

What the original does before sampling (`x_portrait_data_prep`), batched:

1. every frame and the source are made square (`image_fit`) and copied to 256 px uint8 for landmark detection;
2. best frame: the driving frame whose 68 landmarks are closest to the source's ("auto"), a given index, or
   None (no alignment, the original's `--best_frame -2`);
3. every driving frame, resized to the sampling resolution R, is warped by the box-to-box affine of the source
   and the best frame (`alignment`); the result in [-1, 1] is the pose hint (F, 3, R, R);
4. landmarks are detected again on 256 px copies of the aligned frames and give the local hint (F, 3, R, R):
   three squares (eyes, mouth) of the pose hint, black elsewhere (`local_patches`).

Differences from the original, all deliberate: a source image without a face is an error (the original silently
skips alignment); a driving frame without a face gets an all-black local hint and is counted (the original
crashes), or borrows the nearest good frame's landmarks with `missing_face="nearest"`; non-square inputs are
fitted as chosen (the original stretches); resizing is torch's antialiased bilinear instead of skimage's.
`patch_landmarks="transform"` skips step 4's second detection and moves the driving landmarks by the alignment
affine instead (faster with best_frame="auto", which has detected every frame already).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..media.image_fit import (DEFAULT_FIT, RELEASED_RESOLUTION, FitMode, check_resolution, fit_square_fchw,
                               images_to_fchw, resize_square_fchw, to_uint8_fhwc)
from .alignment import LANDMARK_GRID, align_frames_fchw, alignment_affine, find_best_frame, transform_points
from .frame_hooks import FrameCounter, FrameHooks, detect_landmarks
from .landmarks import FaceLandmarks, LandmarkProvider
from .local_patches import landmarks_for_patches, local_hints_fchw, patch_centres

logger = logging.getLogger(__name__)

BestFrame = Literal["auto"] | int | None
MissingFace = Literal["black", "nearest"]
PatchLandmarks = Literal["detect_aligned", "transform"]
MISSING_FACE_MODES = ("black", "nearest")
PATCH_LANDMARK_MODES = ("detect_aligned", "transform")
SAMPLING_RESOLUTION = RELEASED_RESOLUTION  # the released X-Portrait model samples at 512 px
DEFAULT_CHUNK_FRAMES = 4  # frames resized and warped at once: bounds the peak memory of long videos, and an
# interrupt is checked between chunks (a chunk of 4 takes about 0.2 s at 512 px on a 2-core CPU)


class SourceFaceNotFoundError(ValueError):
    """No face was found in the source image, so the driving video cannot be aligned to it.

    The message names the option that switches alignment off as the caller spells it: `best_frame=None` here,
    `reworded("--best-frame none")` for the command line, `reworded("best_frame 'off'")` for the node."""

    def __init__(self, provider_name: str, alignment_off: str = "best_frame=None") -> None:
        self.provider_name = provider_name
        super().__init__(
            f"No face was found in the source image (the portrait to animate) by the '{provider_name}' landmark "
            "provider, so the driving video cannot be aligned to it. Use a source with a clearly visible, roughly "
            f"frontal face (at least about a fifth of the image wide), or switch alignment off ({alignment_off}) "
            "for driving frames that are already aligned.")

    def reworded(self, alignment_off: str) -> "SourceFaceNotFoundError":
        return SourceFaceNotFoundError(self.provider_name, alignment_off)


@dataclass(frozen=True)
class DrivingControls:
    """The control hints for sampling and what was measured on the way.

    pose_hints:          (F, 3, R, R) float32 in [-1, 1], the aligned driving frames.
    local_hints:         (F, 3, R, R) float32 in [-1, 1], eye and mouth squares of the pose hints, -1 elsewhere.
    source_image:        (1, 3, R, R) float32 in [-1, 1], the source fitted like the driving video; None without one.
    best_frame:          driving frame the alignment was computed from; None when frames were not aligned.
    affine_256:          (2, 3) float64 driving -> source map on the 256 px landmark grid; None when not aligned.
    affine:              (2, 3) float64, the same map in pixels of the R grid (the one applied to the frames).
    face_found:          (F,) bool, a face was detected on the frame the local patches were measured on.
    patch_centres:       (F, 3, 2) int64 (x, y) at R: left eye, right eye, mouth; -1 for all-black local hints.
    patch_landmarks_256: (F, 68, 2) float32 landmarks the centres came from (NaN where none was used).
    """

    pose_hints: torch.Tensor
    local_hints: torch.Tensor
    source_image: torch.Tensor | None
    best_frame: int | None
    affine_256: torch.Tensor | None
    affine: torch.Tensor | None
    face_found: torch.Tensor
    patch_centres: torch.Tensor
    patch_landmarks_256: np.ndarray

    @property
    def resolution(self) -> int:
        return int(self.pose_hints.shape[-1])

    @property
    def aligned(self) -> bool:
        return self.affine is not None

    @property
    def frames_without_face(self) -> int:
        return int((~self.face_found).sum())


def _check_options(resolution: int, best_frame: BestFrame, missing_face: str, patch_landmarks: str) -> None:
    check_resolution(resolution)
    if not (best_frame is None or best_frame == "auto" or (isinstance(best_frame, int) and best_frame >= 0)):
        raise ValueError(f'best_frame must be "auto", a frame index >= 0, or None (no alignment); got {best_frame!r}.')
    if missing_face not in MISSING_FACE_MODES:
        raise ValueError(f"missing_face must be one of {MISSING_FACE_MODES}; got {missing_face!r}.")
    if patch_landmarks not in PATCH_LANDMARK_MODES:
        raise ValueError(f"patch_landmarks must be one of {PATCH_LANDMARK_MODES}; got {patch_landmarks!r}.")


def _landmark_copies(frames_fchw: torch.Tensor, device: torch.device, chunk: int) -> np.ndarray:
    """(F, 3, H, W) in [0, 1] -> (F, 256, 256, 3) uint8, the copies landmarks are detected on."""
    copies = [
        to_uint8_fhwc(resize_square_fchw(frames_fchw[start : start + chunk].to(device, torch.float32), LANDMARK_GRID))
        for start in range(0, frames_fchw.shape[0], chunk)
    ]
    return np.concatenate(copies, axis=0)


def _source_landmarks(source_fchw: torch.Tensor, provider: LandmarkProvider, device: torch.device,
                      counter: FrameCounter) -> np.ndarray:
    found = detect_landmarks(provider, _landmark_copies(source_fchw, device, 1), counter)
    if not found.face_found[0]:
        raise SourceFaceNotFoundError(provider.name)
    return found.points_68[0]


@dataclass(frozen=True)
class _AlignmentChoice:
    best_frame: int | None  # None: alignment off, or impossible (no face in the chosen frame, as the original)
    source_points_256: np.ndarray | None
    best_points_256: np.ndarray | None
    driving_landmarks: FaceLandmarks | None  # every driving frame's, when "auto" detected them


def _choose_alignment(
    driving_fchw: torch.Tensor,
    source_fchw: torch.Tensor | None,
    provider: LandmarkProvider,
    best_frame: BestFrame,
    device: torch.device,
    chunk_frames: int,
    counter: FrameCounter,
) -> _AlignmentChoice:
    if best_frame is None:
        return _AlignmentChoice(None, None, None, None)
    if source_fchw is None:
        raise ValueError("Aligning the driving video needs the source image; pass it, or set best_frame=None.")
    frame_count = driving_fchw.shape[0]
    if best_frame != "auto" and best_frame >= frame_count:
        raise ValueError(
            f"best_frame is {best_frame}, but the driving video has {frame_count} frames (0..{frame_count - 1})."
        )
    source_points = _source_landmarks(source_fchw, provider, device, counter)
    if best_frame == "auto":
        driving = detect_landmarks(provider, _landmark_copies(driving_fchw, device, chunk_frames), counter)
        chosen = find_best_frame(source_points, driving.points_68, driving.face_found)
        if chosen is None:
            logger.warning("No face found in any driving frame: the driving video is not aligned to the source.")
            return _AlignmentChoice(None, source_points, None, driving)
        return _AlignmentChoice(chosen, source_points, driving.points_68[chosen], driving)
    one = detect_landmarks(provider, _landmark_copies(driving_fchw[best_frame : best_frame + 1], device, 1), counter)
    if not one.face_found[0]:
        logger.warning("No face found in best frame %d: the driving video is not aligned to the source.", best_frame)
        return _AlignmentChoice(None, source_points, None, None)
    return _AlignmentChoice(best_frame, source_points, one.points_68[0], None)


def _aligned_pose_hints(
    driving_fchw: torch.Tensor,
    affine: torch.Tensor | None,
    resolution: int,
    device: torch.device,
    chunk_frames: int,
    keep_landmark_copies: bool,
    counter: FrameCounter,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """(F, 3, R, R) pose hints in [-1, 1], and (F, 256, 256, 3) uint8 copies of the aligned frames if asked."""
    frame_count = driving_fchw.shape[0]
    pose_hints = torch.empty(frame_count, 3, resolution, resolution, dtype=torch.float32, device=device)
    copies = []
    for start in range(0, frame_count, chunk_frames):
        counter.check()
        frames = resize_square_fchw(driving_fchw[start : start + chunk_frames].to(device, torch.float32), resolution)
        if affine is not None:
            frames = align_frames_fchw(frames, affine)
        pose_hints[start : start + frames.shape[0]] = frames * 2 - 1
        if keep_landmark_copies:
            # The original detects on a 256 px uint8 copy of the aligned [0, 1] frame.
            copies.append(to_uint8_fhwc(resize_square_fchw(frames, LANDMARK_GRID)))
        counter.advance(frames.shape[0])
    return pose_hints, (np.concatenate(copies, axis=0) if keep_landmark_copies else None)


def local_hints_in_chunks(pose_hints_fchw: torch.Tensor, centres: torch.Tensor, chunk_frames: int,
                          counter: FrameCounter) -> torch.Tensor:
    """`local_hints_fchw` over chunks of frames (peak memory), checking for an interrupt before each chunk."""
    local_hints = torch.empty_like(pose_hints_fchw)
    for start in range(0, pose_hints_fchw.shape[0], chunk_frames):
        counter.check()
        stop = start + chunk_frames
        local_hints[start:stop] = local_hints_fchw(pose_hints_fchw[start:stop], centres[start:stop])
        counter.advance(local_hints[start:stop].shape[0])
    return local_hints


def _frames_of_work(frame_count: int, best_frame: BestFrame, patch_landmarks: str) -> int:
    """Frames the passes of `prepare_driving_controls` go through, for progress: landmarks of the source and of the
    driving frames (all with "auto", one for an index), alignment, patch landmarks, local hints."""
    work = 2 * frame_count  # alignment, local hints
    if best_frame is not None:
        work += 1 + (frame_count if best_frame == "auto" else 1)
    if patch_landmarks == "detect_aligned" or best_frame != "auto":
        work += frame_count  # a detection pass of its own for the patch landmarks
    return work


def prepare_driving_controls(
    driving_fhwc: torch.Tensor,
    source_hwc: torch.Tensor | None,
    provider: LandmarkProvider,
    resolution: int = SAMPLING_RESOLUTION,
    best_frame: BestFrame = "auto",
    missing_face: MissingFace = "black",
    fit: FitMode = DEFAULT_FIT,
    patch_landmarks: PatchLandmarks = "detect_aligned",
    device: torch.device | str | None = None,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    hooks: FrameHooks | None = None,
) -> DrivingControls:
    """Pose and local hints for X-Portrait from a driving video and a source portrait.

    driving_fhwc: ComfyUI IMAGE (F, H, W, 3) float in [0, 1]. source_hwc: (1, H, W, 3) or (H, W, 3), or None
    when best_frame is None. provider: any `LandmarkProvider` (default choice: `DlibLandmarkProvider`).
    resolution: R of the hints (512 for the released model). best_frame: "auto", an index, or None (no alignment).
    missing_face: "black" (all-black local hint, the original's intent) or "nearest" (landmarks of the nearest
    frame with a face). fit: "center_crop", "pad" or "resize" (see `image_fit`). patch_landmarks: see module doc.
    device: where resizing and warping run (and the hints live); None = CUDA when available, else CPU.
    Frames already aligned elsewhere only need best_frame=None: the pose hints are then the fitted frames.
    hooks: progress after every frame or group of frames, over all passes (`frame_hooks`); its interrupt check
    runs before each and stops with `ControlsInterrupted`.
    """
    _check_options(resolution, best_frame, missing_face, patch_landmarks)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    driving_fchw = fit_square_fchw(images_to_fchw(driving_fhwc, "driving video"), fit)
    source_fchw = None if source_hwc is None else fit_square_fchw(images_to_fchw(source_hwc, "source image"), fit)
    if source_fchw is not None and source_fchw.shape[0] != 1:
        raise ValueError(f"The source image must be a single image; got {source_fchw.shape[0]} frames.")

    frame_count = driving_fchw.shape[0]
    counter = FrameCounter(hooks, _frames_of_work(frame_count, best_frame, patch_landmarks))
    choice = _choose_alignment(driving_fchw, source_fchw, provider, best_frame, device, chunk_frames, counter)
    affine_256 = affine = None
    if choice.best_frame is not None:
        affine_256 = alignment_affine(choice.source_points_256, choice.best_points_256, LANDMARK_GRID)
        affine = alignment_affine(choice.source_points_256, choice.best_points_256, resolution)

    pose_hints, aligned_copies = _aligned_pose_hints(
        driving_fchw, affine, resolution, device, chunk_frames, patch_landmarks == "detect_aligned", counter
    )
    if aligned_copies is not None:
        measured = detect_landmarks(provider, aligned_copies, counter)
        points, face_found = measured.points_68, measured.face_found
    else:
        driving_landmarks = choice.driving_landmarks
        if driving_landmarks is None:
            driving_landmarks = detect_landmarks(provider, _landmark_copies(driving_fchw, device, chunk_frames), counter)
        points, face_found = driving_landmarks.points_68, driving_landmarks.face_found
        if affine_256 is not None:
            points = transform_points(points, affine_256)

    points, usable = landmarks_for_patches(points, face_found, missing_face)
    centres = patch_centres(points, usable, resolution)
    local_hints = local_hints_in_chunks(pose_hints, centres, chunk_frames, counter)

    missing = int((~face_found).sum())
    if missing:
        borrowed = missing_face == "nearest" and face_found.any()
        fallback = "nearest frame's landmarks" if borrowed else "all-black local hint"
        logger.warning("No face found in %d of %d driving frames (%s used).", missing, frame_count, fallback)
    source_image = None
    if source_fchw is not None:
        source_image = resize_square_fchw(source_fchw.to(device, torch.float32), resolution) * 2 - 1

    return DrivingControls(
        pose_hints=pose_hints,
        local_hints=local_hints,
        source_image=source_image,
        best_frame=choice.best_frame,
        affine_256=affine_256,
        affine=affine,
        face_found=torch.from_numpy(np.asarray(face_found, dtype=bool)),
        patch_centres=centres,
        patch_landmarks_256=np.where(usable[:, None, None], points, np.nan).astype(np.float32),
    )
