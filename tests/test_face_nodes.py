"""The full-picture nodes as ComfyUI calls them: Face Crop, Track Face, Paste Back, and Motion Control following the
driving face itself (the library they call is tested in test_face_framing, test_face_tracking and test_paste_back)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from face_scenes import as_image, astronaut, canvas, moving_face_clip, needs_dlib

from nodes.control_nodes import MotionControl
from nodes.errors import XPortraitInputError
from nodes.face_nodes import FaceCrop, PasteBack, TrackFace
from nodes.loader_nodes import landmark_provider
from xportrait_core.pipeline import CropRecord, FaceTracking, Framing, align_driving, images_of_hints


@pytest.fixture(scope="module")
def two_faces():
    return as_image(canvas(1000, 600, (astronaut(0.6), 40, 150), (astronaut(0.8, mirrored=True), 560, 100)))


@needs_dlib
def test_face_crop_gives_the_chosen_face_its_record_and_a_numbered_preview(two_faces):
    crop, record, preview = FaceCrop().crop(two_faces, "0", 3.0, 256)
    assert crop.shape == (1, 256, 256, 3)
    assert isinstance(record, CropRecord) and record.faces_found == 2
    assert record.box.centre[0] < 500  # face 0 is the left one
    assert preview.shape[0] == 1 and max(preview.shape[1:3]) == 768
    yellow = (preview[0, ..., 0] > 0.95) & (preview[0, ..., 1] > 0.75) & (preview[0, ..., 2] < 0.1)
    assert yellow[:, :384].sum() > 0 and yellow[:, 384:].sum() == 0  # the chosen face (left) is boxed in yellow


@needs_dlib
def test_face_crop_errors_name_the_input_at_fault(two_faces):
    with pytest.raises(XPortraitInputError, match="X-Portrait Face Crop, input 'face': must be largest, a face"):
        FaceCrop().crop(two_faces, "biggest", 3.0, 256)
    with pytest.raises(XPortraitInputError, match="X-Portrait Face Crop, input 'picture': no face was found"):
        FaceCrop().crop(as_image(canvas(300, 200)), "largest", 3.0, 256)


@needs_dlib
def test_track_face_gives_square_crops_and_marks_frames_without_a_face_red():
    path = np.stack([100 + 8.0 * np.arange(6), 60 + 2.0 * np.arange(6)], axis=1)
    clip = moving_face_clip(path, 0.6, 640, 360, blank=(4,))
    crops, preview = TrackFace().track(clip, 3.0, 2.0, 128)
    assert crops.shape == (6, 128, 128, 3)
    assert preview.shape[0] == 6
    red = (preview[..., 0] > 0.95) & (preview[..., 1] < 0.25) & (preview[..., 2] < 0.25)
    assert red.flatten(1).any(dim=1).tolist() == [False, False, False, False, True, False]


@needs_dlib
def test_motion_control_tracks_the_driving_face_when_asked(caplog):
    """driving_crop track_face: what align_driving gives with the default tracking (Track Face's defaults); frames
    without a face are named in the log; full_frame (the default) aligns the whole frames."""
    path = np.stack([60 + 30.0 * np.arange(5), 40 + 6.0 * np.arange(5)], axis=1)
    clip = moving_face_clip(path, 0.6, 640, 360, blank=(3,))
    source = as_image(astronaut(0.5))
    with caplog.at_level("WARNING"):
        tracked, best, _ = MotionControl().align(clip, source, "auto", 0, "center_crop", 128,
                                                 driving_crop="track_face")
    expected = align_driving(clip, source, landmark_provider("dlib"), Framing(128, "center_crop"), "auto",
                             tracking=FaceTracking())
    assert torch.equal(tracked, images_of_hints(expected.pose_hints)) and best == expected.best_frame
    assert "no face in driving frames [3]" in caplog.text
    whole, _, _ = MotionControl().align(clip, source, "auto", 0, "center_crop", 128)
    assert whole.shape == tracked.shape and not torch.equal(whole, tracked)


def test_motion_control_names_driving_crop_when_it_is_unknown():
    with pytest.raises(XPortraitInputError, match="X-Portrait Motion Control, input 'driving_crop': .*track_face"):
        MotionControl().align(torch.zeros(2, 64, 64, 3), torch.zeros(1, 64, 64, 3), "auto", 0, "center_crop", 64,
                              driving_crop="follow")


@needs_dlib
def test_paste_back_gives_the_picture_size_and_keeps_it_outside_the_head(two_faces):
    crop, record, _ = FaceCrop().crop(two_faces, "largest", 3.0, 128)
    animated = (crop.expand(4, -1, -1, -1) * 0.5).contiguous()
    (pasted,) = PasteBack().paste(animated, two_faces, record)
    assert pasted.shape == (4, 600, 1000, 3)
    assert torch.equal(pasted[:, :, :400], two_faces[:, :, :400].expand(4, -1, -1, -1))  # the other face: untouched
    assert not torch.equal(pasted, two_faces.expand(4, -1, -1, -1))


@needs_dlib
def test_paste_back_refuses_frames_of_another_size_naming_the_input(two_faces):
    _, record, _ = FaceCrop().crop(two_faces, "largest", 3.0, 128)
    with pytest.raises(XPortraitInputError, match="X-Portrait Paste Back, input 'frames': .*animate at the crop's"):
        PasteBack().paste(torch.zeros(2, 256, 256, 3), two_faces, record)
