"""Bad input and bad luck below the command line and the nodes, in the library both use: files never half-written,
images of every mode read as they look, numbers that leave the finite range stopped where they do, resolutions the
model cannot sample refused. One test per class."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from xportrait_core.media.video_io import VideoWriteError, read_video, write_video

REPO_ROOT = Path(__file__).resolve().parents[1]
EIGHT_BIT_STEP = 1 / 255


def gradient_frames(frames: int = 4, size: int = 32) -> torch.Tensor:
    ramp = torch.linspace(0, 1, size)
    return torch.stack([ramp.view(1, size).expand(size, size), ramp.view(size, 1).expand(size, size),
                        torch.full((size, size), 0.5)], dim=-1).expand(frames, -1, -1, -1).contiguous()


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# -------------------------------------------------------------------------------------- no half-written files
def test_a_video_write_that_fails_midway_keeps_the_earlier_file_and_leaves_no_partial(tmp_path, monkeypatch):
    """A full disk while encoding: the earlier result stays, whole, and no temporary file is left."""
    from xportrait_core.media import video_io

    out = tmp_path / "result.mp4"
    write_video(out, gradient_frames(), fps=10)
    earlier = out.read_bytes()

    def disk_full(path, frames_uint8, *args, **kwargs):
        Path(path).write_bytes(b"\x00" * 100)  # some bytes reached the disk, then:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video_io, "_encode", disk_full)
    with pytest.raises(VideoWriteError, match=r"Writing .*result.mp4 failed .*No space left on device.*unchanged"):
        write_video(out, gradient_frames(frames=8), fps=10)
    assert out.read_bytes() == earlier
    assert leftovers(tmp_path, {"result.mp4"}) == []


def test_a_killed_writer_never_leaves_a_half_written_video_at_the_destination(tmp_path):
    """SIGKILL while encoding a long video: the destination still holds the earlier, complete video."""
    out = tmp_path / "result.mp4"
    write_video(out, gradient_frames(), fps=10)
    earlier = out.read_bytes()
    script = ("import sys, torch\n"
              "from xportrait_core.media.video_io import write_video\n"
              "frames = torch.rand(400, 128, 128, 3)  # noise: slow to encode, a wide window to kill in\n"
              "print('writing', flush=True)\n"
              f"write_video({str(out)!r}, frames, fps=25)\n")
    with subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}) as process:  # closes its pipe after
        assert process.stdout.readline().strip() == b"writing"
        while not [p for p in tmp_path.iterdir() if ".partial-" in p.name and p.stat().st_size > 0]:
            assert process.poll() is None, "the writer finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert out.read_bytes() == earlier
    assert read_video(out).frames.shape[0] == 4


def test_a_state_file_write_that_fails_keeps_the_earlier_state(tmp_path, monkeypatch):
    from xportrait_core.batch_queue import queue_state
    from xportrait_core.batch_queue.queue_state import Job, QueueState

    state = QueueState(tmp_path / "state.json", [Job("a__b", "a.png", "b.mp4", 0)])
    state.save()
    earlier = (tmp_path / "state.json").read_text()

    def interrupted(payload, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(queue_state.json, "dumps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        state.update(state.jobs["a__b"], status="done")
    assert (tmp_path / "state.json").read_text() == earlier and json.loads(earlier)["jobs"][0]["status"] == "pending"
    assert leftovers(tmp_path, {"state.json"}) == []


def test_a_conversion_whose_read_back_differs_writes_nothing(tmp_path, monkeypatch):
    from conftest import GOLDEN_DIR

    from xportrait_core.model import checkpoint_convert
    from xportrait_core.model.checkpoint import CheckpointError

    source = tmp_path / "s.safetensors"
    source.write_bytes((GOLDEN_DIR / "tiny_weights.safetensors").read_bytes())
    (tmp_path / "out.safetensors").write_bytes(b"an earlier conversion")
    real = checkpoint_convert._Converter.expected
    monkeypatch.setattr(checkpoint_convert._Converter, "expected", lambda self, key: real(self, key) + 1)
    with pytest.raises(CheckpointError, match="the file read back differs .* nothing was written there"):
        checkpoint_convert.convert_to_safetensors(source, tmp_path / "out.safetensors", text_num_heads=2)
    assert (tmp_path / "out.safetensors").read_bytes() == b"an earlier conversion"
    assert leftovers(tmp_path, {"s.safetensors", "out.safetensors"}) == []


# ---------------------------------------------------------------------------------------------- image modes
@pytest.fixture(scope="module")
def portrait_rgb() -> np.ndarray:
    from xportrait_core.cli.demo_clip import astronaut_portrait

    return (astronaut_portrait(128)[0].numpy() * 255).round().astype(np.uint8)


def test_a_16_bit_greyscale_png_reads_as_it_looks_not_almost_white(tmp_path, portrait_rgb):
    grey8 = np.asarray(Image.fromarray(portrait_rgb).convert("L"))
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # 16-bit, same picture
    frames = read_video(tmp_path / "grey16.png").frames[0]
    expected = torch.from_numpy(np.repeat(grey8[..., None], 3, axis=-1)).float() / 255
    assert float((frames - expected).abs().max()) <= EIGHT_BIT_STEP / 2


def test_a_16_bit_png_that_pillow_opens_as_32_bit_integers_reads_as_it_looks(portrait_rgb):
    """Older Pillow versions open 16-bit greyscale PNGs in mode "I"; the values are still 0..65535."""
    from xportrait_core.media.video_io import image_to_rgb8

    grey8 = np.asarray(Image.fromarray(portrait_rgb).convert("L"))
    image = Image.fromarray(grey8.astype(np.int32) * 257)
    assert image.mode == "I"
    assert int(np.abs(image_to_rgb8(image).astype(int) - grey8[..., None]).max()) == 0


def test_a_16_bit_greyscale_portrait_still_has_its_face_found(tmp_path, portrait_rgb):
    from xportrait_core.controls.landmarks import DlibLandmarkProvider
    from xportrait_core.media.image_fit import to_uint8_fhwc

    grey8 = np.asarray(Image.fromarray(portrait_rgb).convert("L"))
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    frames = read_video(tmp_path / "grey16.png").frames
    assert bool(DlibLandmarkProvider().detect(to_uint8_fhwc(frames.permute(0, 3, 1, 2))).face_found[0])


@pytest.mark.parametrize("mode, suffix, tolerance", [("P", ".png", 0.1), ("LA", ".png", 0.0), ("RGBA", ".png", 0.0),
                                                     ("CMYK", ".jpg", 0.1), ("RGB;16", ".png", 0.0)])
def test_other_image_modes_read_like_their_rgb_picture(tmp_path, portrait_rgb, mode, suffix, tolerance):
    """Palette, grey + alpha, RGBA, CMYK JPEG, 16-bit RGB: the same picture in RGB (within what the mode keeps)."""
    image = Image.fromarray(portrait_rgb)
    path = tmp_path / f"image{suffix}"
    if mode == "RGB;16":
        import cv2  # Pillow cannot write 16-bit RGB PNGs

        cv2.imwrite(str(path), portrait_rgb[..., ::-1].astype(np.uint16) * 257)
        expected = portrait_rgb
    else:
        converted = image.convert(mode)
        converted.save(path, **({"quality": 100} if suffix == ".jpg" else {}))
        expected = np.asarray(converted.convert("RGB"))
    if mode == "LA":
        expected = np.asarray(image.convert("L").convert("RGB"))
    frames = read_video(path).frames[0]
    difference = (frames - torch.from_numpy(expected.copy()).float() / 255).abs().mean()
    assert float(difference) <= tolerance + EIGHT_BIT_STEP


def test_a_phone_photo_with_exif_rotation_reads_upright(tmp_path, portrait_rgb):
    upright = Image.fromarray(portrait_rgb[:, :96])  # not square, so a turn shows in the shape
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how the camera stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    frames = read_video(tmp_path / "phone.jpg").frames[0]
    assert tuple(frames.shape) == (128, 96, 3)
    assert float((frames - torch.from_numpy(np.array(upright)).float() / 255).abs().mean()) < 0.02


# ------------------------------------------------------------------------------------------- non-finite values
class NaNAfter:
    """A sigma-space denoiser whose estimate of some frames turns NaN from a given call (sampler step) on."""

    windows_per_batch, batch_passes, evaluation_counts = 1, False, {}

    def __init__(self, step: int, frames: list[int]) -> None:
        self.step, self.frames, self.calls = step, frames, 0

    def __call__(self, x, sigma):
        denoised = torch.zeros_like(x)
        if self.calls >= self.step:
            denoised[self.frames] = float("nan")
        self.calls += 1
        return denoised


def test_latents_that_go_non_finite_stop_the_run_at_that_step_naming_the_frames(monkeypatch):
    from test_sampler import FakeXPortrait, make_conditioning

    from xportrait_core.sampling import sampler
    from xportrait_core.sampling.finite_check import NonFiniteError

    broken = NaNAfter(step=1, frames=[2, 3, 6])
    monkeypatch.setattr(sampler, "WindowedGuidedDenoiser", lambda *args, **kwargs: broken)
    seen_steps = []
    hooks = sampler.SamplerHooks(on_step=lambda step, total, denoised: seen_steps.append(step))
    with pytest.raises(NonFiniteError, match=r"at step 2 of 3, in 3 of 8 frames \(2-3, 6\).*fp32") as raised:
        sampler.sample(FakeXPortrait(), make_conditioning(8), sampler.SamplerOptions(steps=3, placement="fixed"),
                       hooks=hooks)
    assert raised.value.frames == [2, 3, 6]
    assert seen_steps == [0]  # no preview or progress of the broken step


def test_frames_that_decode_non_finite_are_refused_instead_of_written_black():
    from xportrait_core.model.tiny_model import build_random_model
    from xportrait_core.pipeline import decode_to_images
    from xportrait_core.sampling.finite_check import NonFiniteError

    model = build_random_model(seed=2)
    conv_out = model.first_stage_model.decoder.conv_out
    conv_out.weight.data.mul_(1e38)
    conv_out.bias.data.fill_(torch.finfo(torch.float32).max)
    with pytest.raises(NonFiniteError, match=r"decoding went non-finite .* in frames 0-1"):
        decode_to_images(model, torch.zeros(2, 4, 8, 8))


def test_a_lora_with_non_finite_values_is_refused_naming_the_file_and_tensor(tmp_path):
    from safetensors.torch import save_file

    from xportrait_core.model.lora import LoraFileError, read_lora

    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{name}.lora_down.weight": torch.ones(2, 320),
               f"{name}.lora_up.weight": torch.full((320, 2), float("inf"))},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(LoraFileError, match=rf"LoRA file 'bad.safetensors' is damaged: '{name}.lora_up.weight' holds "
                                            r"640 NaN or infinite values \(of 640\)"):
        read_lora(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------------------------------------- resolutions
@pytest.mark.parametrize("resolution", [72, 200, 520, 4096])
def test_the_pipeline_refuses_a_resolution_the_model_cannot_sample(resolution):
    from xportrait_core.options import OptionError
    from xportrait_core.pipeline import Framing

    with pytest.raises(OptionError, match=rf"resolution: must be a multiple of 64 pixels from 64 to 2048 .*got "
                                          rf"{resolution}"):
        Framing(resolution)


def test_the_steps_counted_are_the_steps_the_original_ddim_runs():
    from xportrait_core.sampling.sampler import SamplerOptions

    assert SamplerOptions(steps=30).steps_run == 31
    assert SamplerOptions(steps=30, scheduler="euler").steps_run == 30


def test_an_mp4_can_still_be_written_next_to_its_temporary_file_name(tmp_path):
    """The temporary file keeps the destination's suffix (FFmpeg picks the format by it): every format writes."""
    for suffix in (".mp4", ".webm", ".gif"):
        path = write_video(tmp_path / f"clip{suffix}", gradient_frames(), fps=10)
        with av.open(str(path)) as container:
            assert container.streams.video
    assert leftovers(tmp_path, {"clip.mp4", "clip.webm", "clip.gif"}) == []
