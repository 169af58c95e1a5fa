"""animate --face/--paste-back/--driving-crop: a face chosen in a whole picture, animated with a full-frame driving
video whose face is followed, and pasted back into the picture at its own (odd) size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from face_scenes import astronaut, canvas, moving_face_clip, needs_dlib
from PIL import Image

from xportrait_core.cli.main import main
from xportrait_core.media.video_io import read_video, write_video

PICTURE_SIZE = (701, 480)  # an odd width: the video gets one more column


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    picture = folder / "painting.png"
    Image.fromarray(canvas(*PICTURE_SIZE, (astronaut(0.7), 300, 60))).save(picture)
    path = np.stack([60 + 6.0 * np.arange(16), 20 + 3.0 * np.arange(16)], axis=1)
    driving = folder / "phone_video.mp4"
    write_video(driving, moving_face_clip(path, 0.6, 640, 360), fps=10)
    return picture, driving


def animate(checkpoint, picture, driving, out, *extra):
    return main(["animate", str(checkpoint), str(picture), str(driving), str(out), "--resolution", "128",
                 "--steps", "1", "--device", "cpu", "--windows-per-batch", "2", *extra])


@needs_dlib
def test_paste_back_writes_the_picture_size_and_leaves_the_rest_of_the_picture(tmp_path, tiny_checkpoint, inputs,
                                                                                capsys):
    picture, driving = inputs
    out = tmp_path / "full.mp4"
    code = animate(tiny_checkpoint, picture, driving, out, "--paste-back", "--driving-crop", "track_face")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    frames = read_video(out).frames
    assert frames.shape == (16, 480, 702, 3)  # 701 wide: one column repeated for H.264
    original = torch.from_numpy(np.array(Image.open(picture))).float() / 255
    assert (frames[:, :, -1] - frames[:, :, -2]).abs().max() < 0.03  # the added column repeats the last (H.264)
    corners = [frames[:, :80, :120], frames[:, -80:, -121:-1]]
    expected = [original[:80, :120], original[-80:, -120:]]
    for written, truth in zip(corners, expected):
        assert (written - truth).abs().mean() < 0.01  # untouched, up to H.264
    face = frames[:, 120:220, 380:460]
    assert (face - original[120:220, 380:460]).abs().mean() > 0.05  # the random model's animation is there
    assert "face 0 of 1 found" in printed.out and "pasted back into the picture, 702x480" in printed.out


@needs_dlib
def test_a_face_number_the_picture_does_not_have_is_an_error_before_the_model(tmp_path, tiny_checkpoint, inputs,
                                                                                capsys):
    picture, driving = inputs
    assert animate(tiny_checkpoint, picture, driving, tmp_path / "x.mp4", "--face", "3") == 2
    err = capsys.readouterr().err
    assert "--face: face 3 was asked for but the picture has 1 face" in err


@needs_dlib
def test_a_picture_without_a_face_is_an_error_naming_the_source(tmp_path, tiny_checkpoint, inputs, capsys):
    blank = tmp_path / "blank.png"
    Image.fromarray(canvas(320, 240)).save(blank)
    assert animate(tiny_checkpoint, blank, inputs[1], tmp_path / "x.mp4", "--paste-back") == 2
    assert "source: no face was found in the 320x240 picture" in capsys.readouterr().err


def test_paste_back_into_a_gif_is_refused_before_any_work(tmp_path, tiny_checkpoint, inputs, capsys):
    picture, driving = inputs
    assert animate(tiny_checkpoint, picture, driving, tmp_path / "x.gif", "--paste-back") == 2
    assert "--paste-back writes the picture's size chunk by chunk, as .mp4 or .webm" in capsys.readouterr().err
