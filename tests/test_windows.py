"""Window placement and the per-frame average of overlapping windows, as the original computes them."""
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xportrait_core.options import OptionError
from xportrait_core.sampling.sampler import SamplerOptions
from xportrait_core.sampling.windows import (
    WindowAverager,
    WindowPlanner,
    check_window_fit,
    fixed_window_starts,
    random_window_starts,
    window_frames,
)

GOLDEN = Path(__file__).parent / "golden"
RECORDED_OFFSETS = [13, 17, 18, 15]  # manifest sampling_cfg5.offsets
RECORDED_STARTS = [[13, 25], [17, 29], [18, 30], [15, 27]]  # manifest sampling_cfg5.window_starts


@pytest.fixture(scope="module")
def cfg5():
    return load_file(GOLDEN / "sampling_cfg5.safetensors")


def test_recorded_offsets_give_the_original_window_starts(cfg5):
    assert cfg5["offsets"].tolist() == RECORDED_OFFSETS
    assert [random_window_starts(o, 20, 16, 4) for o in RECORDED_OFFSETS] == RECORDED_STARTS


def test_window_frames_wrap_around_the_end_of_the_video():
    assert window_frames(13, 20, 16).tolist() == [13, 14, 15, 16, 17, 18, 19, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert window_frames(30, 20, 16).tolist() == [(30 + i) % 20 for i in range(16)]


def test_planner_replays_offsets_and_yields_the_original_frames():
    planner = WindowPlanner(20, 16, 4, "random", offsets=RECORDED_OFFSETS)
    for step, starts in enumerate(RECORDED_STARTS):
        windows = planner.windows_for_step(step)
        assert [w.tolist() for w in windows] == [[(s + i) % 20 for i in range(16)] for s in starts]
    assert planner.offsets_used == RECORDED_OFFSETS


def test_replaying_the_original_window_eps_reproduces_its_averaged_eps(cfg5):
    window_eps = cfg5["window_eps"].reshape(4, 2, 16, 4, 16, 16)
    planner = WindowPlanner(20, 16, 4, "random", offsets=RECORDED_OFFSETS)
    for step in range(4):
        averager = WindowAverager((20, 4, 16, 16))
        for frames, eps in zip(planner.windows_for_step(step), window_eps[step]):
            averager.add(frames, eps)
        assert (averager.average() - cfg5["eps_per_step"][step]).abs().max() < 1e-6


def test_random_offsets_are_python_randint_0_to_f_minus_1_from_the_seed():
    planner = WindowPlanner(20, 16, 4, "random", seed=123)
    for step in range(5):
        planner.starts_for_step(step)
    rng = random.Random(123)
    assert planner.offsets_used == [rng.randint(0, 19) for _ in range(5)]


def test_replay_needs_one_offset_per_step():
    planner = WindowPlanner(20, 16, 4, "random", offsets=[3])
    planner.starts_for_step(0)
    with pytest.raises(ValueError, match="1 window offsets were given"):
        planner.starts_for_step(1)


def test_replayed_offsets_must_be_frame_indices():
    with pytest.raises(ValueError, match=r"offsets must lie in \[0, 19\]"):
        SamplerOptions(steps=1, offsets=[20]).check_video(20)
    with pytest.raises(AssertionError):  # the planner takes them checked
        WindowPlanner(20, 16, 4, "random", offsets=[20])


def test_fixed_windows_cover_the_video_with_the_last_aligned_to_the_end():
    assert fixed_window_starts(20, 16, 4) == [0, 4]
    assert fixed_window_starts(40, 16, 4) == [0, 12, 24]
    assert fixed_window_starts(41, 16, 4) == [0, 12, 24, 25]
    assert fixed_window_starts(16, 16, 4) == [0]


def test_fixed_placement_is_the_same_every_step_and_draws_no_offset():
    planner = WindowPlanner(41, 16, 4, "fixed", seed=5)
    first = [w.tolist() for w in planner.windows_for_step(0)]
    assert first == [w.tolist() for w in planner.windows_for_step(1)]
    assert max(max(w) for w in first) == 40 and planner.offsets_used == []


def test_a_video_shorter_than_the_window_wraps_in_both_placements():
    assert [w.tolist() for w in WindowPlanner(10, 16, 4, "fixed").windows_for_step(0)] == [
        [i % 10 for i in range(16)]
    ]
    random_windows = WindowPlanner(10, 16, 4, "random", offsets=[7]).windows_for_step(0)
    assert [w.tolist() for w in random_windows] == [[(7 + i) % 10 for i in range(16)]]


def test_duplicate_frames_in_a_window_count_once_with_the_last_write():
    # F = 10 < 16: frames 0..5 appear twice in the window; the original's `acc[idx] += eps` keeps one write.
    frames = window_frames(0, 10, 16)
    eps = torch.arange(16, dtype=torch.float32).reshape(16, 1)
    averager = WindowAverager((10, 1))
    averager.add(frames, eps)
    assert averager.average().flatten().tolist() == [10, 11, 12, 13, 14, 15, 6, 7, 8, 9]


def test_overlapping_windows_are_averaged_per_frame():
    averager = WindowAverager((6, 1))
    averager.add(torch.tensor([0, 1, 2, 3]), torch.full((4, 1), 2.0))
    averager.add(torch.tensor([2, 3, 4, 5]), torch.full((4, 1), 4.0))
    assert averager.average().flatten().tolist() == [2, 2, 3, 3, 4, 4]


def test_a_frame_no_window_covered_is_an_error():
    averager = WindowAverager((3, 1))
    averager.add(torch.tensor([0, 1]), torch.ones(2, 1))
    with pytest.raises(RuntimeError, match=r"no window covered frames \[2\]"):
        averager.average()


@pytest.mark.parametrize("overlap", [16, 20, -1])
def test_overlap_must_be_below_the_window_length(overlap):
    with pytest.raises(OptionError, match="overlap: must be a whole number from 0 to"):
        SamplerOptions(window=16, overlap=overlap)
    with pytest.raises(AssertionError):  # the planner takes them checked
        WindowPlanner(20, 16, overlap)


def test_random_placement_with_no_more_frames_than_the_overlap_is_an_error():
    # The original divides by zero here (no window, zero counts).
    with pytest.raises(OptionError, match="video has 4 frames and the overlap is 4; .* or use placement='fixed'"):
        check_window_fit(4, 4, "random")
    with pytest.raises(AssertionError):
        WindowPlanner(4, 16, 4, "random")


def test_fixed_placement_accepts_a_video_no_longer_than_the_overlap():
    assert [w.tolist() for w in WindowPlanner(3, 16, 4, "fixed").windows_for_step(0)] == [
        [i % 3 for i in range(16)]
    ]


def test_unknown_placement_is_rejected():
    with pytest.raises(OptionError, match="placement: must be one of random, fixed, got 'sliding'"):
        SamplerOptions(placement="sliding")
