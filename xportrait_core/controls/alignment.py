"""Aligning the driving video to the source face: best-frame search and the original's three-corner affine.

The original (bytedance/X-Portrait, `adjust_driving_video_to_src_image`) works on landmarks detected on 256 px
copies. For the source and for one driving frame (the "best frame") it takes the landmark MEAN as the centre and
half the extent of the landmark bounding box, builds the corners top-left, top-right and bottom-left of both
boxes, and warps every driving frame with the affine map sending the driving corners onto the source corners
(cv2.warpAffine: bilinear, constant black border). Because both boxes are axis-aligned the map is a per-axis
scale plus a translation: it matches face position and size, never rotation.

Resolution: the original warps its 512 px frames with the corners times 2, a factor it hard-codes. We scale the
corners by `resolution / 256`, which is that factor at 512 and keeps the same geometry at any other resolution
(e.g. 128 for the tiny test model).
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.transform import warp_affine

LANDMARK_GRID = 256  # the original detects landmarks and builds the alignment on 256 px copies


def landmark_box_corners(points_68: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks -> (3, 2) float32 corners top-left, top-right, bottom-left of the box centred on the
    landmark mean with half the landmark bounding-box extent (float32, as the original builds them)."""
    points = np.asarray(points_68, dtype=np.float32)
    centre = points.mean(axis=0)
    half_extent = (points.max(axis=0) - points.min(axis=0)) * 0.5
    corners = np.array(
        [
            [centre[0] - half_extent[0], centre[1] - half_extent[1]],
            [centre[0] + half_extent[0], centre[1] - half_extent[1]],
            [centre[0] - half_extent[0], centre[1] + half_extent[1]],
        ]
    )
    return corners.astype(np.float32)


def three_point_affine(from_points: np.ndarray, to_points: np.ndarray) -> torch.Tensor:
    """(2, 3) float64 affine map sending the three `from_points` (3, 2) onto `to_points` (3, 2)
    (what cv2.getAffineTransform computes)."""
    homogeneous = torch.ones(3, 3, dtype=torch.float64)
    homogeneous[:, :2] = torch.from_numpy(np.asarray(from_points, dtype=np.float64))
    targets = torch.from_numpy(np.asarray(to_points, dtype=np.float64))
    return torch.linalg.solve(homogeneous, targets).T.contiguous()


def alignment_affine(
    source_points_256: np.ndarray, driving_points_256: np.ndarray, resolution: int = LANDMARK_GRID
) -> torch.Tensor:
    """(2, 3) float64 affine, in pixels of a `resolution` grid, that moves the driving face box onto the source's.

    source_points_256, driving_points_256: (68, 2) landmarks on the 256 px grid (source image and best frame).
    """
    source_corners = landmark_box_corners(source_points_256)
    driving_corners = landmark_box_corners(driving_points_256)
    for name, corners in (("source image", source_corners), ("best driving frame", driving_corners)):
        if not np.all(np.isfinite(corners)) or corners[1, 0] <= corners[0, 0] or corners[2, 1] <= corners[0, 1]:
            raise ValueError(
                f"The landmarks of the {name} do not span a box (corners {corners.tolist()}); "
                "alignment needs a detected face. Choose another best frame or disable alignment."
            )
    # float32 scaling of float32 corners, as the original's `dst_point[:3] * 2`.
    scale = np.float32(resolution / LANDMARK_GRID)
    return three_point_affine(driving_corners * scale, source_corners * scale)


def find_best_frame(
    source_points_256: np.ndarray, driving_points_256: np.ndarray, face_found: np.ndarray
) -> int | None:
    """Index of the driving frame whose 68 landmarks are closest to the source's (sum of absolute differences over
    all points, the first on ties), among frames with a face; None when no frame has one.

    source_points_256: (68, 2); driving_points_256: (F, 68, 2); face_found: (F,) bool.
    """
    if not np.any(face_found):
        return None
    distances = np.abs(np.asarray(driving_points_256, np.float64) - np.asarray(source_points_256, np.float64))
    distances = distances.sum(axis=(1, 2))
    distances[~np.asarray(face_found, bool)] = np.inf
    return int(np.argmin(distances))


def align_frames_fchw(frames_fchw: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Warps (F, C, R, R) frames by one (2, 3) affine given in pixels of that grid (pixel centres at integer
    coordinates, as cv2); bilinear, zeros outside the frame (cv2.warpAffine's default constant black border)."""
    batch_affine = affine.to(device=frames_fchw.device, dtype=frames_fchw.dtype).expand(frames_fchw.shape[0], 2, 3)
    size = (frames_fchw.shape[-2], frames_fchw.shape[-1])
    return warp_affine(frames_fchw, batch_affine, dsize=size, mode="bilinear", padding_mode="zeros", align_corners=True)


def transform_points(points: np.ndarray, affine: torch.Tensor) -> np.ndarray:
    """Applies a (2, 3) affine to (..., 2) points; returns float32 points of the same shape."""
    matrix = affine.detach().cpu().numpy().astype(np.float64)
    moved = np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return moved.astype(np.float32)
