"""Driving-video reading, result-video writing and the comparison layout (xportrait_core.media.video_io)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xportrait_core.media.video_io import (
    DEFAULT_FOLDER_FPS,
    VideoReadError,
    VideoWriteError,
    natural_sort_key,
    read_video,
    side_by_side,
    write_video,
)

FRAMES, HEIGHT, WIDTH = 6, 32, 48
# Mean absolute error a lossy codec may add on smooth test frames (values in [0, 1]).
LOSSY_TOLERANCE = 0.02


def moving_gradient(frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """Smooth frames that differ from each other, so frame order and content can be checked."""
    x = torch.linspace(0, 1, width).view(1, 1, width, 1)
    y = torch.linspace(0, 1, height).view(1, height, 1, 1)
    t = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1, 1) / frames
    return torch.cat([x.expand(frames, height, width, 1), y.expand(frames, height, width, 1),
                      t.expand(frames, height, width, 1)], dim=-1).contiguous()


def save_frame_folder(folder: Path, frames: torch.Tensor, names: list[str]) -> None:
    folder.mkdir()
    for name, frame in zip(names, frames):
        Image.fromarray((frame.numpy() * 255).round().astype(np.uint8)).save(folder / name)


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_round_trip_keeps_frame_count_size_fps_and_content(tmp_path, suffix):
    frames = moving_gradient()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=25.0)

    clip = read_video(path)

    assert tuple(clip.frames.shape) == (FRAMES, HEIGHT, WIDTH, 3)
    assert clip.frames.dtype == torch.float32
    assert clip.fps == pytest.approx(25.0)
    assert (clip.frames - frames).abs().mean().item() < LOSSY_TOLERANCE


def test_mp4_keeps_an_ntsc_frame_rate(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", moving_gradient(), fps=30000 / 1001)

    assert read_video(path).fps == pytest.approx(29.97, abs=0.01)


def test_odd_size_is_padded_to_even_for_yuv420p(tmp_path):
    frames = moving_gradient(height=31, width=45)
    path = write_video(tmp_path / "odd.mp4", frames, fps=25.0)

    clip = read_video(path)

    assert tuple(clip.frames.shape) == (FRAMES, 32, 46, 3)
    assert (clip.frames[:, :31, :45] - frames).abs().mean().item() < LOSSY_TOLERANCE


def test_max_frames_and_frame_step_pick_frames_and_divide_fps(tmp_path):
    path = write_video(tmp_path / "clip.mp4", moving_gradient(frames=10), fps=30.0)

    clip = read_video(path, max_frames=3, frame_step=2)

    assert clip.frames.shape[0] == 3
    assert clip.fps == pytest.approx(15.0)
    blue_per_frame = clip.frames[:, :, :, 2].mean(dim=(1, 2))
    assert blue_per_frame.tolist() == pytest.approx([0.0, 0.2, 0.4], abs=0.02)


def test_frame_folder_is_read_in_natural_order_at_the_default_fps(tmp_path):
    frames = moving_gradient(frames=3)
    save_frame_folder(tmp_path / "frames", frames, ["f10.png", "f2.png", "f1.png"])

    clip = read_video(tmp_path / "frames")

    assert clip.fps == DEFAULT_FOLDER_FPS
    # f1, f2, f10 hold frames 2, 1, 0: natural order reverses the saved order.
    blue_per_frame = clip.frames[:, :, :, 2].mean(dim=(1, 2))
    assert blue_per_frame.tolist() == pytest.approx([2 / 3, 1 / 3, 0.0], abs=0.01)


def test_frame_folder_uses_the_given_fps(tmp_path):
    save_frame_folder(tmp_path / "frames", moving_gradient(frames=2), ["a.png", "b.png"])

    assert read_video(tmp_path / "frames", default_fps=12.0).fps == 12.0


def test_single_image_is_a_one_frame_clip(tmp_path):
    save_frame_folder(tmp_path / "img", moving_gradient(frames=1), ["face.jpg"])

    clip = read_video(tmp_path / "img" / "face.jpg")

    assert tuple(clip.frames.shape) == (1, HEIGHT, WIDTH, 3)
    assert clip.fps == DEFAULT_FOLDER_FPS


def test_natural_sort_key_orders_numbers_by_value():
    assert sorted(["frame10.png", "frame2.png", "Frame1.png"], key=natural_sort_key) == [
        "Frame1.png", "frame2.png", "frame10.png"]


def test_missing_input_names_the_path(tmp_path):
    with pytest.raises(VideoReadError, match="missing.mp4 does not exist"):
        read_video(tmp_path / "missing.mp4")


def test_unreadable_video_says_it_cannot_be_opened(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video")

    with pytest.raises(VideoReadError, match="Cannot open video .*broken.mp4"):
        read_video(tmp_path / "broken.mp4")


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no frames here")

    with pytest.raises(VideoReadError, match="holds no images"):
        read_video(tmp_path / "empty")


def test_folder_with_mixed_frame_sizes_is_an_error(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "1.png")
    Image.new("RGB", (20, 16)).save(folder / "2.png")

    with pytest.raises(VideoReadError, match="2.png is 20x16 but .*1.png is 16x16"):
        read_video(folder)


def test_writing_an_unknown_format_is_an_error(tmp_path):
    with pytest.raises(VideoWriteError, match="suffix must be one of .mp4, .webm, .gif"):
        write_video(tmp_path / "clip.avi", moving_gradient(), fps=25.0)


def test_writing_frames_in_the_wrong_layout_is_an_error(tmp_path):
    frames_fchw = moving_gradient().permute(0, 3, 1, 2)

    with pytest.raises(VideoWriteError, match=r"Expected frames shaped \(F, H, W, 3\)"):
        write_video(tmp_path / "clip.mp4", frames_fchw, fps=25.0)


def test_side_by_side_resizes_panels_to_the_last_panels_height():
    driving = torch.zeros(4, 64, 32, 3)
    patches = torch.full((4, 16, 16, 3), 0.5)
    result = torch.ones(4, 32, 32, 3)

    combined = side_by_side([driving, patches, result])

    # driving 64x32 -> 32x16, patches 16x16 -> 32x32, result stays 32x32.
    assert tuple(combined.shape) == (4, 32, 16 + 32 + 32, 3)
    assert combined[:, :, :16].max().item() == 0.0
    assert combined[:, :, 16:48].mean().item() == pytest.approx(0.5)
    assert combined[:, :, 48:].min().item() == 1.0


def test_side_by_side_repeats_a_one_frame_panel():
    source = torch.full((1, 8, 8, 3), 0.25)
    result = torch.ones(5, 8, 8, 3)

    combined = side_by_side([source, result])

    assert tuple(combined.shape) == (5, 8, 16, 3)
    assert combined[4, :, :8].mean().item() == pytest.approx(0.25)


def test_side_by_side_rejects_different_frame_counts():
    with pytest.raises(ValueError, match=r"different frame counts \[3, 4\]"):
        side_by_side([torch.zeros(3, 8, 8, 3), torch.zeros(4, 8, 8, 3)])
