"""The command line as a new user meets it: help pages, a missing requirement, the thread count, the console command.

The help is read as printed (argparse's formatting), the missing requirement is a fresh Python without kornia and
torch, and nothing here runs the model.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xportrait_core.cli import requirements as cli_requirements
from xportrait_core.cli.main import build_parser, main
from xportrait_core.cli.threads import free_cores, torch_threads
from xportrait_core.options import EXIT_BAD_INPUT, EXIT_INTERRUPTED, check_best_frame

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("animate", "demo", "convert", "queue")


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"] if command else ["--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- help pages
@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_every_help_page_states_the_exit_statuses(command, capsys):
    text = " ".join(help_of(command, capsys).split())
    assert f"{EXIT_BAD_INPUT} bad arguments or inputs" in text and f"{EXIT_INTERRUPTED} interrupted by Ctrl-C" in text


@pytest.mark.parametrize("flag", ("--seed", "--scheduler", "--placement", "--frame-step", "--strength",
                                  "--max-frames", "--threads"))
def test_animate_shows_the_default_of(flag, capsys):
    entries = " ".join(help_of("animate", capsys).split()).split(" --")
    entry = next(text for text in entries if text.startswith(flag[2:] + " "))
    assert "(default: " in entry


@pytest.mark.parametrize("command, flag", [("animate", "lora_strength"), ("animate", "attention"),
                                           ("demo", "demo_fps"), ("convert", "convert_source")])
def test_these_flags_have_a_help_text(command, flag):
    parser = build_parser().commands[command]  # type: ignore[attr-defined]
    action = next(action for action in parser._actions if action.dest == flag)
    assert action.help and len(action.help) > 10


def groups_of(command: str) -> dict[str, set[str]]:
    parser = build_parser().commands[command]  # type: ignore[attr-defined]
    return {group.title: {action.dest for action in group._group_actions} for group in parser._action_groups}


@pytest.mark.parametrize("command", ("animate", "demo"))
def test_device_and_model_options_are_one_group_and_output_options_another(command):
    groups = groups_of(command)
    assert {"device", "threads", "precision", "attention", "compile", "windows_per_batch"} <= groups[
        "device and model"]
    output = {"animate": {"output", "comparison"}, "demo": {"demo_output", "demo_fps", "comparison"}}[command]
    assert groups["output"] == output


def test_verbose_is_offered_only_by_queue_whose_requests_it_logs(capsys):
    assert "--verbose" in help_of("queue", capsys)
    for command in ("", "animate", "demo", "convert"):
        assert "--verbose" not in help_of(command, capsys), command


def test_the_demos_description_is_wrapped_to_the_help_width(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = help_of("demo", capsys)
    description = text.split("\n\n")[1]
    assert description.startswith("Builds a tiny random")
    assert max(len(line) for line in description.splitlines()) <= 80
    assert "  python -m xportrait_core animate model_state-415001.th" in text  # the example kept as written


@pytest.mark.parametrize("command, arguments", [("animate", ["m.th", "s.png", "d.mp4", "o.mp4"]), ("demo", []),
                                                ("convert", ["a.th", "b.safetensors"])])
def test_an_unknown_option_points_to_that_commands_help(command, arguments, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, *arguments, "--no-such-option"])
    assert exited.value.code == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "unrecognized arguments: --no-such-option" in error
    assert error.rstrip().endswith(f"(options: python -m xportrait_core {command} --help)")


def test_the_console_command_names_itself_in_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"], prog="xportrait")
    assert capsys.readouterr().out.startswith("usage: xportrait demo")


# ------------------------------------------------------------------------------------------ best-frame words
def test_best_frame_off_is_the_one_word_and_none_an_alias():
    assert check_best_frame("off") == "off" and check_best_frame("none") == "off" and check_best_frame("None") == "off"
    parser = build_parser().commands["animate"]  # type: ignore[attr-defined]
    action = next(action for action in parser._actions if action.dest == "best_frame")
    assert action.metavar == "{auto,off,N}"


# ------------------------------------------------------------------------------------------------ requirements
def test_the_commands_package_list_is_requirements_txt():
    from nodes.requirements_check import requirements

    listed = set(requirements().values())
    assert set(cli_requirements.PACKAGES) | set(cli_requirements.LANDMARK_PACKAGES) == listed


WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if not installed: import fails, importlib.util.find_spec answers None
from xportrait_core.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("command", (["demo"], ["animate", "m.th", "s.png", "d.mp4", "o.mp4"]))
def test_without_the_requirements_a_command_says_what_to_install_in_one_line(command, tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT, "torch,kornia", *command], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""})
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.count("\n") == 1, done.stderr
    line = done.stderr
    assert line.startswith("error: missing Python packages torch, kornia>=0.7; install them with: ")
    assert f'"{sys.executable}" -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu' in line
    assert f'"{sys.executable}" -m pip install "kornia>=0.7"' in line
    assert not list(tmp_path.iterdir())  # nothing written


# ------------------------------------------------------------------------------------------------------ threads
@pytest.mark.parametrize("cores, load, expected", [(2, 0.0, 2), (2, 0.9, 2), (2, 1.2, 1), (2, 6.5, 1), (8, 2.5, 6),
                                                   (1, 0.0, 1)])
def test_the_default_threads_are_the_cores_the_load_leaves_free(cores, load, expected):
    assert free_cores(cores, load) == expected


def test_threads_are_set_for_the_command_and_restored_after():
    before = torch.get_num_threads()
    with torch_threads(1) as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_zero_threads_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--threads", "0", "--output", str(tmp_path / "d.mp4")])
    assert exited.value.code == EXIT_BAD_INPUT
    assert "--threads" in capsys.readouterr().err and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- where files go
def test_the_demos_and_the_queues_default_outputs_are_ignored_by_git():
    from xportrait_core.options import OPTIONS

    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert OPTIONS["demo_output"].default in ignored
    assert OPTIONS["queue_output"].default + "/" in ignored
