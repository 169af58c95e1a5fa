"""Bad input on the command line, second round (issue 20): no silent success, no traceback or hang, messages a user
can act on. Each case failed before its fix. Tiny model, 128 px, 8 frames, one step.
"""
from __future__ import annotations

import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from xportrait_core.cli.main import main
from xportrait_core.options import OPTIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = ["--resolution", "128", "--steps", "1", "--device", "cpu"]
NAME_MAX = 255


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, a portrait, an 8-frame driving video with a face and one without any."""
    from xportrait_core.cli.demo_clip import head_motion_clip
    from xportrait_core.media.video_io import write_video
    from xportrait_core.model.checkpoint import save_model_checkpoint
    from xportrait_core.model.tiny_model import build_random_model

    folder = tmp_path_factory.mktemp("cli_inputs_20")
    model = build_random_model(seed=1)
    save_model_checkpoint(model, folder / "tiny.safetensors")
    clip = head_motion_clip(frames=8, size=128)
    Image.fromarray((clip.source[0].numpy() * 255).round().astype(np.uint8)).save(folder / "portrait.png")
    write_video(folder / "driving.mp4", clip.driving, fps=10)
    write_video(folder / "wall.mp4", torch.full((8, 128, 128, 3), 0.4), fps=10)
    return {name: folder / name for name in ("tiny.safetensors", "portrait.png", "driving.mp4", "wall.mp4")}


@pytest.fixture
def model_must_not_load(monkeypatch):
    from xportrait_core.model import checkpoint

    monkeypatch.setattr(checkpoint, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


@pytest.fixture
def videos_must_not_be_read(monkeypatch):
    from xportrait_core.media import video_io

    monkeypatch.setattr(video_io, "read_video", lambda *a, **k: pytest.fail("work on the videos started"))


def animate(files, output, *extra, checkpoint=None, source=None, driving=None):
    return main(["animate", str(checkpoint or files["tiny.safetensors"]), str(source or files["portrait.png"]),
                 str(driving or files["driving.mp4"]), str(output), *FAST, *extra])


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------- no silent success
def test_a_driving_video_without_a_face_in_any_frame_is_an_error_before_the_model_loads(files, tmp_path, capsys,
                                                                                        model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", driving=files["wall.mp4"]) == 2
    line = error_line(capsys)
    assert "No face was found in any of the driving video's 8 frames" in line and "follow no motion" in line
    assert list(tmp_path.iterdir()) == []


def test_cfg_has_one_range_on_the_command_line_and_the_node(files, tmp_path, capsys, model_must_not_load):
    from nodes.node_inputs import input_spec

    top = OPTIONS["cfg"].maximum
    assert animate(files, tmp_path / "out.mp4", "--cfg", "1e308") == 2
    assert f"--cfg: must be a finite number from 0 to {top:g}" in error_line(capsys)
    assert input_spec(OPTIONS["cfg"])[1]["max"] == top


def test_a_legal_245_byte_output_name_is_written(files, tmp_path, capsys):
    output = tmp_path / ("x" * 241 + ".mp4")
    assert len(os.fsencode(output.name)) == 245
    assert animate(files, output, "--cfg", "1") == 0
    assert output.is_file() and [p.name for p in tmp_path.iterdir()] == [output.name]


def test_an_output_name_longer_than_the_file_system_allows_is_refused_before_the_model_loads(
        files, tmp_path, capsys, model_must_not_load):
    assert animate(files, tmp_path / ("x" * 252 + ".mp4")) == 2
    line = error_line(capsys)
    assert f"the name is 256 bytes long, more than this file system allows ({NAME_MAX})" in line
    assert "disk" not in line


# -------------------------------------------------------------------------------------- no traceback, no hang
def _decompression_bomb(path: Path) -> None:
    """A 70-byte PNG whose header claims 100000 x 100000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


def test_a_decompression_bomb_source_is_refused_with_a_clear_message(files, tmp_path, capsys, model_must_not_load):
    bomb = tmp_path / "bomb.png"
    _decompression_bomb(bomb)
    assert animate(files, tmp_path / "out.mp4", source=bomb) == 2
    line = error_line(capsys)
    assert "bomb.png" in line and "more pixels than Pillow's safety limit" in line


def test_a_frame_step_that_leaves_one_frame_blames_the_frame_step(files, tmp_path, capsys, model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", "--frame-step", "100000") == 2
    line = error_line(capsys)
    assert line.startswith("error: --frame-step 100000 leaves 1 frame") and "--overlap" not in line


def test_a_demo_frame_rate_too_slow_to_store_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from xportrait_core.cli import demo_clip

    monkeypatch.setattr(demo_clip, "head_motion_clip", lambda *a, **k: pytest.fail("work started"))
    assert main(["demo", "--fps", "0.0001", "--output", str(tmp_path / "d.mp4")]) == 2
    assert "--fps: 0.0001 fps is too slow" in error_line(capsys)


def test_a_named_pipe_as_the_driving_video_is_refused_at_once(files, tmp_path):
    pipe = tmp_path / "driving.mp4"
    os.mkfifo(pipe)
    command = [sys.executable, "-m", "xportrait_core", "animate", str(files["tiny.safetensors"]),
               str(files["portrait.png"]), str(pipe), str(tmp_path / "out.mp4"), *FAST]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2
    assert "is not a regular file (a named pipe" in done.stderr and "Traceback" not in done.stderr


def test_compile_blocks_on_the_cpu_is_refused_before_the_model_loads(files, tmp_path, capsys, model_must_not_load):
    assert animate(files, tmp_path / "out.mp4", "--compile", "compile_blocks") == 2
    assert "--compile: compile 'compile_blocks' is for CUDA GPUs" in error_line(capsys)


def test_a_dat_file_that_is_not_a_shape_predictor_is_named(files, tmp_path, capsys, model_must_not_load):
    fake = tmp_path / "shape_predictor_68_face_landmarks.dat"
    fake.write_bytes(b"<html>not found</html>" * 10)
    assert animate(files, tmp_path / "out.mp4", "--landmarks-model", str(fake)) == 2
    line = error_line(capsys)
    assert "is not a dlib shape predictor" in line and "RuntimeError" not in line


def _demo_until_sampling(output: Path) -> tuple[subprocess.Popen, bytes]:
    command = [sys.executable, "-m", "xportrait_core", "demo", "--frames", "8", "--steps", "500",
               "--landmarks", "exact", "--output", str(output)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    seen = b""
    while b"sampling: step" not in seen:
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, f"the demo ended before sampling: {seen.decode()}"
        seen += chunk
    return process, seen


def test_sigterm_is_handled_like_ctrl_c_and_exits_143(tmp_path):
    process, seen = _demo_until_sampling(tmp_path / "demo.mp4")
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    text = (seen + rest).decode()
    assert process.returncode == 143
    assert "Traceback" not in text
    assert text.rstrip().splitlines()[-1] == "terminated (SIGTERM): stopped; no file was left half-written"
    assert list(tmp_path.iterdir()) == []


def test_a_second_ctrl_c_right_after_the_first_prints_no_traceback(tmp_path):
    process, seen = _demo_until_sampling(tmp_path / "demo.mp4")
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    text = (seen + rest).decode()
    assert process.returncode == 130
    assert "Traceback" not in text and "Exception ignored" not in text
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------- messages to act on
def test_a_folder_given_as_the_source_is_refused(files, tmp_path, capsys, model_must_not_load):
    folder = tmp_path / "faces"
    folder.mkdir()
    (folder / "a.png").write_bytes(files["portrait.png"].read_bytes())
    assert animate(files, tmp_path / "out.mp4", source=folder) == 2
    assert "source image '" in (line := error_line(capsys)) and "is a folder; pick one image file" in line


def test_a_five_byte_text_checkpoint_is_one_line_before_any_work_on_the_videos(files, tmp_path, capsys,
                                                                             videos_must_not_be_read):
    text = tmp_path / "model_state-415001.th"
    text.write_text("hello")
    assert animate(files, tmp_path / "out.mp4", checkpoint=text) == 2
    line = error_line(capsys)
    assert "is a text file (5 bytes, starting 'hello'), not a checkpoint" in line
    assert "weights_only" not in line and len(line) < 250


def _plain_pickle(path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=4))


@pytest.mark.parametrize("make, expected", [
    (_plain_pickle, "is a plain Python pickle, not a checkpoint written by torch.save: it was not loaded"),
    (lambda path: path.write_bytes(Path(path.parent / "tiny.safetensors").read_bytes()),
     "is a safetensors file named '.th'; rename it to 'model.safetensors'"),
    (lambda path: path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 12\n"),
     "is a Git LFS pointer"),
])
def test_a_checkpoint_that_is_something_else_says_what_it_is_and_never_advises_weights_only_false(
        files, tmp_path, capsys, make, expected, videos_must_not_be_read):
    (tmp_path / "tiny.safetensors").write_bytes(files["tiny.safetensors"].read_bytes())
    path = tmp_path / "model.th"
    make(path)
    assert animate(files, tmp_path / "out.mp4", checkpoint=path) == 2
    line = error_line(capsys)
    assert expected in line and "weights_only" not in line


def test_bad_text_head_metadata_is_named_not_an_int_parse_error(files, tmp_path, capsys):
    state = load_file(str(files["tiny.safetensors"]))
    damaged = tmp_path / "damaged.safetensors"
    save_file(state, str(damaged), metadata={"xportrait.text_num_heads": "two"})
    assert animate(files, tmp_path / "out.mp4", checkpoint=damaged) == 2
    line = error_line(capsys)
    assert "metadata 'xportrait.text_num_heads' is 'two', not a head count" in line
    assert "--text-num-heads N" in line and "invalid literal" not in line


def test_convert_of_a_folder_says_to_pick_the_file(tmp_path, capsys):
    (tmp_path / "models").mkdir()
    assert main(["convert", str(tmp_path / "models"), str(tmp_path / "x.safetensors")]) == 2
    assert re.search(r"checkpoint '.*models' is a folder; give the checkpoint file in it", error_line(capsys))


def test_convert_of_a_wrong_shaped_checkpoint_is_refused_on_the_command_line(files, tmp_path, capsys):
    state = load_file(str(files["tiny.safetensors"]))
    key = "pose_control_model.input_hint_block.0.weight"
    state[key] = torch.zeros(*state[key].shape[:2], 1, 1)
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong), metadata={"xportrait.text_num_heads": "2"})
    assert main(["convert", str(wrong), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "tensors of the wrong shape" in err and "read back and verified" not in err
    assert not (tmp_path / "x.safetensors").exists()


def test_a_command_ended_by_an_exception_restores_the_signal_handlers(files, tmp_path, monkeypatch):
    from xportrait_core.model import checkpoint_convert

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(checkpoint_convert, "convert_to_safetensors", interrupted)
    assert main(["convert", str(files["tiny.safetensors"]), str(tmp_path / "x.safetensors")]) == 130
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_frame_step_that_leaves_frames_at_a_rate_too_slow_to_store_blames_the_frame_step():
    """Three frames of a 25 fps video kept one in 100000 (a video of 300000+ frames): a rate of 1/4000 fps, which no
    video can store; said before any work, not as a ZeroDivisionError after sampling."""
    import argparse

    from xportrait_core.cli.local_commands import CommandLineError, _check_driving_frames

    with pytest.raises(CommandLineError, match=r"--frame-step 100000: 0\.00025 fps is too slow .* Use a smaller "
                                               r"--frame-step\."):
        _check_driving_frames(argparse.Namespace(frame_step=100000), 3, 25 / 100000)
