"""Bad input on the command line (`python -m xportrait_core animate | demo | convert`): one test per class of mistake.

Each asserts what the user sees (exit status 2 or 130 and a one-line message naming the input, what is wrong and what
to do), that nothing of theirs was destroyed or half-written, and, where the mistake can be known before, that the
model was never loaded (`model_must_not_load` fails the test if it is). Tiny model, 128 px, few frames and steps.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from xportrait_core.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_TEXT_HEADS = 2  # the tiny random model's text encoder: 32 wide, 2 heads
FAST = ["--resolution", "128", "--steps", "1", "--device", "cpu"]


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint (.safetensors with its metadata, and the original's .th layout), a portrait, an 8-frame
    driving video, a picture without a face."""
    from xportrait_core.cli.demo_clip import head_motion_clip
    from xportrait_core.media.video_io import write_video
    from xportrait_core.model.checkpoint import save_model_checkpoint
    from xportrait_core.model.tiny_model import build_random_model

    folder = tmp_path_factory.mktemp("cli_inputs")
    model = build_random_model(seed=1)
    save_model_checkpoint(model, folder / "tiny.safetensors")
    torch.save({"state_dict": model.state_dict()}, folder / "tiny.th")
    clip = head_motion_clip(frames=8, size=128)
    Image.fromarray((clip.source[0].numpy() * 255).round().astype(np.uint8)).save(folder / "portrait.png")
    write_video(folder / "driving.mp4", clip.driving, fps=10)
    Image.new("RGB", (128, 128), (90, 120, 150)).save(folder / "wall.png")
    return {name: folder / name for name in ("tiny.safetensors", "tiny.th", "portrait.png", "driving.mp4",
                                              "wall.png")}


@pytest.fixture
def model_must_not_load(monkeypatch):
    """Fail the test if the command loads the model: the mistake must be reported before that."""
    from xportrait_core.model import checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(checkpoint, "load_model", refuse)


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder this process cannot create files in: a chmod 555 folder, or /sys where chmod does not bind (root)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / "probe").touch()
        except OSError:
            yield candidate
            break
        (candidate / "probe").unlink()
    else:
        pytest.skip("no folder here refuses writes")
    folder.chmod(0o755)


def animate(files, output, *extra):
    return main(["animate", str(files["tiny.safetensors"]), str(files["portrait.png"]), str(files["driving.mp4"]),
                 str(output), *FAST, *extra])


def error_line(capsys) -> str:
    """The one line the command printed on stderr (asserting there is exactly one and no traceback)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def same_bytes_as_before(path: Path, before: bytes) -> bool:
    return path.read_bytes() == before


# --------------------------------------------------------------------------------- outputs that are inputs
def test_output_equal_to_the_driving_video_is_refused_and_the_video_kept(files, tmp_path, capsys, model_must_not_load):
    driving = tmp_path / "clip.mp4"
    driving.write_bytes(files["driving.mp4"].read_bytes())
    code = main(["animate", str(files["tiny.safetensors"]), str(files["portrait.png"]), str(driving), str(driving)])
    assert code == 2
    assert re.search(r"output '.*clip.mp4' is the driving video .*give the output another name", error_line(capsys))
    assert same_bytes_as_before(driving, files["driving.mp4"].read_bytes())


def test_output_naming_an_input_by_another_spelling_is_refused(files, tmp_path, capsys, model_must_not_load,
                                                                monkeypatch):
    """./clip.mp4, an absolute path and a symlink all name the driving video."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(files["driving.mp4"].read_bytes())
    (tmp_path / "link.mp4").symlink_to(tmp_path / "clip.mp4")
    for output in ("./clip.mp4", str(tmp_path / "clip.mp4"), "link.mp4"):
        assert main(["animate", str(files["tiny.safetensors"]), str(files["portrait.png"]), "clip.mp4", output]) == 2
        assert "is the driving video" in error_line(capsys)


def test_output_equal_to_the_init_video_is_refused(files, tmp_path, capsys, model_must_not_load):
    init = tmp_path / "init.mp4"
    init.write_bytes(files["driving.mp4"].read_bytes())
    assert animate(files, init, "--init-video", str(init)) == 2
    assert "is the --init-video" in error_line(capsys)


def test_comparison_equal_to_the_output_is_refused(files, tmp_path, capsys, model_must_not_load):
    out = tmp_path / "out.mp4"
    assert animate(files, out, "--comparison", str(out)) == 2
    assert "--comparison" in (line := error_line(capsys)) and "is the output" in line


def test_comparison_equal_to_the_driving_video_is_refused(files, tmp_path, capsys, model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", "--comparison", str(files["driving.mp4"])) == 2
    assert "--comparison" in (line := error_line(capsys)) and "is the driving video" in line


# ------------------------------------------------------------------------------------------- output paths
@pytest.mark.parametrize("name", ["out.avi", "out.png", "out.mov", "out"])
def test_output_suffix_that_cannot_be_written_is_refused_before_the_model_loads(files, tmp_path, capsys, name,
                                                                                model_must_not_load):
    assert animate(files, tmp_path / name) == 2
    assert "must end in .mp4, .webm or .gif" in error_line(capsys)


def test_a_folder_given_as_the_output_is_refused(files, tmp_path, capsys, model_must_not_load):
    assert animate(files, tmp_path) == 2
    assert "is a folder; give a file name" in error_line(capsys)


def test_an_output_folder_that_does_not_exist_is_refused(files, tmp_path, capsys, model_must_not_load):
    assert animate(files, tmp_path / "renders" / "out.mp4") == 2
    assert re.search(r"the folder '.*renders' does not exist; create it first", error_line(capsys))
    assert not (tmp_path / "renders").exists()


def test_an_output_folder_that_cannot_be_written_is_refused(files, unwritable_folder, capsys, model_must_not_load):
    assert animate(files, unwritable_folder / "out.mp4") == 2
    assert "cannot write into the folder" in error_line(capsys)


# ------------------------------------------------------------------------------------------------ input paths
@pytest.mark.parametrize("which, expected", [("source", "source image 'missing.png' does not exist"),
                                             ("driving", "driving video 'missing.mp4' does not exist")])
def test_a_missing_source_or_driving_is_named_as_what_it_is(files, tmp_path, capsys, which, expected,
                                                            model_must_not_load, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = "missing.png" if which == "source" else str(files["portrait.png"])
    driving = "missing.mp4" if which == "driving" else str(files["driving.mp4"])
    assert main(["animate", str(files["tiny.safetensors"]), source, driving, "out.mp4"]) == 2
    assert expected in error_line(capsys)


@pytest.mark.parametrize("option", ["--extra-reference", "--init-video", "--lora", "--landmarks-model"])
def test_a_missing_optional_input_is_named_by_its_option_before_the_model_loads(files, tmp_path, capsys, option,
                                                                                 model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", option, str(tmp_path / "absent.file")) == 2
    assert re.search(rf"{option}( #1)? '.*absent.file' does not exist", error_line(capsys))


def test_a_checkpoint_that_is_a_folder_is_named_as_such(files, tmp_path, capsys):
    assert main(["animate", str(tmp_path), str(files["portrait.png"]), str(files["driving.mp4"]),
                 str(tmp_path / "out.mp4"), *FAST]) == 2
    assert "is a folder; give the checkpoint file in it" in error_line(capsys)


def test_a_file_that_is_not_a_lora_is_named_before_the_model_loads(files, tmp_path, capsys, model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", "--lora", str(files["tiny.safetensors"])) == 2
    assert "'tiny.safetensors' is not an SD1.5 LoRA" in error_line(capsys)


def test_a_truncated_lora_is_named_before_the_model_loads(tmp_path, files, capsys, model_must_not_load):
    lora = tmp_path / "half_lora.safetensors"
    lora.write_bytes(files["tiny.safetensors"].read_bytes()[:1000])
    assert animate(files, tmp_path / "out.mp4", "--lora", str(lora)) == 2
    assert "LoRA file 'half_lora.safetensors' could not be read" in error_line(capsys)


def test_an_init_video_of_another_length_is_refused_before_the_model_loads(files, tmp_path, capsys,
                                                                           model_must_not_load):
    from xportrait_core.media.video_io import read_video, write_video

    short = write_video(tmp_path / "short.mp4", read_video(files["driving.mp4"]).frames[:3], fps=10)
    assert animate(files, tmp_path / "out.mp4", "--init-video", str(short)) == 2
    assert "--init-video has 3 frames but the driving video 8" in error_line(capsys)


# --------------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("option, value", [("--cfg", "nan"), ("--cfg", "inf"), ("--strength", "nan"),
                                           ("--lora-strength", "inf")])
def test_non_finite_numbers_are_refused_at_once(files, tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exited:
        animate(files, tmp_path / "out.mp4", option, value)
    assert exited.value.code == 2
    assert f"argument {option}: expected a finite number, got '{value}'" in error_line(capsys)


@pytest.mark.parametrize("resolution", ["72", "200", "0"])
def test_a_resolution_that_is_not_a_multiple_of_64_is_refused(files, tmp_path, capsys, resolution,
                                                              model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", "--resolution", resolution) == 2
    assert "--resolution: must be a multiple of 64 pixels" in error_line(capsys)


@pytest.mark.parametrize("arguments, expected", [
    (["--steps", "0"], "--steps: must be a whole number from 1 to 1000, got 0"),
    (["--steps", "1001"], "--steps: must be a whole number from 1 to 1000"),
    (["--cfg", "-1"], "--cfg: must be a finite number from 0 to 30"),
    (["--seed", "-1"], "--seed: must be a whole number from 0 to"),
    (["--window", "32"], "--window: must be a whole number from 16 to 24 (the motion modules were trained on 16"),
    (["--overlap", "16"], "--overlap: must be a whole number from 0 to 15"),
    (["--strength", "1.5"], "--strength: must be a finite number in (0, 1]"),
    (["--steps", "4", "--strength", "0.1"], "--strength: does not fit the steps"),
])
def test_a_sampling_option_that_cannot_work_is_named_by_its_flag(files, tmp_path, capsys, arguments, expected,
                                                                 model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", *arguments) == 2
    assert expected in error_line(capsys)


def test_an_overlap_the_video_is_too_short_for_is_named_after_reading_it(files, tmp_path, capsys,
                                                                         model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", "--max-frames", "4", "--overlap", "4") == 2
    assert re.search(r"--overlap: does not fit the video: .*4 frames and the overlap is 4", error_line(capsys))


@pytest.mark.parametrize("option", ["--max-frames", "--frame-step"])
def test_zero_frames_or_frame_step_is_refused_at_once(files, tmp_path, capsys, option):
    with pytest.raises(SystemExit):
        animate(files, tmp_path / "out.mp4", option, "0")
    assert f"argument {option}: must be a whole number >= 1, got 0" in error_line(capsys)


@pytest.mark.parametrize("value", ["first", "-2"])
def test_a_best_frame_that_is_no_frame_is_refused(files, tmp_path, capsys, value, model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", "--best-frame", value) == 2
    assert "--best-frame: must be auto, off or a frame number" in error_line(capsys)


# ----------------------------------------------------------------------------------------------------- devices
def test_a_device_torch_does_not_know_is_refused(files, tmp_path, capsys, model_must_not_load):
    assert main(["animate", str(files["tiny.safetensors"]), str(files["portrait.png"]), str(files["driving.mp4"]),
                 str(tmp_path / "out.mp4"), "--device", "tpu"]) == 2
    assert "--device 'tpu': not a device name; use auto, cpu, cuda, cuda:N or mps" in error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_asked_where_there_is_none_says_to_use_the_cpu(files, tmp_path, capsys, model_must_not_load):
    assert main(["animate", str(files["tiny.safetensors"]), str(files["portrait.png"]), str(files["driving.mp4"]),
                 str(tmp_path / "out.mp4"), "--device", "cuda"]) == 2
    assert re.search(r"--device 'cuda': .*use --device cpu", error_line(capsys))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_graphs_asked_on_the_cpu_is_refused_before_the_model_loads(files, tmp_path, capsys,
                                                                        model_must_not_load):
    assert main(["animate", str(files["tiny.safetensors"]), str(files["portrait.png"]), str(files["driving.mp4"]),
                 str(tmp_path / "out.mp4"), *FAST, "--compile", "cuda_graphs"]) == 2
    assert re.search(r"--compile: compile 'cuda_graphs' needs a CUDA device; the model runs on cpu", error_line(capsys))
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_graphs_asked_on_the_cpu_is_refused_by_the_demo_before_any_work(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "demo.mp4"), "--device", "cpu", "--compile", "cuda_graphs"]) == 2
    assert "--compile: compile 'cuda_graphs' needs a CUDA device" in error_line(capsys)
    assert not (tmp_path / "demo.mp4").exists()


@pytest.mark.parametrize("value", ["0", "-1"])
def test_windows_per_batch_below_one_is_refused(files, tmp_path, capsys, value, model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", "--windows-per-batch", value) == 2
    assert f"--windows-per-batch: must be a whole number >= 1, got {value}" in error_line(capsys)


def test_windows_per_batch_that_is_no_number_is_refused_at_once(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        animate(files, tmp_path / "out.mp4", "--windows-per-batch", "two")
    assert exit_.value.code == 2
    assert "argument --windows-per-batch: expected a whole number, got 'two'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ checkpoints
def test_a_checkpoint_with_a_nan_weight_is_refused_naming_the_tensor(files, tmp_path, capsys):
    state = load_file(str(files["tiny.safetensors"]))
    state["model.diffusion_model.out.2.weight"][0, 0, 0, 0] = float("nan")
    damaged = tmp_path / "damaged.safetensors"
    save_file(state, str(damaged), metadata={"xportrait.text_num_heads": str(TINY_TEXT_HEADS)})
    out = tmp_path / "out.mp4"
    assert main(["animate", str(damaged), str(files["portrait.png"]), str(files["driving.mp4"]), str(out),
                 *FAST]) == 2
    assert re.search(r"'damaged.safetensors' is damaged: 'model.diffusion_model.out.2.weight' holds 1 NaN",
                     error_line(capsys))
    assert not out.exists()


def test_a_small_checkpoint_asks_for_the_text_head_count_by_its_option(files, tmp_path, capsys):
    assert main(["animate", str(files["tiny.th"]), str(files["portrait.png"]), str(files["driving.mp4"]),
                 str(tmp_path / "out.mp4"), *FAST]) == 2
    assert "give the head count (--text-num-heads N)" in error_line(capsys)


def test_a_text_head_count_that_does_not_divide_the_encoder_is_refused(files, tmp_path, capsys):
    assert main(["animate", str(files["tiny.th"]), str(files["portrait.png"]), str(files["driving.mp4"]),
                 str(tmp_path / "out.mp4"), *FAST, "--text-num-heads", "3"]) == 2
    assert "a head count of 3 does not divide the text encoder's width 32" in error_line(capsys)


# ------------------------------------------------------------------------------------------- wrong names, faces
def test_a_source_without_a_face_names_the_source_and_the_option_before_the_model_loads(files, tmp_path, capsys,
                                                                                        model_must_not_load):
    assert main(["animate", str(files["tiny.safetensors"]), str(files["wall.png"]), str(files["driving.mp4"]),
                 str(tmp_path / "out.mp4"), *FAST]) == 2
    line = error_line(capsys)
    assert "No face was found in the source image" in line and "(--best-frame off)" in line
    assert "best_frame=None" not in line


# -------------------------------------------------------------------------------- a run that goes non-finite
def test_sampling_that_goes_non_finite_names_the_step_and_writes_nothing(files, tmp_path, capsys):
    """Finite weights so large that the UNet's output overflows float32 (as fp16 overflows on real models)."""
    state = load_file(str(files["tiny.safetensors"]))
    state["model.diffusion_model.out.2.weight"] *= 1e38
    state["model.diffusion_model.out.2.bias"].fill_(torch.finfo(torch.float32).max)
    overflowing = tmp_path / "overflowing.safetensors"
    save_file(state, str(overflowing), metadata={"xportrait.text_num_heads": str(TINY_TEXT_HEADS)})
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier render")
    assert main(["animate", str(overflowing), str(files["portrait.png"]), str(files["driving.mp4"]), str(out),
                 *FAST, "--cfg", "1"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"sampling went non-finite .* at step 1 of 1, in 8 of 8 frames \(0-7\)", err)
    assert "Try --precision fp32" in err and "a lower --cfg" in err and "Traceback" not in err
    assert out.read_bytes() == b"an earlier render"


# -------------------------------------------------------------------------------------------------------- demo
def test_demo_with_zero_frames_is_refused_at_once(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--frames", "0"])
    assert "argument --frames: must be a whole number >= 1, got 0" in error_line(capsys)


@pytest.mark.parametrize("fps", ["0", "nan"])
def test_demo_with_a_frame_rate_that_is_not_positive_is_refused(capsys, fps):
    with pytest.raises(SystemExit):
        main(["demo", "--fps", fps])
    assert "argument --fps:" in error_line(capsys)


def test_demo_below_its_tiny_models_smallest_size_is_refused(tmp_path, capsys):
    assert main(["demo", "--resolution", "64", "--output", str(tmp_path / "d.mp4")]) == 2
    assert "--resolution: the demo's tiny model needs 128 px or more, got 64" in error_line(capsys)


def test_demo_with_fewer_frames_than_the_overlap_names_the_overlap(tmp_path, capsys):
    assert main(["demo", "--frames", "4", "--output", str(tmp_path / "d.mp4")]) == 2
    assert "--overlap: does not fit the video" in error_line(capsys)


def test_demo_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from xportrait_core.cli import demo_clip

    monkeypatch.setattr(demo_clip, "head_motion_clip", lambda *a, **k: pytest.fail("work started"))
    assert main(["demo", "--output", str(tmp_path / "demo.avi")]) == 2
    assert "--output '" in (line := error_line(capsys)) and "must end in .mp4, .webm or .gif" in line


def test_progress_counts_the_steps_that_really_run(files, tmp_path, capsys):
    """30 steps asked at strength 0.04: the original's DDIM has 31 timesteps (1000 // 30 = 33 does not divide
    1000) and img2img keeps int(31 * 0.04) = 1 of them; the line must end at 1/1, not 1/30."""
    assert animate(files, tmp_path / "out.mp4", "--steps", "30", "--strength", "0.04", "--cfg", "1",
                   "--placement", "fixed") == 0
    progress = capsys.readouterr().err.split("\r")[-1]
    assert progress.startswith("sampling: step 1/1, window 1/1")


# ------------------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_prints_one_line_exits_130_and_leaves_no_file(tmp_path):
    command = [sys.executable, "-m", "xportrait_core", "demo", "--frames", "8", "--steps", "500",
               "--landmarks", "exact", "--output", str(tmp_path / "demo.mp4")]
    # A suite started in the background by a shell (`pytest ... &`) runs with SIGINT ignored, which its children
    # inherit and Python then keeps: the demo gets Ctrl-C's usual handling back, as in a terminal.
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    while b"sampling: step" not in seen:
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, f"the demo ended before sampling: {seen.decode()}"
        seen += chunk
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate()
    text = (seen + rest).decode()
    assert process.returncode == 130
    assert "Traceback" not in text
    assert text.rstrip().splitlines()[-1] == "interrupted (Ctrl-C): stopped; no file was left half-written"
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------- convert
def test_convert_onto_its_own_source_is_refused_and_the_source_kept(files, tmp_path, capsys):
    source = tmp_path / "model.safetensors"
    source.write_bytes(files["tiny.safetensors"].read_bytes())
    assert main(["convert", str(source), str(tmp_path / "." / "model.safetensors")]) == 2
    assert "is the source checkpoint" in error_line(capsys)
    assert same_bytes_as_before(source, files["tiny.safetensors"].read_bytes())


@pytest.mark.parametrize("name", ["same.th", "converted.bin", "converted"])
def test_convert_to_a_name_that_is_not_safetensors_is_refused(files, tmp_path, capsys, name):
    source = tmp_path / "same.th"
    source.write_bytes(files["tiny.th"].read_bytes())
    assert main(["convert", str(source), str(tmp_path / name)]) == 2
    assert "the name must end in .safetensors" in error_line(capsys)
    assert source.read_bytes() == files["tiny.th"].read_bytes()


def test_convert_into_a_missing_folder_is_refused(files, tmp_path, capsys):
    assert main(["convert", str(files["tiny.th"]), str(tmp_path / "models" / "x.safetensors")]) == 2
    assert "the folder" in (line := error_line(capsys)) and "does not exist" in line


def test_convert_into_a_folder_that_cannot_be_written_is_refused(files, unwritable_folder, capsys):
    assert main(["convert", str(files["tiny.th"]), str(unwritable_folder / "x.safetensors")]) == 2
    assert "cannot write into the folder" in error_line(capsys)


def test_convert_of_a_nan_checkpoint_names_the_tensor_not_the_disk(files, tmp_path, capsys):
    state = torch.load(files["tiny.th"], weights_only=True)["state_dict"]
    state["first_stage_model.decoder.conv_out.bias"][0] = float("inf")
    damaged = tmp_path / "damaged.th"
    torch.save({"state_dict": state}, damaged)
    assert main(["convert", str(damaged), str(tmp_path / "x.safetensors")]) == 2
    line = error_line(capsys)
    assert "'first_stage_model.decoder.conv_out.bias' holds 1 NaN or infinite values" in line
    assert "disk" not in line and not (tmp_path / "x.safetensors").exists()


def test_convert_to_fp16_of_weights_beyond_its_range_is_refused(files, tmp_path, capsys):
    state = torch.load(files["tiny.th"], weights_only=True)["state_dict"]
    state["model.diffusion_model.out.2.bias"][0] = 1e6
    big = tmp_path / "big.th"
    torch.save({"state_dict": state}, big)
    assert main(["convert", str(big), str(tmp_path / "x.safetensors"), "--fp16"]) == 2
    assert "'model.diffusion_model.out.2.bias' holds values beyond fp16's range" in error_line(capsys)


def test_convert_keeps_the_text_head_count_so_the_result_loads(files, tmp_path):
    from xportrait_core.model.checkpoint import load_model

    from_safetensors, from_th = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["convert", str(files["tiny.safetensors"]), str(from_safetensors)]) == 0
    assert main(["convert", str(files["tiny.th"]), str(from_th), "--text-num-heads", str(TINY_TEXT_HEADS)]) == 0
    for converted in (from_safetensors, from_th):
        model, _ = load_model(converted)
        assert model.config.text.num_heads == TINY_TEXT_HEADS


def test_the_command_line_checks_outputs_against_exactly_what_the_writer_writes(tmp_path):
    """One list of suffixes (options.VIDEO_OUTPUT_SUFFIXES) serves the command line's check and the writer."""
    from xportrait_core.media.video_io import VideoWriteError, write_video
    from xportrait_core.options import VIDEO_OUTPUT_SUFFIXES

    for suffix in VIDEO_OUTPUT_SUFFIXES:
        write_video(tmp_path / f"clip{suffix}", torch.rand(2, 16, 16, 3), fps=5)
    with pytest.raises(VideoWriteError, match="the suffix must be one of .mp4, .webm, .gif"):
        write_video(tmp_path / "clip.avi", torch.rand(2, 16, 16, 3), fps=5)
