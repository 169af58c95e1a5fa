"""The driving-video preparation (pipeline.prepare_controls: align_driving, then the local patches), with scripted
landmark providers; and the two calls alone, as the Motion Control and Local Patches nodes make them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from xportrait_core.controls.alignment import align_frames_fchw, alignment_affine, transform_points
from xportrait_core.controls.driving_controls import SourceFaceNotFoundError
from xportrait_core.controls.landmarks import FaceLandmarks
from xportrait_core.media.image_fit import Framing, fit_square_fchw, images_to_fchw, resize_square_fchw, to_uint8_fhwc
from xportrait_core.options import OptionError
from xportrait_core.pipeline import ControlOptions, align_driving, local_patches, prepare_controls

GOLDEN = Path(__file__).parent / "golden" / "inputs.safetensors"
GOLDEN_FRAMES = 20
SOURCE_GREY = 200


class NearestFrameProvider:
    """Serves recorded landmarks: each frame gets those of the most similar reference frame (mean abs difference)."""

    name = "nearest-frame-script"

    def __init__(self, references_fhwc_uint8: np.ndarray, points_68: np.ndarray) -> None:
        self.references = references_fhwc_uint8.astype(np.float32)
        self.points_68 = points_68.astype(np.float32)

    def detect(self, frames_fhwc_uint8: np.ndarray) -> FaceLandmarks:
        result = FaceLandmarks.empty(len(frames_fhwc_uint8))
        for index, frame in enumerate(frames_fhwc_uint8.astype(np.float32)):
            nearest = np.abs(self.references - frame).mean(axis=(1, 2, 3)).argmin()
            result.points_68[index] = self.points_68[nearest]
            result.face_found[index] = True
        return result


class GreyKeyedProvider:
    """Frames are flat greys; the grey level at the centre pixel selects the landmarks, or None for no face."""

    name = "grey-keyed-script"

    def __init__(self, landmarks_by_grey: dict[int, np.ndarray | None]) -> None:
        self.landmarks_by_grey = landmarks_by_grey

    def detect(self, frames_fhwc_uint8: np.ndarray) -> FaceLandmarks:
        result = FaceLandmarks.empty(len(frames_fhwc_uint8))
        greys = np.array(sorted(self.landmarks_by_grey))
        for index, frame in enumerate(frames_fhwc_uint8):
            centre = int(frame[frame.shape[0] // 2, frame.shape[1] // 2, 0])
            points = self.landmarks_by_grey[int(greys[np.abs(greys - centre).argmin()])]
            if points is not None:
                result.points_68[index] = points
                result.face_found[index] = True
        return result


def face_points_256(shift_x: float = 0.0, shift_y: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    points = rng.uniform([95, 60], [160, 150], size=(68, 2))
    centre = np.array([128.0, 105.0])
    return ((points - centre) * scale + centre + [shift_x, shift_y]).astype(np.float32)


def grey_frames(greys: list[int], size: int = 256) -> torch.Tensor:
    """(F, size, size, 3) ComfyUI IMAGE of flat grey frames."""
    levels = torch.tensor(greys, dtype=torch.float32) / 255
    return levels[:, None, None, None].expand(len(greys), size, size, 3).contiguous()


def grey_source(size: int = 256) -> torch.Tensor:
    return grey_frames([SOURCE_GREY], size)[0]


class Controls:
    """Both controls' fields under one name each, for short assertions."""

    def __init__(self, prepared):
        aligned, patches = prepared.aligned, prepared.patches
        self.pose_hints, self.source_image = aligned.pose_hints, aligned.source_image
        self.best_frame = aligned.best_frame
        self.affine, self.affine_256, self.aligned = aligned.affine, aligned.affine_256, aligned.aligned
        self.local_hints, self.face_found, self.patch_centres = patches.local_hints, patches.face_found, patches.centres
        self.patch_landmarks_256, self.frames_without_face = patches.landmarks_256, patches.frames_without_face


def prepare(driving, source, provider, resolution=512, best_frame="auto", missing_face="black", fit="center_crop",
            patch_landmarks="detect_aligned", device="cpu", hooks=None):
    """pipeline.prepare_controls with the options spelled out, as the tests below vary them."""
    options = ControlOptions(Framing(resolution, fit), best_frame, missing_face, patch_landmarks)
    return Controls(prepare_controls(driving, source, provider, options, device=device, hooks=hooks))


@pytest.fixture(scope="module")
def golden():
    return load_file(GOLDEN)


def test_golden_run_without_alignment_gives_the_recorded_centres_and_hints(golden):
    frames_uint8 = golden["driving_video_uint8"][:GOLDEN_FRAMES]
    driving = torch.from_numpy(np.float32(frames_uint8 / 255))
    references = to_uint8_fhwc(resize_square_fchw(driving.permute(0, 3, 1, 2), 256))
    provider = NearestFrameProvider(references, golden["landmarks_256"][:GOLDEN_FRAMES])
    controls = prepare(driving, None, provider, resolution=128, best_frame="off", device="cpu")

    np.testing.assert_array_equal(controls.patch_centres.numpy(), golden["patch_centres"])
    pose_expected = torch.from_numpy(np.float32(frames_uint8 / 255) * 2 - 1).permute(0, 3, 1, 2)
    assert torch.equal(controls.pose_hints, pose_expected)
    local_expected = torch.full_like(pose_expected, -1.0)
    for frame, centres in enumerate(golden["patch_centres"].tolist()):
        for x, y in centres:
            square = (frame, slice(None), slice(y - 16, y + 16), slice(x - 16, x + 16))
            local_expected[square] = pose_expected[square]
    assert torch.equal(controls.local_hints, local_expected)
    assert controls.best_frame is None and not controls.aligned and controls.frames_without_face == 0


def test_hints_are_f_3_r_r_floats_in_minus_one_to_one():
    drivers = {60: face_points_256(5, 3), 90: face_points_256(-4, 2)}
    provider = GreyKeyedProvider({SOURCE_GREY: face_points_256(), **drivers})
    controls = prepare(grey_frames([60, 90]), grey_source(), provider, resolution=128, device="cpu")
    for hints in (controls.pose_hints, controls.local_hints):
        assert hints.shape == (2, 3, 128, 128) and hints.dtype == torch.float32
        assert float(hints.min()) >= -1.0 and float(hints.max()) <= 1.0
    assert controls.source_image.shape == (1, 3, 128, 128)
    assert controls.patch_centres.shape == (2, 3, 2) and controls.patch_centres.dtype == torch.int64


def test_auto_best_frame_is_the_frame_with_the_closest_landmarks_and_sets_the_affine():
    source = face_points_256()
    drivers = {60: face_points_256(12, 0), 90: face_points_256(2, -1, 1.05), 120: face_points_256(-9, 4)}
    provider = GreyKeyedProvider({SOURCE_GREY: source, **drivers})
    controls = prepare(
        grey_frames([60, 90, 120]), grey_source(), provider, resolution=512, device="cpu"
    )
    assert controls.best_frame == 1
    np.testing.assert_allclose(controls.affine.numpy(), alignment_affine(source, drivers[90], 512).numpy())
    np.testing.assert_allclose(controls.affine_256.numpy(), alignment_affine(source, drivers[90], 256).numpy())


def test_pose_hints_are_the_frames_warped_by_the_reported_affine():
    provider = GreyKeyedProvider({SOURCE_GREY: face_points_256(), 60: face_points_256(20, 10, 1.25)})
    driving = grey_frames([60])
    controls = prepare(driving, grey_source(), provider, resolution=256, best_frame=0, device="cpu")
    expected = align_frames_fchw(driving.permute(0, 3, 1, 2), controls.affine) * 2 - 1
    torch.testing.assert_close(controls.pose_hints, expected, rtol=0, atol=1e-6)
    assert float(controls.pose_hints[0, 0, -1, -1]) == -1.0  # driving face 1.25x larger: shrunk 0.8x, black border


def test_frames_without_a_face_get_black_local_hints_and_are_counted():
    provider = GreyKeyedProvider({SOURCE_GREY: face_points_256(), 60: face_points_256(), 90: None})
    controls = prepare(
        grey_frames([60, 90, 60, 90]), grey_source(), provider, resolution=128, best_frame=0, device="cpu"
    )
    assert controls.face_found.tolist() == [True, False, True, False]
    assert controls.frames_without_face == 2
    assert torch.all(controls.local_hints[[1, 3]] == -1.0)
    assert controls.patch_centres[1].tolist() == [[-1, -1]] * 3
    assert bool((controls.local_hints[0] != -1.0).any())


def test_missing_face_nearest_borrows_the_neighbours_landmarks():
    provider = GreyKeyedProvider({SOURCE_GREY: face_points_256(), 60: face_points_256(), 90: None})
    controls = prepare(
        grey_frames([60, 90, 90]), grey_source(), provider, resolution=128, best_frame=0, missing_face="nearest",
        device="cpu",
    )
    assert controls.frames_without_face == 2
    assert controls.patch_centres[1].tolist() == controls.patch_centres[0].tolist()
    assert controls.patch_centres[2].tolist() == controls.patch_centres[0].tolist()
    assert bool((controls.local_hints[2] != -1.0).any())


def test_source_without_a_face_is_an_error_naming_the_source():
    provider = GreyKeyedProvider({SOURCE_GREY: None, 60: face_points_256()})
    with pytest.raises(SourceFaceNotFoundError, match="source image"):
        prepare(grey_frames([60]), grey_source(), provider, resolution=128, device="cpu")


def test_given_best_frame_without_a_face_leaves_the_video_unaligned_as_the_original():
    provider = GreyKeyedProvider({SOURCE_GREY: face_points_256(), 60: face_points_256(), 90: None})
    driving = grey_frames([60, 90])
    controls = prepare(driving, grey_source(), provider, resolution=256, best_frame=1, device="cpu")
    assert not controls.aligned and controls.best_frame is None
    assert torch.equal(controls.pose_hints, driving.permute(0, 3, 1, 2) * 2 - 1)


def test_transform_mode_moves_the_landmarks_auto_detected_by_the_256_px_affine_without_detecting_again():
    driving_points = face_points_256(10, -6, 1.1)
    provider = CountingProvider({SOURCE_GREY: face_points_256(), 60: driving_points})
    controls = prepare(
        grey_frames([60, 60]), grey_source(), provider, resolution=512, best_frame="auto", patch_landmarks="transform",
        device="cpu",
    )
    expected = transform_points(driving_points, controls.affine_256)
    np.testing.assert_allclose(controls.patch_landmarks_256[0], expected, atol=1e-5)
    assert provider.frames_seen == 1 + 2  # the source and the driving frames, no pass over the aligned frames


def test_center_crop_keeps_the_middle_square_of_a_landscape_frame():
    columns = torch.arange(100, dtype=torch.float32)[None, None, :, None].expand(1, 60, 100, 3)
    cropped = fit_square_fchw(images_to_fchw(columns, "driving video"), "center_crop")
    assert cropped.shape == (1, 3, 60, 60)
    assert cropped[0, 0, 0, [0, -1]].tolist() == [20.0, 79.0]


def test_pad_centres_a_portrait_frame_on_black():
    frame = torch.ones(1, 100, 60, 3)
    padded = fit_square_fchw(images_to_fchw(frame, "driving video"), "pad")
    assert padded.shape == (1, 3, 100, 100)
    assert padded[0, :, :, :20].sum() == 0 and padded[0, :, :, 80:].sum() == 0
    assert bool(torch.all(padded[0, :, :, 20:80] == 1))


def test_resize_fit_stretches_like_the_original():
    frame = torch.rand(1, 60, 100, 3)
    fitted = fit_square_fchw(images_to_fchw(frame, "driving video"), "resize")
    assert fitted.shape == (1, 3, 60, 100)
    assert resize_square_fchw(fitted, 64).shape == (1, 3, 64, 64)


def test_default_fit_is_center_crop():
    provider = GreyKeyedProvider({60: face_points_256()})
    driving = torch.zeros(1, 64, 128, 3)
    driving[:, :, 32:96] = 60 / 255  # only the central square is grey, the sides are black
    controls = prepare(driving, None, provider, resolution=64, best_frame="off", device="cpu")
    assert torch.allclose(controls.pose_hints, torch.full_like(controls.pose_hints, 60 / 255 * 2 - 1))


@pytest.mark.parametrize("resolution", [0, 72, 100, 513])
def test_resolution_must_be_a_multiple_of_64(resolution):
    with pytest.raises(OptionError, match="resolution: must be a multiple of 64 pixels"):
        prepare(grey_frames([60]), None, GreyKeyedProvider({}), resolution=resolution, best_frame="off")


def test_best_frame_beyond_the_video_is_an_error_giving_the_range():
    provider = GreyKeyedProvider({SOURCE_GREY: face_points_256(), 60: face_points_256()})
    with pytest.raises(OptionError, match=r"best_frame: frame 5 is past the end of the driving video, which has 2 "
                                          r"frames \(0..1\)"):
        prepare(grey_frames([60, 60]), grey_source(), provider, resolution=128, best_frame=5)


def test_alignment_without_a_source_is_an_error():
    with pytest.raises(OptionError, match="source: is needed to align the driving video to it; .*best_frame off"):
        prepare(grey_frames([60]), None, GreyKeyedProvider({}), resolution=128, best_frame="auto")


def test_driving_video_of_the_wrong_layout_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"driving video .*\(F, H, W, 3\)"):
        prepare(torch.rand(2, 3, 64, 64), None, GreyKeyedProvider({}), resolution=64, best_frame="off")


# ------------------------------------------------------------------------------------------ progress, interrupt
class CountingProvider(GreyKeyedProvider):
    """Counts the frames it was asked to detect, so a test can tell where work stopped."""

    def __init__(self, landmarks_by_grey):
        super().__init__(landmarks_by_grey)
        self.frames_seen = 0

    def detect(self, frames_fhwc_uint8):
        self.frames_seen += len(frames_fhwc_uint8)
        return super().detect(frames_fhwc_uint8)


def test_progress_moves_through_every_pass_up_to_the_frames_of_work():
    from xportrait_core.controls.frame_hooks import FrameHooks

    frames = 10
    provider = CountingProvider({SOURCE_GREY: face_points_256(), 60: face_points_256(4, 2)})
    reports = []
    prepare(grey_frames([60] * frames), grey_source(), provider, resolution=64, best_frame="auto",
            patch_landmarks="detect_aligned",
            hooks=FrameHooks(on_progress=lambda done, total: reports.append((done, total))))
    totals = {total for _, total in reports}
    dones = [done for done, _ in reports]
    # source + driving landmarks + alignment + landmarks of the aligned frames + local hints
    assert totals == {1 + 4 * frames}
    assert dones == sorted(dones) and dones[-1] == 1 + 4 * frames
    assert max(b - a for a, b in zip([0] + dones, dones)) <= 4  # never more than a group of frames at a time


def test_an_interrupt_stops_the_work_within_a_group_of_frames():
    from xportrait_core.controls.frame_hooks import DETECT_GROUP_FRAMES, ControlsInterrupted, FrameHooks

    frames = 40
    provider = CountingProvider({SOURCE_GREY: face_points_256(), 60: face_points_256()})
    progress = []

    cancel_at = 1 + 2 * DETECT_GROUP_FRAMES  # Cancel pressed once the source and two groups of frames are done

    def cancelled() -> bool:
        return bool(progress) and progress[-1] >= cancel_at

    hooks = FrameHooks(on_progress=lambda done, total: progress.append(done), should_interrupt=cancelled)
    with pytest.raises(ControlsInterrupted):
        prepare(grey_frames([60] * frames), grey_source(), provider, resolution=64, best_frame="auto", hooks=hooks)
    assert provider.frames_seen == cancel_at  # not one frame detected after the check fired


def test_an_exception_raised_by_the_host_hook_passes_through():
    from xportrait_core.controls.frame_hooks import FrameHooks

    class HostInterrupt(Exception):
        pass

    def interrupt() -> bool:
        raise HostInterrupt()

    provider = GreyKeyedProvider({SOURCE_GREY: face_points_256(), 60: face_points_256()})
    with pytest.raises(HostInterrupt):
        prepare(grey_frames([60] * 3), grey_source(), provider, resolution=64,
                hooks=FrameHooks(should_interrupt=interrupt))


def test_grouped_detection_gives_the_same_landmarks_as_one_call():
    from xportrait_core.controls.frame_hooks import detect_landmarks

    provider = GreyKeyedProvider({60: face_points_256(), 90: None, 120: face_points_256(3, 3)})
    copies = to_uint8_fhwc(grey_frames([60, 90, 120, 60, 90, 120, 60]).permute(0, 3, 1, 2))
    grouped, whole = detect_landmarks(provider, copies), provider.detect(copies)
    np.testing.assert_array_equal(grouped.face_found, whole.face_found)
    np.testing.assert_array_equal(grouped.points_68, whole.points_68)


# ------------------------------------------------------------------------- the two calls the control nodes make
@pytest.mark.parametrize("best_frame, detected", [("off", 0), (2, 2), ("auto", 1 + 10)])
def test_aligning_detects_only_the_landmarks_its_best_frame_needs(best_frame, detected):
    """Motion Control: off detects nothing, an index the source and that frame, auto the source and every frame;
    none of them detects the aligned frames (Local Patches does that)."""
    provider = CountingProvider({SOURCE_GREY: face_points_256(), 60: face_points_256(4, 2)})
    aligned = align_driving(grey_frames([60] * 10), grey_source(), provider, Framing(64), best_frame, device="cpu")
    assert provider.frames_seen == detected and aligned.pose_hints.shape == (10, 3, 64, 64)


def test_local_patches_of_aligned_frames_detect_each_frame_once_and_equal_the_whole_preparation():
    provider = CountingProvider({SOURCE_GREY: face_points_256(), 60: face_points_256(4, 2), 90: None})
    driving = grey_frames([60, 90, 60, 60])
    whole = prepare(driving, grey_source(), provider, resolution=64, best_frame=0)
    aligned = align_driving(driving, grey_source(), provider, Framing(64), 0, device="cpu")
    provider.frames_seen = 0
    patches = local_patches(aligned.pose_hints, provider, "black")
    assert provider.frames_seen == 4
    assert torch.equal(patches.local_hints, whole.local_hints) and patches.face_found.tolist() == [True, False, True,
                                                                                                    True]


@pytest.mark.parametrize("value", ["first", -2, 1.5])
def test_a_best_frame_that_is_no_frame_is_refused_naming_it(value):
    with pytest.raises(OptionError, match="best_frame: must be auto, off or a frame number") as raised:
        align_driving(grey_frames([60]), grey_source(), GreyKeyedProvider({}), Framing(64), value)
    assert raised.value.option == "best_frame"


def test_the_source_without_a_face_names_the_option_that_switches_alignment_off():
    with pytest.raises(SourceFaceNotFoundError) as raised:
        align_driving(grey_frames([60]), grey_source(), GreyKeyedProvider({SOURCE_GREY: None}), Framing(64), "auto")
    assert raised.value.option == "source" and "(best_frame='off')" in str(raised.value)
    assert "(--best-frame off)" in raised.value.render(lambda name, value: f"--best-frame {value}")
