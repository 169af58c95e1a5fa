"""The batch queue interrupted (Ctrl-C) or killed while its prompts are queued or running on ComfyUI servers: nothing
rendered twice, nothing lost, nobody left waiting for an answer. Against test_comfy_queue's in-process fake servers."""
from __future__ import annotations

import io
import json

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
