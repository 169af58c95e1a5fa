"""The local-control image: three squares (both eyes, mouth) of the aligned driving frame, black elsewhere.

Rules of the original (`extract_local_feature_from_single_img`), kept exactly:
- centres are means of the 256 px landmarks `[43:48]` (subject's left eye), `[37:42]` (right eye) and `[49:68]`
  (mouth), each rounded (half to even), clipped to [32, 223], multiplied by resolution / 256 and truncated to int;
- each square spans centre +- resolution // 8 (64 px at 512, 16 px at 128) in both axes, copied from the pose
  hint; everything else is -1 (black in [-1, 1]);
- a frame without a face gets an all -1 local hint (the original's intent; its code crashes there instead).
"""

from __future__ import annotations

import numpy as np
import torch

from .alignment import LANDMARK_GRID
from .landmarks import ibug68

PATCH_CLIP_MIN_256 = 32  # the original clips patch centres to [32, 223] on the 256 px grid ("halfedge")
PATCH_CLIP_MAX_256 = LANDMARK_GRID - 1 - PATCH_CLIP_MIN_256
PATCH_HALF_SIZE_DIVISOR = 8  # half side of each square = resolution // 8 (the original's `target_res // 8`)
BLACK = -1.0  # black in the [-1, 1] range of the hints
NO_CENTRE = -1  # patch centre reported for frames that get an all-black local hint


def patch_half_size(resolution: int) -> int:
    """Half side of each local patch square at `resolution` (64 at 512)."""
    return resolution // PATCH_HALF_SIZE_DIVISOR


def patch_centres(points_68_256: np.ndarray, face_found: np.ndarray, resolution: int) -> torch.Tensor:
    """(F, 3, 2) int64 (x, y) patch centres at `resolution`, order left eye, right eye, mouth; -1 where no face.

    points_68_256: (F, 68, 2) landmarks on the 256 px grid; face_found: (F,) bool.
    """
    points = np.asarray(points_68_256, dtype=np.float32)
    found = np.asarray(face_found, dtype=bool)
    # float32 throughout, as the original's numpy arithmetic on float32 landmarks.
    means = np.stack([points[:, part].mean(axis=1) for part in ibug68.ORIGINAL_PATCH_SLICES], axis=1)
    clipped = np.clip(np.round(means[found]), PATCH_CLIP_MIN_256, PATCH_CLIP_MAX_256)
    centres = np.full(means.shape, NO_CENTRE, dtype=np.int64)
    centres[found] = (clipped * np.float32(resolution / LANDMARK_GRID)).astype(np.int32)
    return torch.from_numpy(centres)


def patch_mask(centres: torch.Tensor, resolution: int) -> torch.Tensor:
    """(F, 1, R, R) bool, True inside the squares centred on `centres` (F, 3, 2); frames whose centres are -1
    (no face) are all False."""
    half = patch_half_size(resolution)
    grid = torch.arange(resolution, device=centres.device)
    columns = grid[None, None, :]
    rows = grid[None, :, None]
    mask = torch.zeros(centres.shape[0], resolution, resolution, dtype=torch.bool, device=centres.device)
    for part in range(centres.shape[1]):
        centre_x = centres[:, part, 0, None, None]
        centre_y = centres[:, part, 1, None, None]
        inside_x = (columns >= centre_x - half) & (columns < centre_x + half)
        inside_y = (rows >= centre_y - half) & (rows < centre_y + half)
        mask |= inside_x & inside_y
    has_face = (centres[:, :, 0] != NO_CENTRE).all(dim=1)
    return (mask & has_face[:, None, None]).unsqueeze(1)


def local_hints_fchw(pose_hints_fchw: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(F, 3, R, R) local hints: the pose hints inside the three squares, -1 elsewhere (all -1 without a face).

    pose_hints_fchw: (F, 3, R, R) aligned frames in [-1, 1]; centres: (F, 3, 2) from `patch_centres`.
    """
    resolution = pose_hints_fchw.shape[-1]
    mask = patch_mask(centres.to(pose_hints_fchw.device), resolution)
    return torch.where(mask, pose_hints_fchw, torch.full_like(pose_hints_fchw, BLACK))


def fill_missing_from_nearest(points_68: np.ndarray, face_found: np.ndarray) -> np.ndarray:
    """(F, 68, 2) landmarks where every frame without a face takes those of the nearest frame with one (the
    earlier frame on ties). Returned unchanged when no frame has a face."""
    found_indices = np.flatnonzero(face_found)
    if found_indices.size == 0:
        return points_68
    frames = np.arange(len(face_found))
    distance = np.abs(frames[:, None] - found_indices[None, :])
    nearest = found_indices[np.argmin(distance, axis=1)]
    return np.asarray(points_68)[nearest]


def landmarks_for_patches(points_68: np.ndarray, face_found: np.ndarray,
                          missing_face: str = "black") -> tuple[np.ndarray, np.ndarray]:
    """(points, usable) to place the patches with. "black": frames without a face stay unusable (their local
    hint is all black); "nearest": they borrow the nearest found frame's landmarks and count as usable (when
    no frame has a face, nothing can be borrowed)."""
    if missing_face == "nearest" and face_found.any():
        return fill_missing_from_nearest(points_68, face_found), np.ones_like(face_found)
    return points_68, face_found
