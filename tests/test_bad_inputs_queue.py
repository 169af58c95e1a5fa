"""The batch queue interrupted (Ctrl-C) or killed while its prompts are queued or running on ComfyUI servers: nothing
rendered twice, nothing lost, nobody left waiting for an answer. Against test_comfy_queue's in-process fake servers."""
from __future__ import annotations

import errno
import io
import json
import os
import re
from pathlib import Path

import pytest
from test_comfy_queue import api_workflow, batch, fakes, settings_for  # noqa: F401 (fixtures)

from xportrait_core.batch_queue import runner
from xportrait_core.batch_queue.queue_state import DONE, PENDING, RUNNING, QueueState
from xportrait_core.batch_queue.runner import run_queue
from xportrait_core.cli.main import main

SLOW_RUN_S = 0.5  # long enough that all four prompts are still on the server when the run stops


def stop_once_all_are_queued(monkeypatch, fake, jobs: int, exception: type[BaseException]) -> None:
    """Make the queue's first wait after all `jobs` prompts reached `fake` raise `exception` (Ctrl-C, or a kill)."""
    real_sleep = runner.time.sleep

    def sleep(seconds):
        if len(fake.accepted) >= jobs:
            monkeypatch.setattr(runner.time, "sleep", real_sleep)
            raise exception
        real_sleep(seconds)

    monkeypatch.setattr(runner.time, "sleep", sleep)


def test_prompts_left_on_the_server_by_a_killed_run_are_collected_not_rendered_again(fakes, batch, monkeypatch):
    fake = fakes(run_time_s=SLOW_RUN_S)
    settings = settings_for([fake], batch["output"], max_queue=4)
    stop_once_all_are_queued(monkeypatch, fake, 4, SystemExit)  # no handler runs: as a kill, for the state file
    with pytest.raises(SystemExit):
        run_queue(settings, batch["jobs"], batch["state"])
    left = QueueState.load(batch["state"])
    assert {job.prompt_id for job in left.jobs.values()} == {item["prompt_id"] for item in fake.accepted}
    assert all(job.status == RUNNING for job in left.jobs.values())

    state = run_queue(settings, batch["jobs"], batch["state"])

    assert len(fake.accepted) == 4  # 4 renders for 4 jobs, not 8
    assert state.counts()["done"] == 4
    assert all((batch["output"] / job.outputs[0]).is_file() for job in state.jobs.values())


def test_prompt_ids_are_saved_before_the_prompt_is_posted(fakes, batch, monkeypatch):
    fake = fakes()
    seen = []
    real_submit = runner.ComfyClient.submit_prompt

    def submit(client, prompt, client_id, prompt_id=None):
        saved = {job["prompt_id"]: job["status"] for job in json.loads(batch["state"].read_text())["jobs"]}
        seen.append(saved.get(prompt_id))
        return real_submit(client, prompt, client_id, prompt_id)

    monkeypatch.setattr(runner.ComfyClient, "submit_prompt", submit)
    run_queue(settings_for([fake], batch["output"]), batch["jobs"], batch["state"])
    assert seen == [RUNNING] * 4


def test_ctrl_c_can_cancel_this_batchs_prompts_and_only_those(fakes, batch, monkeypatch):
    from xportrait_core.batch_queue.runner import QueueInterrupted

    fake = fakes(run_time_s=SLOW_RUN_S, foreign_backlog=1)
    stop_once_all_are_queued(monkeypatch, fake, 4, KeyboardInterrupt)
    with pytest.raises(QueueInterrupted) as stopped:
        run_queue(settings_for([fake], batch["output"], max_queue=6), batch["jobs"], batch["state"],
                  should_cancel=lambda in_flight: True)
    ours = [item["prompt_id"] for item in fake.accepted]
    assert (stopped.value.in_flight, stopped.value.cancelled) == (4, 4)
    assert fake.interrupted == ours[:1] and sorted(fake.deleted) == sorted(ours)  # running one stopped, rest removed
    assert fake.unfinished() == [] and len(fake.foreign) == 1  # another user's prompt is left alone
    assert QueueState.load(batch["state"]).counts()[PENDING] == 4  # a re-run queues them afresh


def queue_arguments(batch, fake) -> list[str]:
    workflow = batch["output"].parent / "workflow_api.json"
    workflow.write_text(json.dumps(api_workflow()))
    sources, drivings = batch["output"].parent / "sources", batch["output"].parent / "drivings"
    return ["queue", str(workflow), "--sources", str(sources), "--drivings", str(drivings), "--server", fake.url,
            "--output", str(batch["output"]), "--max-queue", "4", "--poll-interval", "0.01"]


def test_ctrl_c_without_a_terminal_never_waits_for_an_answer_and_keeps_the_prompts(fakes, batch, monkeypatch,
                                                                                   capsys):
    fake = fakes(run_time_s=SLOW_RUN_S)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # a script or cron job: no terminal, nothing to read
    stop_once_all_are_queued(monkeypatch, fake, 4, KeyboardInterrupt)
    assert main(queue_arguments(batch, fake)) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "4 prompts keep running on the servers and are collected by the next run" in last
    assert fake.deleted == [] and fake.interrupted == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ctrl_c_in_a_terminal_asks_and_cancels_on_yes(fakes, batch, monkeypatch, capsys):
    fake = fakes(run_time_s=SLOW_RUN_S)
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    stop_once_all_are_queued(monkeypatch, fake, 4, KeyboardInterrupt)
    assert main(queue_arguments(batch, fake)) == 130
    err = capsys.readouterr().err
    assert "4 prompts of this batch are still queued or running on the servers. Cancel them there? [y/N]" in err
    assert "Cancelled this batch's 4 prompts on the servers." in err.strip().splitlines()[-1]
    assert fake.unfinished() == []


def test_prompts_a_restarted_server_forgot_are_queued_again_once(fakes, batch, monkeypatch):
    fake = fakes(run_time_s=SLOW_RUN_S)
    settings = settings_for([fake], batch["output"], max_queue=4)
    stop_once_all_are_queued(monkeypatch, fake, 4, SystemExit)
    with pytest.raises(SystemExit):
        run_queue(settings, batch["jobs"], batch["state"])
    fake.forget_everything()

    state = run_queue(settings, batch["jobs"], batch["state"])

    assert len(fake.accepted) == 8 and state.counts()[DONE] == 4


# ---- malformed inputs: a clear error (exit 2) before any server contact, never a traceback --------------------

@pytest.fixture
def listening(fakes):
    """A fake server that must not be contacted: the case is refused before."""
    return fakes()


def cli_inputs(tmp_path):
    (tmp_path / "s.png").write_bytes(b"s")
    (tmp_path / "d.mp4").write_bytes(b"d")
    (tmp_path / "workflow.json").write_text(json.dumps(api_workflow()))
    return tmp_path


def refused(capsys, listening, arguments: list[str]) -> str:
    """Run the queue command; assert it stopped with exit 2 before contacting the server; return its message."""
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and sum(listening.requests.values()) == 0
    return err


def pairs_arguments(tmp_path, listening, pairs: str) -> list[str]:
    return ["queue", str(tmp_path / "workflow.json"), "--pairs", str(tmp_path / pairs), "--server", listening.url,
            "--output", str(tmp_path / "out")]


PAIRS_FILES = {
    "null entry": ("pairs.json", b"[null]", r"entry 1: expected a source and a driving, got null"),
    "numbers": ("pairs.json", b"[1, 2]", r"entry 1: expected a source and a driving, got 1"),
    "numbers as paths": ("pairs.json", b"[[1, 2]]", r"entry 1: the source must be a file path \(text\), got 1"),
    "null path": ("pairs.json", b'[{"source": null, "driving": "d.mp4"}]', r"entry 1: the source must be a file"),
    "an object": ("pairs.json", b'{"source": "s.png", "driving": "d.mp4"}', r"holds \{\"source\".*expected a JSON"),
    "Latin-1 CSV": ("pairs.csv", "s.png,d\u00e9.mp4\n".encode("latin-1"), r"is not UTF-8 text \(byte 7\)"),
    "Latin-1 JSON": ("pairs.json", '[["s.png", "d\u00e9.mp4"]]'.encode("latin-1"), r"is not UTF-8 text"),
    "a folder": ("folder", None, r"Pairs file .*folder is a folder"),
    "a folder as a pair's file": ("pairs.csv", b"s.png,sub\n", r"Driving video .*sub is a folder"),
}


@pytest.mark.parametrize("case", PAIRS_FILES)
def test_malformed_pairs_files_are_refused_before_any_server_contact(case, tmp_path, listening, capsys):
    name, content, message = PAIRS_FILES[case]
    cli_inputs(tmp_path)
    (tmp_path / "sub").mkdir()
    if content is None:
        (tmp_path / name).mkdir()
    else:
        (tmp_path / name).write_bytes(content)
    assert re.search(message, refused(capsys, listening, pairs_arguments(tmp_path, listening, name)))


WORKFLOWS = {
    "Latin-1 text": ('{"1": {"class_type": "LoadImage", "inputs": {"image": "\u00e9"}}}'.encode("latin-1"),
                     r"is not UTF-8 text"),
    "inputs as a list": (json.dumps({**api_workflow(), "1": {"class_type": "LoadImage", "inputs": ["x.png"]}}).encode(),
                         r"node 1 \(LoadImage\): its inputs are \[\"x.png\"\], not a \{name: value\} object"),
    "a null node": (json.dumps({**api_workflow(), "5": None}).encode(), r"node 5: null is no node"),
    "a number": (b"42", r"holds 42, not an API-format workflow"),
    "empty": (b"{}", r"holds \{\}, not an API-format workflow"),
    "a folder": (None, r"is a folder; give the .json file"),
}


def bad_file(path: Path, content: bytes | None) -> Path:
    """`path` holding `content`, or a folder where the content is None."""
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", WORKFLOWS)
def test_malformed_workflows_are_refused_before_any_server_contact(case, tmp_path, listening, capsys):
    content, message = WORKFLOWS[case]
    cli_inputs(tmp_path)
    workflow = bad_file(tmp_path / "bad_workflow", content)
    arguments = ["queue", str(workflow), "--sources", str(tmp_path / "s.png"), "--drivings", str(tmp_path / "d.mp4"),
                 "--server", listening.url, "--output", str(tmp_path / "out")]
    assert re.search(message, refused(capsys, listening, arguments))


def single_pair_arguments(tmp_path, listening) -> list[str]:
    return ["queue", str(tmp_path / "workflow.json"), "--sources", str(tmp_path / "s.png"), "--drivings",
            str(tmp_path / "d.mp4"), "--server", listening.url]


def test_an_output_that_is_a_file_is_refused(tmp_path, listening, capsys):
    cli_inputs(tmp_path)
    (tmp_path / "out").write_text("a file")
    err = refused(capsys, listening, single_pair_arguments(tmp_path, listening) + ["--output", str(tmp_path / "out")])
    assert "is a file, not a folder" in err and (tmp_path / "out").read_text() == "a file"


def test_a_read_only_output_is_refused(tmp_path, listening, capsys, monkeypatch):
    from xportrait_core.batch_queue import folder_lock

    cli_inputs(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o555)
    real_open = folder_lock.os.open

    def read_only_open(path, flags, *args):  # the tests may run as root, whom chmod does not stop
        if os.fspath(path).startswith(os.fspath(tmp_path / "out")):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(folder_lock.os, "open", read_only_open)
    try:
        err = refused(capsys, listening, single_pair_arguments(tmp_path, listening) + ["--output",
                                                                                       str(tmp_path / "out")])
    finally:
        (tmp_path / "out").chmod(0o755)
    assert "cannot be written (Permission denied); give a folder you can write to" in err


@pytest.mark.parametrize("value", ["1e12", "inf", "0"])
def test_a_timeout_out_of_range_is_refused(value, tmp_path, listening, capsys):
    cli_inputs(tmp_path)
    arguments = single_pair_arguments(tmp_path, listening) + ["--timeout", value, "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "argument --timeout" in err and "Traceback" not in err
    assert sum(listening.requests.values()) == 0


@pytest.mark.parametrize("url, message", [
    ("localhost:8188", "has no http:// or https:// in front"),
    ("htp://127.0.0.1:8188", "is a htp:// address"),
    ("http://127.0.0.1:99999", "has no valid port"),
    ("http://", "names no host and port"),
    ("http://[::1", "is not a valid address"),
    ("http://127.0.0.1:8188?x=1", "without ?query"),
])
def test_malformed_server_addresses_are_called_malformed_not_unreachable(url, message, tmp_path, capsys):
    cli_inputs(tmp_path)
    arguments = ["queue", str(tmp_path / "workflow.json"), "--sources", str(tmp_path / "s.png"), "--drivings",
                 str(tmp_path / "d.mp4"), "--server", url, "--output", str(tmp_path / "out")]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert message in err and "unreachable" not in err and "Traceback" not in err


@pytest.mark.parametrize("content", [None, b"\xe9t\xe9", b"[1, 2]", json.dumps({"version": 1, "jobs": []}).encode()],
                         ids=["a folder", "Latin-1", "a list", "an older format"])
def test_an_unusable_state_file_is_refused(content, tmp_path, listening, capsys):
    cli_inputs(tmp_path)
    state = bad_file(tmp_path / "state.json", content)
    err = refused(capsys, listening, single_pair_arguments(tmp_path, listening) + [
        "--output", str(tmp_path / "out"), "--state", str(state)])
    assert f"State file {state}" in err
