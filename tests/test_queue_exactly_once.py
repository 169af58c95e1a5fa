"""The batch queue renders every job exactly once under every fault: the fault matrix.

Each case runs the 2 sources x 2 drivings batch against in-process fake ComfyUI servers (test_comfy_queue.FakeComfy),
of both kinds: 0.3.64 (/queue, /history, /interrupt) and a server with the jobs API (v0.26 and later). It injects one
fault (a server paused past --timeout, killed, restarted; a second client on the folder; Ctrl-C at several points; a
client killed; inputs renamed and added), runs the same batch again as a user would, and counts what each server
received and rendered and the files collected. docs/cli_queue.md shows the table these expectations make.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_comfy_queue import FakeComfy, settings_for
from xportrait_core.batch_queue import runner
from xportrait_core.batch_queue.batch_plan import collect_pairs, plan_jobs
from xportrait_core.batch_queue.folder_lock import FolderBusyError
from xportrait_core.batch_queue.queue_state import DONE, QueueState
from xportrait_core.batch_queue.runner import NoServerAvailableError, QueueInterrupted, run_queue

JOBS = 4
SHORT_TIMEOUT_S = 0.3  # --timeout of the cases where a server stops answering
SLOW_RUN_S = 0.2  # long enough that prompts are still on the server when the fault strikes
KINDS = ("0.3.64", "jobs-api")


@dataclass
class Outcome:
    """What the servers of a case received and rendered, and what the queue collected."""

    prompts_received: int
    prompts_rendered: int
    files: int


class Batch:
    """The case's inputs, output folder and fake servers (all stopped at the end)."""

    def __init__(self, root: Path, kind: str):
        self.root, self.kind = root, kind
        self.sources, self.drivings = root / "sources", root / "drivings"
        self.sources.mkdir()
        self.drivings.mkdir()
        for name in ("anna.png", "ben.png"):
            (self.sources / name).write_bytes(b"png bytes of " + name.encode())
        for name in ("smile.mp4", "talk.mp4"):
            (self.drivings / name).write_bytes(b"mp4 bytes of " + name.encode())
        self.output = root / "out"
        self.state = self.output / "queue_state.json"
        self.servers: list[FakeComfy] = []

    def server(self, **options) -> FakeComfy:
        fake = FakeComfy(jobs_api=self.kind == "jobs-api", **options)
        self.servers.append(fake)
        return fake

    def run(self, servers: list[FakeComfy], **overrides) -> QueueState:
        settings = settings_for(servers, self.output, **{"max_queue": 2, **overrides})
        return run_queue(settings, plan_jobs(collect_pairs(self.sources, self.drivings)), self.state)

    def outcome(self) -> Outcome:
        files = [p for p in self.output.rglob("*.mp4") if p.is_file()]
        state = QueueState.load(self.state)
        done = [job for job in state.jobs.values() if job.status == DONE]
        for job in done:  # every job's folder holds its own render, of its own inputs (uploads are named by content)
            (result,) = job.outputs
            source_upload, driving_upload, *_ = (self.output / result).read_text().split("|")
            assert job.source_digest[:12] in source_upload and job.driving_digest[:12] in driving_upload, job.folder
        assert len(done) == len(files), "every file belongs to a done job"
        return Outcome(sum(len(s.accepted) for s in self.servers), sum(len(s.rendered) for s in self.servers),
                       len(files))

    def stop(self) -> None:
        for fake in self.servers:
            fake.stop()


def fault_at_sleep(monkeypatch, when: Callable[[], bool], fault: Callable[[], None]) -> None:
    """Run `fault` at the queue's first wait between polls for which `when()` holds (then never again)."""
    real_sleep = runner.time.sleep

    def sleep(seconds):
        if when():
            monkeypatch.setattr(runner.time, "sleep", real_sleep)
            fault()
        real_sleep(seconds)

    monkeypatch.setattr(runner.time, "sleep", sleep)


def fault_in_client(monkeypatch, method: str, fault: str, exception: type[BaseException] = KeyboardInterrupt) -> None:
    """Raise `exception` in ComfyClient.<method>'s first call, "before" it sends anything or "after" it returned."""
    real = getattr(runner.ComfyClient, method)

    def faulty(client, *args, **kwargs):
        monkeypatch.setattr(runner.ComfyClient, method, real)
        if fault == "before":
            raise exception
        real(client, *args, **kwargs)
        raise exception

    monkeypatch.setattr(runner.ComfyClient, method, faulty)


# ---- the cases: each returns after the batch is complete (the user ran it again where needed)

def baseline(batch: Batch, monkeypatch) -> None:
    batch.run([batch.server()])


def server_paused_past_the_timeout_while_rendering(batch: Batch, monkeypatch) -> None:
    fake = batch.server(run_time_s=SLOW_RUN_S)
    fault_at_sleep(monkeypatch, lambda: len(fake.accepted) >= 2, fake.pause)
    with pytest.raises(NoServerAvailableError, match="collected, not rendered again"):
        batch.run([fake], request_timeout_s=SHORT_TIMEOUT_S)
    fake.resume()
    batch.run([fake], request_timeout_s=SHORT_TIMEOUT_S)


def server_paused_past_the_timeout_while_taking_a_prompt(batch: Batch, monkeypatch) -> None:
    fake = batch.server(pause_at_prompt=2)  # the second POST /prompt arrives, then the server stalls
    with pytest.raises(NoServerAvailableError):
        batch.run([fake], request_timeout_s=SHORT_TIMEOUT_S)
    fake.resume()  # it takes the prompt in after the client gave up waiting for the answer
    wait_for(lambda: len(fake.accepted) == 2)
    batch.run([fake], request_timeout_s=SHORT_TIMEOUT_S)


def one_of_two_servers_paused_past_the_timeout(batch: Batch, monkeypatch) -> None:
    paused, steady = batch.server(pause_at_prompt=1), batch.server()
    with pytest.raises(NoServerAvailableError, match=f"wait on {paused.url}, which stopped answering"):
        batch.run([paused, steady], max_queue=1, request_timeout_s=SHORT_TIMEOUT_S)
    paused.resume()
    wait_for(lambda: len(paused.accepted) == 1)
    batch.run([paused, steady], max_queue=1, request_timeout_s=SHORT_TIMEOUT_S)


def server_killed_and_restarted_while_the_queue_runs(batch: Batch, monkeypatch) -> None:
    monkeypatch.setattr(runner, "REPROBE_INTERVAL_S", 0.0)
    killed, steady = batch.server(run_time_s=SLOW_RUN_S), batch.server()
    polls = []

    def kill_then_restart():
        polls.append(1)
        if len(polls) == 1:
            killed.stop()  # connections refused: the queue keeps its prompt and asks again
        elif len(polls) == 3:
            killed.restart()  # back, with its queue and history gone
        if len(polls) < 3:
            fault_at_sleep(monkeypatch, lambda: True, kill_then_restart)

    fault_at_sleep(monkeypatch, lambda: len(killed.accepted) >= 1, kill_then_restart)
    try:
        batch.run([killed, steady], max_queue=1)
    except NoServerAvailableError:  # the steady server finished first: the user runs the command again
        batch.run([killed, steady], max_queue=1)


def server_restarted_after_the_client_was_killed(batch: Batch, monkeypatch) -> None:
    fake = batch.server(run_time_s=SLOW_RUN_S)
    fault_at_sleep(monkeypatch, lambda: len(fake.accepted) == JOBS, lambda: (_ for _ in ()).throw(SystemExit()))
    with pytest.raises(SystemExit):  # no handler runs, as when the process is killed
        batch.run([fake], max_queue=JOBS)
    fake.restart()
    batch.run([fake], max_queue=JOBS)


def client_killed_while_its_prompts_run(batch: Batch, monkeypatch) -> None:
    fake = batch.server(run_time_s=SLOW_RUN_S)
    fault_at_sleep(monkeypatch, lambda: len(fake.accepted) == JOBS, lambda: (_ for _ in ()).throw(SystemExit()))
    with pytest.raises(SystemExit):
        batch.run([fake], max_queue=JOBS)
    batch.run([fake], max_queue=JOBS)


def two_clients_on_one_folder(batch: Batch, monkeypatch) -> None:
    fake = batch.server(run_time_s=0.1)
    first_running = threading.Event()
    errors: list[BaseException] = []

    def first_client():
        try:
            batch.run([fake])
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    fault_at_sleep(monkeypatch, lambda: True, first_running.set)
    thread = threading.Thread(target=first_client)
    thread.start()
    assert first_running.wait(10)
    with pytest.raises(FolderBusyError, match=r"Another queue is running in .*\(PID \d+ on "):
        batch.run([fake])
    thread.join(30)
    assert not errors


def ctrl_c_before_posting_a_prompt(batch: Batch, monkeypatch) -> None:
    fake = batch.server()
    fault_in_client(monkeypatch, "submit_prompt", "before")
    with pytest.raises(QueueInterrupted):
        batch.run([fake])
    batch.run([fake])


def ctrl_c_after_posting_before_the_answer_is_recorded(batch: Batch, monkeypatch) -> None:
    fake = batch.server()
    fault_in_client(monkeypatch, "submit_prompt", "after")
    with pytest.raises(QueueInterrupted):
        batch.run([fake])
    batch.run([fake])


def ctrl_c_while_downloading(batch: Batch, monkeypatch) -> None:
    fake = batch.server()
    fault_in_client(monkeypatch, "download", "before")
    with pytest.raises(QueueInterrupted):
        batch.run([fake])
    batch.run([fake])


def ctrl_c_while_waiting_keeping_the_prompts(batch: Batch, monkeypatch) -> None:
    fake = batch.server(run_time_s=SLOW_RUN_S)
    fault_at_sleep(monkeypatch, lambda: len(fake.accepted) == JOBS, lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(QueueInterrupted):
        batch.run([fake], max_queue=JOBS)
    batch.run([fake], max_queue=JOBS)


def ctrl_c_while_waiting_cancelling_the_prompts(batch: Batch, monkeypatch) -> None:
    fake = batch.server(run_time_s=SLOW_RUN_S)
    fault_at_sleep(monkeypatch, lambda: len(fake.accepted) == JOBS, lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    settings = settings_for([fake], batch.output, max_queue=JOBS)
    planned = plan_jobs(collect_pairs(batch.sources, batch.drivings))
    with pytest.raises(QueueInterrupted) as stopped:
        run_queue(settings, planned, batch.state, should_cancel=lambda in_flight: True)
    assert stopped.value.cancelled == JOBS and fake.unfinished() == []
    batch.run([fake], max_queue=JOBS)


def inputs_renamed_and_added_after_a_finished_run(batch: Batch, monkeypatch) -> None:
    fake = batch.server()
    batch.run([fake])
    (batch.sources / "anna.png").rename(batch.sources / "anna renamed.png")  # same content: the same jobs
    (batch.sources / "carl.png").write_bytes(b"png bytes of carl.png")  # two new jobs
    state = batch.run([fake])
    assert sorted(job.folder for job in state.jobs.values()) == [
        "anna__smile", "anna__talk", "ben__smile", "ben__talk", "carl__smile", "carl__talk"]


# case -> (prompts received, prompts rendered, files collected) with 4 jobs (6 after inputs are added)
MATRIX = {
    baseline: (4, 4, 4),
    server_paused_past_the_timeout_while_rendering: (4, 4, 4),
    server_paused_past_the_timeout_while_taking_a_prompt: (4, 4, 4),
    one_of_two_servers_paused_past_the_timeout: (4, 4, 4),
    server_killed_and_restarted_while_the_queue_runs: (5, 4, 4),  # its one prompt died with it, never rendered
    server_restarted_after_the_client_was_killed: (8, 4, 4),  # the 4 queued died with the server, never rendered
    client_killed_while_its_prompts_run: (4, 4, 4),
    two_clients_on_one_folder: (4, 4, 4),
    ctrl_c_before_posting_a_prompt: (4, 4, 4),
    ctrl_c_after_posting_before_the_answer_is_recorded: (4, 4, 4),
    ctrl_c_while_downloading: (4, 4, 4),
    ctrl_c_while_waiting_keeping_the_prompts: (4, 4, 4),
    ctrl_c_while_waiting_cancelling_the_prompts: (8, 4, 4),  # the 4 cancelled ones never rendered
    inputs_renamed_and_added_after_a_finished_run: (6, 6, 6),
}


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(MATRIX), ids=lambda case: case.__name__)
def test_every_job_is_rendered_and_collected_exactly_once(case, kind, tmp_path, monkeypatch):
    batch = Batch(tmp_path, kind)
    try:
        case(batch, monkeypatch)
        outcome = batch.outcome()
    finally:
        batch.stop()
    received, rendered, files = MATRIX[case]
    assert (outcome.prompts_received, outcome.prompts_rendered, outcome.files) == (received, rendered, files)
    assert QueueState.load(batch.state).counts()[DONE] == files
