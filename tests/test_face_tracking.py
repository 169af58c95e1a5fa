"""Following the driving face through a full frame: a clip of the astronaut moving on a known path inside a
1280 x 720 frame (tests/face_scenes.py), with pixel noise so the detector jitters as it does on real video.

Measured here and bounded (docs/face_framing.md, "Tracking" has the numbers): the smoothed crop centre's error
against the true path, and its frame-to-frame noise (RMS of the change of that error from one frame to the next).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from face_scenes import box_of, moving_face_clip, needs_dlib, path_points, provider

from xportrait_core.controls.face_framing import crop_box_for
from xportrait_core.controls.face_tracking import (
    FaceTracking,
    crop_tracked,
    fill_gaps,
    smooth_path,
    track_face,
    tracking_for,
)
from xportrait_core.options import DEFAULT_FACE_MARGIN, OptionError

FRAMES, WIDTH, HEIGHT, SCALE = 20, 1280, 720, 0.6  # face about 56 px wide, crop about 167 px
NOISE = 4 / 255
CENTRE_BOUND = 0.02  # of the face size: the smoothed crop centre's largest error against the path
JITTER_BOUND = 0.01  # of the face size: RMS of the frame-to-frame change of that error


def known_path() -> np.ndarray:
    """(F, 2): the photo's corner moving right 17.3 px a frame while bobbing 50 px up and down every 40 frames."""
    frames = np.arange(FRAMES)
    return np.stack([200 + 17.3 * frames, 150 + 50 * np.sin(2 * math.pi * frames / 40)], axis=1)


def true_crop_centres(path: np.ndarray) -> tuple[np.ndarray, float]:
    boxes = [box_of(points) for points in path_points(path, SCALE)]
    centres = np.array([crop_box_for(box, DEFAULT_FACE_MARGIN)[:2] for box in boxes])
    return centres, max(boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1])


def errors(centres: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(largest centre error, RMS frame-to-frame change of the error), in pixels."""
    error = centres - truth
    return float(np.hypot(*error.T).max()), float(np.sqrt((np.diff(error, axis=0) ** 2).sum(axis=1).mean()))


@pytest.fixture(scope="module")
def clip():
    path = known_path()
    return path, moving_face_clip(path, SCALE, WIDTH, HEIGHT, noise=NOISE, blank=(9,))


@pytest.fixture(scope="module")
def tracked(clip):
    return track_face(clip[1], provider(), FaceTracking())


@needs_dlib
def test_the_smoothed_crop_follows_the_path_within_the_stated_bounds(clip, tracked):
    truth, face = true_crop_centres(clip[0])
    largest, jitter = errors(tracked.smoothed[:, :2], truth)
    assert largest <= CENTRE_BOUND * face
    assert jitter <= JITTER_BOUND * face


@needs_dlib
def test_smoothing_calms_the_detections_frame_to_frame(clip, tracked):
    truth, _ = true_crop_centres(clip[0])
    found = tracked.face_found
    _, raw_jitter = errors(tracked.detected[found][:, :2], truth[found])
    _, smooth_jitter = errors(tracked.smoothed[found][:, :2], truth[found])
    assert smooth_jitter < raw_jitter


@needs_dlib
def test_a_frame_without_a_face_is_reported_and_follows_its_neighbours(clip, tracked):
    assert tracked.frames_without_face == [9]
    assert np.isnan(tracked.detected[9]).all()
    truth, face = true_crop_centres(clip[0])
    assert np.hypot(*(tracked.smoothed[9, :2] - truth[9])) <= 0.1 * face  # between its neighbours' boxes


@needs_dlib
def test_each_frame_is_cut_at_its_box_and_resized(clip, tracked):
    crops = crop_tracked(clip[1][:3], tracked, 128)
    assert crops.shape == (3, 128, 128, 3)
    box = tracked.box(0)
    frame = clip[1][0].permute(2, 0, 1)[None]
    region = frame[..., box.top:box.top + box.side, box.left:box.left + box.side]
    expected = torch.nn.functional.interpolate(region, size=(128, 128), mode="bilinear", antialias=True,
                                               align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)
    assert torch.allclose(crops[0], expected, atol=1e-6)


@needs_dlib
def test_the_track_stays_with_its_face_when_another_appears(clip):
    from face_scenes import astronaut

    path, frames = clip[0][:6], clip[1][:6].clone()
    other = torch.from_numpy(astronaut(0.9)[:400, :400].copy()).float().div(255)  # a larger face, far right, from
    frames[3:, 250:650, 820:1220] = other  # frame 3 on
    track = track_face(frames, provider(), FaceTracking(smoothing=0))
    truth, face = true_crop_centres(path)
    assert np.hypot(*(track.detected[:, :2] - truth).T).max() <= CENTRE_BOUND * face


@needs_dlib
def test_a_video_without_any_face_is_an_error_naming_it(clip):
    blank = torch.full((2, 90, 160, 3), 0.4)
    with pytest.raises(OptionError, match="no face was found in any of the 2 driving frames") as error:
        track_face(blank, provider())
    assert error.value.option == "driving"


def test_a_straight_path_is_kept_exactly_even_at_the_ends():
    frames = np.arange(30, dtype=np.float64)
    line = np.stack([3 + 2.5 * frames, 7 - 0.5 * frames], axis=1)
    assert smooth_path(line, 3.0) == pytest.approx(line, abs=1e-9)


def test_smoothing_averages_noise_out():
    rng = np.random.default_rng(0)
    noisy = rng.normal(0, 1, (400, 1))
    assert smooth_path(noisy, 3.0).std() < 0.5 * noisy.std()


def test_gaps_lie_between_the_nearest_found_frames():
    values = np.array([[np.nan], [1.0], [np.nan], [np.nan], [4.0], [np.nan]])
    found = ~np.isnan(values[:, 0])
    assert fill_gaps(values, found)[:, 0].tolist() == [1.0, 1.0, 2.0, 3.0, 4.0, 4.0]


@needs_dlib
def test_align_driving_follows_the_face_then_aligns_its_crops_with_progress_to_the_end(clip):
    from xportrait_core.cli.demo_clip import astronaut_portrait
    from xportrait_core.pipeline import FrameHooks, Framing, align_driving

    seen: list[tuple[int, int]] = []
    aligned = align_driving(clip[1][:4], astronaut_portrait(256), provider(), Framing(128), "auto",
                            hooks=FrameHooks(on_progress=lambda done, total: seen.append((done, total))),
                            tracking=FaceTracking())
    assert aligned.track is not None and aligned.track.face_found.all()
    assert aligned.pose_hints.shape == (4, 3, 128, 128)
    assert aligned.best_frame is not None  # the tracked crops are faces the alignment finds
    assert seen[-1][0] == seen[-1][1] and all(total == seen[0][1] for _, total in seen)


def test_the_driving_crop_choice_gives_its_tracking():
    """One reading of driving_crop for the command line and Motion Control: full_frame tracks nothing, track_face
    tracks with the margin and smoothing given (the defaults otherwise), anything else names the option."""
    assert tracking_for("full_frame") is None
    assert tracking_for("track_face") == FaceTracking()
    assert tracking_for("track_face", 2.5, 1.0) == FaceTracking(2.5, 1.0)
    with pytest.raises(OptionError) as raised:
        tracking_for("follow")
    assert raised.value.option == "driving_crop"
