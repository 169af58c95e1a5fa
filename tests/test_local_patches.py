"""Local patches: centres and squares exactly as the original, checked against its golden run."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from xportrait_core.controls.local_patches import (
    fill_missing_from_nearest,
    local_hints_fchw,
    patch_centres,
    patch_half_size,
)

GOLDEN = Path(__file__).parent / "golden" / "inputs.safetensors"
GOLDEN_FRAMES = 20  # --out_frames -1 drops the last of the 21 driving frames
GOLDEN_RESOLUTION = 128


@pytest.fixture(scope="module")
def golden():
    return load_file(GOLDEN)


def golden_pose_hints(golden) -> torch.Tensor:
    """pose hint = float32(u / 255) * 2 - 1, CHW (manifest)."""
    frames = np.float32(golden["driving_video_uint8"][:GOLDEN_FRAMES] / 255) * 2 - 1
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def squares_by_slicing(pose_hints: torch.Tensor, centres: torch.Tensor, half: int) -> torch.Tensor:
    """Independent construction: -1 everywhere, then each square copied by slicing, frame by frame."""
    expected = torch.full_like(pose_hints, -1.0)
    for frame, frame_centres in enumerate(centres.tolist()):
        for x, y in frame_centres:
            expected[frame, :, y - half : y + half, x - half : x + half] = pose_hints[
                frame, :, y - half : y + half, x - half : x + half
            ]
    return expected


def centres_as_the_original(lmks: np.ndarray, target_res: int) -> np.ndarray:
    """The original's formula for one frame, restated: mean, round, clip to [32, 223], scale, truncate."""
    def centre(part):
        return (np.clip(np.round(np.mean(part, axis=0)), 32, 223) * (target_res / 256)).astype(np.int32)

    return np.stack([centre(lmks[43:48]), centre(lmks[37:42]), centre(lmks[49:68])])


def test_golden_patch_centres_are_reproduced_exactly(golden):
    centres = patch_centres(golden["landmarks_256"][:GOLDEN_FRAMES], np.ones(GOLDEN_FRAMES, bool), GOLDEN_RESOLUTION)
    np.testing.assert_array_equal(centres.numpy(), golden["patch_centres"])


def test_golden_local_hint_is_black_except_three_squares_of_the_pose_hint(golden):
    pose_hints = golden_pose_hints(golden)
    centres = torch.from_numpy(golden["patch_centres"].astype(np.int64))
    local = local_hints_fchw(pose_hints, centres)
    assert torch.equal(local, squares_by_slicing(pose_hints, centres, half=16))


@pytest.mark.parametrize("resolution", [512, 256, 128, 96])
def test_centres_follow_the_original_formula_on_random_landmarks(resolution):
    rng = np.random.default_rng(resolution)
    # spread beyond the 256 px grid so that clipping happens on both sides
    landmarks = rng.uniform(-40, 300, size=(200, 68, 2)).astype(np.float32)
    expected = np.stack([centres_as_the_original(frame, resolution) for frame in landmarks])
    np.testing.assert_array_equal(patch_centres(landmarks, np.ones(200, bool), resolution).numpy(), expected)


def test_centres_are_clipped_to_32_and_223_on_the_256_grid():
    landmarks = np.stack([np.full((68, 2), -10.0), np.full((68, 2), 400.0)]).astype(np.float32)
    centres = patch_centres(landmarks, np.ones(2, bool), 512)
    assert centres[0].tolist() == [[64, 64]] * 3
    assert centres[1].tolist() == [[446, 446]] * 3


def test_centres_of_frames_without_a_face_are_minus_one():
    landmarks = np.full((2, 68, 2), 100.0, np.float32)
    centres = patch_centres(landmarks, np.array([True, False]), 512)
    assert centres[0].tolist() == [[200, 200]] * 3
    assert centres[1].tolist() == [[-1, -1]] * 3


@pytest.mark.parametrize(("resolution", "half"), [(512, 64), (128, 16), (256, 32)])
def test_patch_half_size_is_an_eighth_of_the_resolution(resolution, half):
    assert patch_half_size(resolution) == half


def test_squares_cover_exactly_centre_minus_half_to_centre_plus_half():
    pose = torch.zeros(1, 3, 512, 512)
    centres = torch.tensor([[[100, 150], [300, 150], [200, 400]]])
    mask = local_hints_fchw(pose, centres)[0, 0] == 0
    assert int(mask.sum()) == 3 * 128 * 128
    assert mask[150 - 64, 100 - 64] and mask[150 + 63, 100 + 63]
    assert not mask[150, 100 - 65] and not mask[150, 100 + 64] and not mask[150 - 65, 100]


def test_squares_at_the_clipped_extremes_stay_inside_the_frame():
    for resolution in (512, 128, 96):
        centres = patch_centres(np.full((1, 68, 2), 255.0, np.float32), np.ones(1, bool), resolution)
        pose = torch.rand(1, 3, resolution, resolution) * 2 - 1
        local = local_hints_fchw(pose, centres)
        expected = squares_by_slicing(pose, centres, patch_half_size(resolution))
        assert torch.equal(local, expected)


def test_frame_without_a_face_gets_an_all_black_local_hint():
    pose = torch.rand(2, 3, 128, 128) * 2 - 1
    centres = torch.tensor([[[40, 40], [80, 40], [60, 90]], [[-1, -1]] * 3])
    local = local_hints_fchw(pose, centres)
    assert torch.all(local[1] == -1.0)
    assert int((local[0] != -1.0).any(dim=0).sum()) == 3 * 32 * 32


def test_missing_frames_borrow_the_nearest_frame_with_a_face():
    points = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 68, 2), np.float32)
    found = np.array([False, True, False, False, True, False])
    filled = fill_missing_from_nearest(points, found)
    assert filled[:, 0, 0].tolist() == [1, 1, 1, 4, 4, 4]


def test_equally_near_frames_lend_the_earlier_one():
    points = np.arange(3, dtype=np.float32)[:, None, None] * np.ones((3, 68, 2), np.float32)
    filled = fill_missing_from_nearest(points, np.array([True, False, True]))
    assert filled[:, 0, 0].tolist() == [0, 0, 2]
