"""Bad input through the library's public calls, second round (issue 20): no silent success, OptionError-style
messages instead of errors from deep inside torch, no hang. Each case failed before its fix."""
from __future__ import annotations

import errno
import os
import threading

import numpy as np
import pytest
import torch
from test_bad_inputs_cli_scale import _decompression_bomb

from xportrait_core import pipeline
from xportrait_core.media import video_io
from xportrait_core.media.video_io import VideoReadError, VideoWriteError, read_video, write_video
from xportrait_core.options import OptionError

RESOLUTION = 128


@pytest.fixture(scope="module")
def dlib_provider():
    from xportrait_core.controls.landmarks import DlibLandmarkProvider

    return DlibLandmarkProvider()


@pytest.fixture(scope="module")
def portrait():
    from xportrait_core.cli.demo_clip import head_motion_clip

    return head_motion_clip(frames=4, size=RESOLUTION)


# ---------------------------------------------------------------------------------------- no silent success
def test_align_driving_without_a_face_in_any_frame_is_an_error(dlib_provider, portrait):
    from xportrait_core.controls.driving_controls import DrivingFaceNotFoundError

    wall = torch.full((4, RESOLUTION, RESOLUTION, 3), 0.4)
    with pytest.raises(DrivingFaceNotFoundError, match="No face was found in any of the driving video's 4 frames"):
        pipeline.align_driving(wall, portrait.source, dlib_provider, pipeline.Framing(RESOLUTION), device="cpu")


def test_local_patches_of_frames_without_any_face_is_an_error(dlib_provider):
    from xportrait_core.controls.driving_controls import DrivingFaceNotFoundError

    hints = torch.full((3, 3, RESOLUTION, RESOLUTION), -0.2)
    with pytest.raises(DrivingFaceNotFoundError, match="any of the driving video's 3 frames by the 'dlib-hog-68'"):
        pipeline.local_patches(hints, dlib_provider)


def test_write_video_refuses_nan_frames_and_writes_nothing(tmp_path):
    frames = torch.rand(3, 16, 16, 3)
    frames[1, 2, 2, 0] = float("nan")
    with pytest.raises(VideoWriteError, match=r"frames 1 hold NaN or infinite values .*finite numbers in 0\.\.1"):
        write_video(tmp_path / "out.mp4", frames, 10)
    assert list(tmp_path.iterdir()) == []


def test_write_video_refuses_0_to_255_whole_number_frames_saying_the_range(tmp_path):
    frames = torch.randint(0, 256, (3, 16, 16, 3)).float()
    with pytest.raises(VideoWriteError, match=r"whole numbers up to 255.*expects floats in the range 0\.\.1"):
        write_video(tmp_path / "out.mp4", frames, 10)
    assert list(tmp_path.iterdir()) == []


def test_write_video_still_writes_frames_that_are_all_zero_or_one(tmp_path):
    frames = torch.zeros(2, 16, 16, 3)
    frames[1] = 1.0
    write_video(tmp_path / "out.mp4", frames, 10)
    assert (tmp_path / "out.mp4").is_file()


def test_write_video_with_a_legal_245_byte_name_works(tmp_path):
    name = "é" * 120 + "x" * 1 + ".mp4"
    assert len(os.fsencode(name)) == 245
    write_video(tmp_path / name, torch.rand(2, 16, 16, 3), 10)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_write_video_into_a_missing_folder_says_so_and_does_not_blame_the_disk(tmp_path):
    with pytest.raises(VideoWriteError) as raised:
        write_video(tmp_path / "gone" / "out.mp4", torch.rand(2, 16, 16, 3), 10)
    assert "does not exist" in str(raised.value) and "disk space" not in str(raised.value)


def test_write_video_on_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video_io, "_encode", full)
    with pytest.raises(VideoWriteError, match="The disk is full"):
        write_video(tmp_path / "out.mp4", torch.rand(2, 16, 16, 3), 10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps", [0.0001, 1 / 2003])
def test_write_video_at_a_rate_too_slow_to_store_is_a_clear_error(tmp_path, fps):
    with pytest.raises(VideoWriteError, match="too slow .*the slowest rate a video can store here"):
        write_video(tmp_path / "out.mp4", torch.rand(2, 16, 16, 3), fps)


# -------------------------------------------------------------------------------------- no traceback, no hang
def test_read_video_of_a_decompression_bomb_is_a_clear_error(tmp_path):
    bomb = tmp_path / "bomb.png"
    _decompression_bomb(bomb)
    with pytest.raises(VideoReadError, match="safety limit"):
        read_video(bomb, what="source image")


def test_read_video_of_a_named_pipe_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "clip.mp4"
    os.mkfifo(pipe)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_video(pipe, what="driving video")
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome.append(error)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the reader so the thread ends
        with open(pipe, "wb"):
            pass
        pytest.fail("read_video blocked on a named pipe")
    assert isinstance(outcome[0], VideoReadError) and "not a regular file" in str(outcome[0])


def test_rgba_motion_into_local_patches_drops_the_alpha(dlib_provider, portrait):
    aligned = pipeline.align_driving(portrait.driving, portrait.source, dlib_provider, pipeline.Framing(RESOLUTION),
                                     device="cpu")
    motion = pipeline.images_of_hints(aligned.pose_hints)
    rgba = torch.cat([motion, torch.ones_like(motion[..., :1])], dim=-1)
    from_rgba = pipeline.local_patches(pipeline.hints_of_images(rgba, "motion"), dlib_provider)
    from_rgb = pipeline.local_patches(pipeline.hints_of_images(motion, "motion"), dlib_provider)
    assert torch.equal(from_rgba.local_hints, from_rgb.local_hints)


@pytest.mark.parametrize("call, expected", [
    (lambda p, s: pipeline.align_driving(torch.rand(2, 64, 64, 3, device="meta"), s, p, pipeline.Framing(RESOLUTION)),
     "driving video is a meta tensor"),
    (lambda p, s: pipeline.reference_images(torch.rand(1, 64, 64, 3, device="meta"), [], pipeline.Framing(RESOLUTION)),
     "source image is a meta tensor"),
    (lambda p, s: pipeline.local_patches(torch.rand(2, 3, 64, 64, device="meta"), p),
     r"motion: is a meta tensor \(2, 3, 64, 64\)"),
    (lambda p, s: pipeline.local_patches(torch.rand(2, 5, 64, 64), p), "motion: must have 3 channels"),
    (lambda p, s: pipeline.local_patches(torch.rand(2, 3, 64, 48), p), "motion: must be square frames"),
    (lambda p, s: pipeline.local_patches(torch.rand(3, 64, 64), p), r"motion: must be shaped \(F, 3, R, R\)"),
])
def test_public_calls_given_tensors_they_cannot_use_say_which_and_why(dlib_provider, portrait, call, expected):
    with pytest.raises(ValueError, match=expected):
        call(dlib_provider, portrait.source)


def test_decode_to_images_given_meta_or_three_channel_latents_names_the_latents():
    from xportrait_core.model.tiny_model import build_random_model

    model = build_random_model(seed=0)
    with pytest.raises(OptionError, match="latents: is a meta tensor"):
        pipeline.decode_to_images(model, torch.rand(1, 4, 8, 8, device="meta"))
    with pytest.raises(OptionError, match=r"latents: must have 4 channels, \(F, 4, h, w\); got 3"):
        pipeline.decode_to_images(model, torch.rand(1, 3, 8, 8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that cannot use CUDA")
def test_device_cuda_on_a_cpu_only_torch_is_an_option_error(dlib_provider, portrait, tmp_path):
    with pytest.raises(OptionError, match="device: 'cuda' cannot be used: .*use 'cpu'"):
        pipeline.align_driving(portrait.driving, portrait.source, dlib_provider, pipeline.Framing(RESOLUTION),
                               device="cuda")
    with pytest.raises(OptionError, match="device: 'cuda' cannot be used"):
        pipeline.load_xportrait(tmp_path / "never-read.safetensors", device="cuda")


def test_a_dat_file_that_is_not_a_shape_predictor_is_named(tmp_path):
    from xportrait_core.controls.landmarks import DlibLandmarkProvider, LandmarkModelNotFoundError

    fake = tmp_path / "shape_predictor_68_face_landmarks.dat"
    fake.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(LandmarkModelNotFoundError, match="is not a dlib shape predictor"):
        DlibLandmarkProvider(model_path=fake)


# -------------------------------------------------------------------------------------- checkpoint files
@pytest.mark.parametrize("content, expected", [
    (b"hello", "is a text file (5 bytes, starting 'hello')"),
    (b"", "is empty (0 bytes)"),
    (b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>", "is a text file"),
    (b"PK\x03\x04" + bytes(200), "is truncated or corrupt (a damaged zip"),
])
def test_a_checkpoint_file_that_cannot_be_one_is_named_cheaply_and_without_torch_advice(tmp_path, content, expected):
    from xportrait_core.model.checkpoint import CheckpointError, read_state_dict

    path = tmp_path / "model_state-415001.th"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as raised:
        read_state_dict(path)
    assert expected in str(raised.value) and "weights_only" not in str(raised.value)


def test_a_torch_file_named_safetensors_is_named(tmp_path):
    from xportrait_core.model.checkpoint import CheckpointError, read_state_dict

    path = tmp_path / "model.safetensors"
    torch.save({"a": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="is named .safetensors but is a PyTorch checkpoint; rename it to "
                                              "'model.th'"):
        read_state_dict(path)


def test_a_truncated_safetensors_is_named_truncated(tmp_path):
    from conftest import GOLDEN_DIR

    from xportrait_core.model.checkpoint import CheckpointError, read_state_dict

    path = tmp_path / "cut.safetensors"
    path.write_bytes((GOLDEN_DIR / "tiny_weights.safetensors").read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        read_state_dict(path)


def test_legacy_and_zip_torch_checkpoints_still_read(tmp_path):
    from xportrait_core.model.checkpoint import read_state_dict

    state = {"a.weight": torch.arange(6.0).reshape(2, 3)}
    for name, zipped in (("new.th", True), ("old.th", False)):
        torch.save({"state_dict": state}, tmp_path / name, _use_new_zipfile_serialization=zipped)
        assert torch.equal(read_state_dict(tmp_path / name)["a.weight"], state["a.weight"])
