"""Paste-back: animated crops put back into the whole picture. Outside the mask the output is the picture itself
(difference 0), colour shifts of the model are matched at the mask's edge, and long clips go chunk by chunk."""
from __future__ import annotations

import pytest
import torch
from face_scenes import as_image, astronaut, canvas, needs_dlib, provider

from xportrait_core.controls.face_framing import crop_face
from xportrait_core.media.crop_geometry import CropBox, CropRecord
from xportrait_core.media.paste_back import border_colour_step, crop_region, paste_back, pasted_chunks, region_mask
from xportrait_core.media.video_io import read_video
from xportrait_core.media.video_stream import write_video_chunks

SHIFT = torch.tensor([0.08, -0.05, 0.03])  # a colour shift of the kind a diffusion model makes


@pytest.fixture(scope="module")
def scene():
    """(picture IMAGE (1, 700, 901, 3), crop record, crop IMAGE (1, 256, 256, 3)): an odd width on purpose."""
    picture = as_image(canvas(901, 700, (astronaut(1.0), 200, 100)))
    result = crop_face(picture, provider(), resolution=256)
    return picture, result.record, result.crop


def animated(crop: torch.Tensor, frames: int = 3, shift: torch.Tensor | None = None) -> torch.Tensor:
    """The crop as a model might give it back: repeated, a bright square moving over the face, colours shifted."""
    clip = crop.expand(frames, -1, -1, -1).clone()
    for index in range(frames):
        clip[index, 100 + 4 * index:130 + 4 * index, 110:140] = 1.0
    return (clip + (0 if shift is None else shift)).clamp(0, 1)


@needs_dlib
def test_outside_the_mask_the_output_is_the_picture_exactly(scene):
    picture, record, crop = scene
    out = paste_back(animated(crop, shift=SHIFT), picture, record)
    assert out.shape == (3, 700, 901, 3)
    mask = torch.zeros(700, 901)
    region = crop_region(record)
    mask[region.y0:region.y1, region.x0:region.x1] = region_mask(record, None, 3)[0]
    outside = mask == 0
    assert torch.equal(out[:, outside], picture[0][outside].expand(3, -1, -1))  # difference 0, not just small
    assert (out[:, ~outside] != picture[0][~outside]).any()  # and inside, the animation shows


@needs_dlib
def test_the_mask_is_sized_from_the_face_soft_and_inside_the_crop(scene):
    _, record, _ = scene
    mask = region_mask(record, None, 1)[0]
    x0, y0, x1, y1 = record.face_box
    region = crop_region(record)
    centre = mask[round((y0 + y1) / 2) - region.y0, round((x0 + x1) / 2) - region.x0]
    assert centre == 1
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0
    soft = ((mask > 0) & (mask < 1)).sum() / (mask > 0).sum()
    assert 0.2 < soft < 0.8  # a feathered edge, not a hard cut


@needs_dlib
def test_an_unchanged_crop_pastes_back_as_the_picture(scene):
    picture, record, crop = scene
    out = paste_back(crop.expand(2, -1, -1, -1), picture, record, match_colour=False)
    region = crop_region(record)
    cut = (out - picture)[:, region.y0:region.y1, region.x0:region.x1]
    assert cut.abs().mean() < 0.01  # only the resampling down to 256 px and back up is lost


@needs_dlib
def test_colour_shifted_by_the_model_is_matched_at_the_mask_edge(scene):
    picture, record, crop = scene
    frames = animated(crop, shift=SHIFT)
    before = border_colour_step(paste_back(frames, picture, record, match_colour=False), picture, record)
    after = border_colour_step(paste_back(frames, picture, record), picture, record)
    assert before == pytest.approx(float(SHIFT.norm()), abs=0.01)  # the shift shows as a step at the edge
    assert after < 0.01  # what is left: the shifted crop clipped at white, which no offset undoes


@needs_dlib
def test_a_mask_input_replaces_the_default(scene):
    picture, record, crop = scene
    box = record.box
    mask = torch.zeros(700, 901)
    mask[box.top + 60:box.top + 160, box.left + 80:box.left + 200] = 1.0
    out = paste_back(animated(crop), picture, record, mask)
    changed = (out != picture).any(dim=-1).any(dim=0)
    assert not changed[mask == 0].any()
    assert changed[mask == 1].float().mean() > 0.5
    crop_mask = torch.zeros(256, 256)
    crop_mask[:128] = 1.0  # the crop's upper half, given at the crop's size
    upper = paste_back(animated(crop), picture, record, crop_mask)
    changed = (upper != picture).any(dim=-1).any(dim=0)
    assert not changed[box.top + box.side // 2 + 2:].any()


@needs_dlib
def test_uint8_chunks_are_the_float_frames_rounded_and_the_picture_exact_outside(scene):
    picture, record, crop = scene
    frames = animated(crop, frames=5, shift=SHIFT)
    picture_uint8 = (picture[0] * 255).round().to(torch.uint8)
    chunks = list(pasted_chunks(frames, picture_uint8, record, as_uint8=True, chunk_frames=2))
    assert [chunk.shape[0] for chunk in chunks] == [2, 2, 1]
    whole = torch.cat(chunks)
    assert whole.dtype == torch.uint8
    reference = (paste_back(frames, picture, record) * 255).round()
    assert (whole.float() - reference).abs().max() <= 1
    region_changed = (whole != picture_uint8).any(dim=-1).any(dim=0)
    region = crop_region(record)
    assert not region_changed[:region.y0].any() and not region_changed[region.y1:].any()


def test_a_picture_other_than_the_records_is_refused():
    record = CropRecord(CropBox(10, 10, 100), 64, (200, 150), (40.0, 40.0, 80.0, 80.0))
    with pytest.raises(ValueError, match="the crop record was made from a 200x150 picture"):
        list(pasted_chunks(torch.zeros(1, 64, 64, 3), torch.zeros(150, 201, 3), record))
    with pytest.raises(ValueError, match="animate at the crop's resolution"):
        list(pasted_chunks(torch.zeros(1, 32, 32, 3), torch.zeros(150, 200, 3), record))


def test_an_odd_picture_is_written_one_edge_pixel_larger_and_whole(tmp_path):
    frames = torch.rand(3, 35, 47, 3, generator=torch.Generator().manual_seed(0))
    chunks = [(frames[start:start + 2] * 255).round().to(torch.uint8) for start in (0, 2)]
    written = write_video_chunks(tmp_path / "odd.mp4", chunks, 10.0)
    assert written == (3, 48, 36)
    back = read_video(tmp_path / "odd.mp4").frames
    assert back.shape == (3, 36, 48, 3)
    assert not list(tmp_path.glob(".*"))  # no partial file left beside it
