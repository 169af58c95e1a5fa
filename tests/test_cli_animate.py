"""The local command line: demo, animate (end to end with a tiny checkpoint file) and convert."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from xportrait_core.cli.main import main
from xportrait_core.media.video_io import read_video, write_video


def test_demo_writes_the_promised_video(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--output", str(out)]) == 0
    clip = read_video(out)
    assert clip.frames.shape == (24, 128, 128, 3)
    assert clip.fps == pytest.approx(12.0)
    printed = capsys.readouterr()
    assert "random" in printed.out and "model_state-415001.th" in printed.out
    assert "frames without a face: 0" in printed.out
    assert re.search(r"done in \d+ s \(\d+ CPU-seconds, \d+ threads?\)", printed.out)
    # The 128 px aligned frames are upsampled for the local patches' landmarks chunk by chunk: said once.
    upsampled = [record for record in caplog.records if "upsampled" in record.getMessage()]
    assert [record.getMessage().split(":")[0] for record in upsampled] == ["local patches"]
    # Not a terminal (captured): one line per progress update, no carriage returns running them together.
    progress = [line for line in printed.err.splitlines() if line.startswith("sampling: step")]
    assert "\r" not in printed.err and len(progress) == 8  # 4 steps x 2 windows


def test_demo_with_exact_landmarks_needs_no_landmark_model(tmp_path, capsys):
    out = tmp_path / "demo.gif"
    assert main(["demo", "--output", str(out), "--frames", "16", "--steps", "1", "--landmarks", "exact"]) == 0
    assert read_video(out).frames.shape[0] == 16
    assert "exact landmarks" in capsys.readouterr().out


def test_demo_with_weights_stored_in_fp8_runs_and_says_so(tmp_path, capsys):
    """--dtype fp8_e4m3fn: the 8-bit weight storage for 8 GB cards; on the CPU it computes in fp32 from fp8 weights."""
    out = tmp_path / "demo.gif"
    code = main(["demo", "--output", str(out), "--frames", "16", "--steps", "1", "--landmarks", "exact",
                 "--dtype", "fp8_e4m3fn", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    frames = read_video(out).frames
    assert frames.shape[0] == 16 and frames.float().std() > 0.01
    assert "(fp8_e4m3fn)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from xportrait_core.cli.demo_clip import head_motion_clip

    folder = tmp_path_factory.mktemp("inputs")
    clip = head_motion_clip(frames=16, size=256)
    source = folder / "portrait.png"
    Image.fromarray((clip.source[0].numpy() * 255).round().astype(np.uint8)).save(source)
    driving = folder / "driving.mp4"
    write_video(driving, clip.driving, fps=10)
    return source, driving


def test_animate_end_to_end_keeps_frame_count_and_rate(tmp_path, tiny_checkpoint, inputs, capsys):
    source, driving = inputs
    out, comparison = tmp_path / "out.mp4", tmp_path / "side_by_side.mp4"
    code = main(["animate", str(tiny_checkpoint), str(source), str(driving), str(out), "--resolution", "128",
                 "--steps", "2", "--cfg", "3", "--comparison", str(comparison), "--device", "cpu",
                 "--windows-per-batch", "2"])
    assert code == 0, capsys.readouterr().err
    result = read_video(out)
    assert result.frames.shape == (16, 128, 128, 3)
    assert result.fps == pytest.approx(10.0)
    assert read_video(comparison).frames.shape == (16, 128, 384, 3)
    assert "best frame:" in capsys.readouterr().out


def test_animate_with_missing_checkpoint_is_a_clear_error(tmp_path, inputs, capsys):
    source, driving = inputs
    code = main(["animate", str(tmp_path / "missing.th"), str(source), str(driving), str(tmp_path / "o.mp4")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_convert_writes_a_verified_safetensors(tmp_path, tiny_checkpoint, capsys):
    from safetensors.torch import load_file

    th = tmp_path / "model_state.th"
    torch.save({"state_dict": load_file(str(tiny_checkpoint))}, th)
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(th), str(out), "--fp16"]) == 0
    assert "verified" in capsys.readouterr().out
    converted = load_file(str(out))
    assert converted["model.diffusion_model.out.2.weight"].dtype == torch.float16
    assert converted["betas"].dtype == torch.float32


def test_convert_refuses_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"not a checkpoint")
    assert main(["convert", str(junk), str(tmp_path / "x.safetensors")]) == 2
    assert "is a text file (16 bytes, starting 'not a checkpoint'), not a checkpoint" in capsys.readouterr().err
