"""The `queue` sub-command of `python -m xportrait_core`: its arguments in xportrait_core.cli.main, its run in
xportrait_core.batch_queue.command."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_comfy_queue import FakeComfy, api_workflow, closed_port_url
from xportrait_core.cli.main import main
from xportrait_core.options import EXIT_BAD_INPUT, EXIT_JOBS_FAILED, EXIT_NO_SERVER, EXIT_OK

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST_POLL = "0.01"


@pytest.fixture
def fake_server():
    fake = FakeComfy()
    yield fake
    fake.stop()


@pytest.fixture
def inputs(tmp_path) -> dict:
    """A workflow file, one source image and one driving video."""
    (tmp_path / "workflow.json").write_text(json.dumps(api_workflow()))
    (tmp_path / "face.png").write_bytes(b"png")
    (tmp_path / "clip.mp4").write_bytes(b"mp4")
    return {"workflow": tmp_path / "workflow.json", "source": tmp_path / "face.png",
            "driving": tmp_path / "clip.mp4", "output": tmp_path / "out"}


def queue_args(inputs: dict, *servers: str) -> list[str]:
    server_args = [arg for url in servers for arg in ("--server", url)]
    return ["queue", str(inputs["workflow"]), "--sources", str(inputs["source"]), "--drivings",
            str(inputs["driving"]), "--output", str(inputs["output"]), "--poll-interval", FAST_POLL, *server_args]


def test_queue_help_runs_as_a_module():
    completed = subprocess.run([sys.executable, "-m", "xportrait_core", "queue", "--help"], cwd=REPO_ROOT,
                               capture_output=True, text=True)

    assert completed.returncode == 0
    for option in ("--sources", "--drivings", "--pairs", "--server", "--seed-policy", "--state", "exit status"):
        assert option in completed.stdout


def test_parsing_the_command_line_does_not_import_torch():
    probe = "import sys; from xportrait_core.cli import main; main.build_parser(); print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)

    assert completed.stdout.strip() == "False"


def test_building_the_parser_does_not_load_the_batch_queue():
    """The queue's runner, HTTP client and state file are imported when `queue` runs, not by the other commands."""
    heavy = ["xportrait_core.batch_queue.runner", "xportrait_core.batch_queue.comfy_client",
             "xportrait_core.batch_queue.queue_state", "xportrait_core.batch_queue.command", "torch"]
    probe = (f"import sys, xportrait_core.cli.main; xportrait_core.cli.main.build_parser(); "
             f"print([name for name in {heavy!r} if name in sys.modules])")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_queue_runs_the_batch_and_reports_it(fake_server, inputs, capsys):
    status = main(queue_args(inputs, fake_server.url))

    assert status == EXIT_OK
    assert "1 done, 0 failed" in capsys.readouterr().out
    assert [p.name for p in (inputs["output"] / "face__clip").iterdir()] == ["XP_00000_.mp4"]
    assert (inputs["output"] / "queue_state.json").exists()


def test_queue_passes_seed_options_to_the_workflow(fake_server, inputs):
    main(queue_args(inputs, fake_server.url) + ["--seed", "5", "--seed-policy", "increment"])

    assert fake_server.accepted[0]["prompt"]["3"]["inputs"]["seed"] == 5


def test_unreachable_server_exits_with_its_own_status(inputs, capsys):
    url = closed_port_url()

    status = main(queue_args(inputs, url))

    assert status == EXIT_NO_SERVER
    assert url in capsys.readouterr().err


def test_missing_inputs_are_a_usage_error(inputs, capsys):
    status = main(["queue", str(inputs["workflow"]), "--sources", str(inputs["source"])])

    assert status == EXIT_BAD_INPUT
    assert "--sources with --drivings, or --pairs" in capsys.readouterr().err


def test_rejected_jobs_are_listed_with_the_node_error(inputs, capsys):
    rejecting = FakeComfy(reject_with={"3": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                                         "details": "ckpt_name: 'model.pth' not in []",
                                                         "extra_info": {}}],
                                             "dependent_outputs": ["9"], "class_type": "XPortraitSampler"}})
    try:
        status = main(queue_args(inputs, rejecting.url) + ["--max-attempts", "1"])
    finally:
        rejecting.stop()

    assert status == EXIT_JOBS_FAILED
    err = capsys.readouterr().err
    assert "failed: face__clip after 1 attempts" in err
    assert "node 3 (XPortraitSampler): Value not in list: ckpt_name" in err


def start_queue_process(inputs: dict, url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "xportrait_core", *queue_args(inputs, url)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_second_queue_on_the_same_output_folder_says_which_process_runs_there(inputs, capsys):
    slow = FakeComfy(run_time_s=2.0)
    first = start_queue_process(inputs, slow.url)
    try:
        wait_until(lambda: len(slow.accepted) == 1)

        status = main(queue_args(inputs, slow.url))

        err = capsys.readouterr().err
        assert status == EXIT_BAD_INPUT
        assert f"Another queue is running in {inputs['output']} (PID {first.pid} on " in err
        assert first.wait(timeout=60) == EXIT_OK
    finally:
        first.kill()
        slow.stop()
    assert len(slow.accepted) == 1  # rendered once, by the first


def test_a_killed_queue_leaves_no_lock_and_its_prompt_is_collected_not_rendered_again(inputs, capsys):
    slow = FakeComfy(run_time_s=1.0)
    first = start_queue_process(inputs, slow.url)
    try:
        wait_until(lambda: len(slow.accepted) == 1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)

        status = main(queue_args(inputs, slow.url))
    finally:
        first.kill()
        slow.stop()
    assert status == EXIT_OK and "1 done, 0 failed" in capsys.readouterr().out
    assert len(slow.accepted) == 1
