"""Choosing a face in a whole picture and cropping it: the astronaut placed into larger canvases at known places and
scales (tests/face_scenes.py), two faces side by side, a face at the border, a picture without a face."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from face_scenes import as_image, astronaut, box_of, canvas, needs_dlib, provider, true_points

from xportrait_core.controls.face_framing import (
    CENTRE_DROP,
    NoFaceInPictureError,
    crop_box_for,
    crop_face,
)
from xportrait_core.media.crop_geometry import CropBox, CropRecord, crop_square_fchw
from xportrait_core.options import DEFAULT_FACE_MARGIN, OptionError, check_face_choice

BOX_TOLERANCE = 0.02  # of the face size: the bound on the crop box


def face_size(box: tuple[float, float, float, float]) -> float:
    return max(box[2] - box[0], box[3] - box[1])


@needs_dlib
@pytest.mark.parametrize("width, height, scale, left, top", [
    (1280, 960, 1.0, 500, 300),    # the photo's own size, off-centre
    (1600, 1200, 1.5, 200, 250),   # enlarged, detected on a shrunken copy
    (1024, 768, 0.6, 600, 80),     # small face (about 56 px)
    (2400, 1600, 2.5, 700, 150),   # large picture, large face
])
def test_the_crop_box_is_the_true_face_box_framed_within_two_percent(width, height, scale, left, top):
    picture = canvas(width, height, (astronaut(scale), left, top))
    truth = box_of(true_points(scale, left, top))
    size = face_size(truth)
    result = crop_face(as_image(picture), provider(), "largest", DEFAULT_FACE_MARGIN, 256)

    assert len(result.faces) == 1
    found = result.faces[result.chosen].box
    assert np.abs(np.subtract(found, truth)).max() <= BOX_TOLERANCE * size
    centre_x, centre_y, side = crop_box_for(truth, DEFAULT_FACE_MARGIN)
    box = result.record.box
    assert abs(box.centre[0] - centre_x) <= BOX_TOLERANCE * size + 0.5  # + half a pixel of rounding to whole pixels
    assert abs(box.centre[1] - centre_y) <= BOX_TOLERANCE * size + 0.5
    assert abs(box.side - side) <= BOX_TOLERANCE * size * DEFAULT_FACE_MARGIN + 0.5
    assert result.crop.shape == (1, 256, 256, 3)
    assert result.record.picture_size == (width, height)


@needs_dlib
def test_the_crop_shows_the_head_with_the_face_in_the_upper_middle():
    scale, left, top = 1.0, 300, 200
    result = crop_face(as_image(canvas(1200, 900, (astronaut(scale), left, top))), provider(), resolution=512)
    in_crop = result.record.to_crop(np.array(box_of(true_points(scale, left, top))).reshape(2, 2))
    (x0, y0), (x1, y1) = in_crop
    assert (x1 - x0) == pytest.approx(512 / DEFAULT_FACE_MARGIN, rel=0.03)  # the face is a third of the crop
    assert (x0 + x1) / 2 == pytest.approx(256, abs=512 * 0.01)  # centred left to right
    assert (y0 + y1) / 2 == pytest.approx(256 - CENTRE_DROP * (y1 - y0), abs=512 * 0.01)  # above the middle


@needs_dlib
def test_the_crop_is_the_picture_resampled_through_the_record():
    result = crop_face(as_image(canvas(1000, 800, (astronaut(1.0), 250, 150))), provider(), resolution=256)
    box = result.record.box
    picture = as_image(canvas(1000, 800, (astronaut(1.0), 250, 150))).permute(0, 3, 1, 2)
    direct = torch.nn.functional.interpolate(picture[..., box.top:box.top + box.side, box.left:box.left + box.side],
                                             size=(256, 256), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(result.crop.permute(0, 3, 1, 2), direct.clamp(0, 1), atol=1e-6)
    affine = result.record.affine
    assert affine[0, 0] == pytest.approx(box.side / 256)
    assert affine[:, 2] == pytest.approx([box.left + 0.5 * box.side / 256 - 0.5, box.top + 0.5 * box.side / 256 - 0.5])


@needs_dlib
def test_the_shoulder_patch_the_detector_also_fires_on_is_not_a_face():
    result = crop_face(as_image(astronaut(1.0)), provider(), resolution=256)
    assert len(result.faces) == 1


# ------------------------------------------------------------------------------------------- which face
@pytest.fixture(scope="module")
def two_faces():
    """A small astronaut on the left, a larger mirrored one on the right."""
    small, large = (astronaut(0.8), 40, 200), (astronaut(1.2, mirrored=True), 700, 60)
    picture = canvas(1400, 800, small, large)
    return picture, box_of(true_points(0.8, 40, 200)), box_of(true_points(1.2, 700, 60, mirrored=True))


def _chosen_box(picture, face) -> tuple[float, ...]:
    result = crop_face(as_image(picture), provider(), face, resolution=128)
    assert len(result.faces) == 2
    return result.faces[result.chosen].box


def _is(found, truth) -> bool:
    return bool(np.abs(np.subtract(found, truth)).max() <= BOX_TOLERANCE * face_size(truth))


@needs_dlib
@pytest.mark.parametrize("face, which", [("largest", "right"), (0, "left"), ("1", "right"), ("300,500", "left"),
                                         ((1000.0, 100.0), "right")])
def test_the_face_chosen_is_the_one_asked_for(two_faces, face, which):
    picture, left_box, right_box = two_faces
    assert _is(_chosen_box(picture, face), left_box if which == "left" else right_box)


@needs_dlib
def test_a_face_number_past_the_faces_found_says_how_many_there_are(two_faces):
    with pytest.raises(OptionError, match="face 2 was asked for but the picture has 2 faces") as error:
        crop_face(as_image(two_faces[0]), provider(), 2, resolution=128)
    assert error.value.option == "face"


@pytest.mark.parametrize("value, expected", [(None, "largest"), ("", "largest"), ("Largest", "largest"), (3, 3),
                                             ("2", 2), ("120.5, 40", (120.5, 40.0)), ((7, 8), (7.0, 8.0))])
def test_face_choices_are_read_as_largest_a_number_or_a_point(value, expected):
    assert check_face_choice(value) == expected


@pytest.mark.parametrize("value", ["biggest", -1, "1,2,3", "x,y", True, "nan,3"])
def test_a_face_choice_that_is_none_of_them_is_refused(value):
    with pytest.raises(OptionError, match="must be largest, a face number"):
        check_face_choice(value)


# ----------------------------------------------------------------------------------------- at the border
@needs_dlib
def test_a_face_at_the_border_is_padded_never_shifted_or_shrunk():
    scale, left, top = 1.0, -150, -60  # the face about 30 px from the top-left corner
    picture = canvas(900, 700, (astronaut(scale), left, top))
    truth = box_of(true_points(scale, left, top))
    result = crop_face(as_image(picture), provider(), resolution=256)
    box = result.record.box
    centre_x, centre_y, side = crop_box_for(truth, DEFAULT_FACE_MARGIN)
    assert box.left < 0 and box.top < 0  # reaches past the border ...
    assert abs(box.centre[0] - centre_x) <= BOX_TOLERANCE * face_size(truth) + 0.5  # ... where the face needs it
    assert abs(box.side - side) <= BOX_TOLERANCE * face_size(truth) * DEFAULT_FACE_MARGIN + 0.5


def test_past_the_border_the_picture_continues_by_reflection_or_its_edge():
    picture = torch.arange(2 * 6 * 8, dtype=torch.float32).reshape(1, 2, 6, 8)
    reflected = crop_square_fchw(picture, CropBox(-2, -1, 5), 5)
    assert torch.equal(reflected[0, :, 1:, 2:], picture[0, :, :4, :3])  # the picture itself, unmoved
    assert torch.equal(reflected[0, :, 1:, 0], picture[0, :, :4, 2])  # column -2 mirrors column 2
    assert torch.equal(reflected[0, :, 0, 2:], picture[0, :, 1, :3])  # row -1 mirrors row 1
    edged = crop_square_fchw(picture, CropBox(-9, 0, 12), 12)  # reaches further than the picture is wide
    assert torch.equal(edged[0, :, :6, 0], picture[0, :, :, 0])
    assert torch.equal(edged[0, :, :6, 9:], picture[0, :, :, :3])


@needs_dlib
def test_a_picture_without_a_face_says_so_naming_the_input():
    with pytest.raises(NoFaceInPictureError, match="no face was found in the 640x480 picture") as error:
        crop_face(as_image(canvas(640, 480)), provider(), resolution=128, option="source")
    assert error.value.option == "source"


def test_the_record_maps_crop_pixels_to_the_picture_and_back():
    record = CropRecord(CropBox(100, 40, 300), 128, (640, 480), (150.0, 80.0, 250.0, 180.0))
    corners = np.array([[-0.5, -0.5], [127.5, 127.5]])  # the crop's outer pixel edges
    in_picture = corners @ record.affine[:, :2].T + record.affine[:, 2]
    assert in_picture == pytest.approx(np.array([[99.5, 39.5], [399.5, 339.5]]))  # the box's outer pixel edges
    assert record.to_crop(in_picture) == pytest.approx(corners)


@needs_dlib
def test_a_small_picture_is_searched_enlarged():
    truth = box_of(true_points(0.3, 40, 30))  # the photo at 154 px: the face about 28 px wide
    result = crop_face(as_image(canvas(240, 200, (astronaut(0.3), 40, 30))), provider(), resolution=128)
    assert np.abs(np.subtract(result.faces[result.chosen].box, truth)).max() <= 0.05 * face_size(truth)
