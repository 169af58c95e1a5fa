"""Batch-queue X-Portrait animations (sources x drivings) into one or more ComfyUI servers, each job exactly once.

For each job the source image and driving video are uploaded, the API-format workflow is patched (`workflow`) and
queued on the server with the shortest queue; finished jobs' output files are downloaded into `<output>/<job name>/`.
Every state change is saved to a JSON state file (`queue_state`) and the output folder is locked while a queue runs
there (`folder_lock`), so a re-run resumes: finished jobs are skipped, prompts still on a server are collected, the
rest run. A server that stops answering keeps its prompts until it says what became of them.

Standard library only, so the command line needs neither torch nor requests.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import SeedPolicy, default
from .batch_plan import PlannedPair, QueueInputError
from .comfy_client import (
    UNKNOWN,
    WAITING,
    ComfyClient,
    ComfyError,
    OutputFile,
    PromptStatus,
    ServerUnreachableError,
    WorkflowRejectedError,
    check_server_url,
)
from .folder_lock import FolderUnusableError, folder_lock
from .naming import job_name, output_names
from .queue_state import DONE, FAILED, PENDING, RUNNING, Job, QueueState
from .workflow import FILE_INPUT_BY_CLASS, WorkflowInputs, patch_workflow, upload_name

logger = logging.getLogger(__name__)

# How long a server that went away rests before it is asked again.
REPROBE_INTERVAL_S = 10.0
# Polls in a row (a poll interval apart) that must find a posted prompt unknown to its server before it is queued again.
UNKNOWN_POLLS_BEFORE_REQUEUE = 2
KEY_CHARS = 16  # of a job's key (64 bits: no two jobs of one output folder share one)


class NoServerAvailableError(RuntimeError):
    """Every server is unreachable; the state file keeps the unfinished jobs for a re-run."""


# ---- running ------------------------------------------------------------------------------------

@dataclass
class QueueSettings:
    """Everything a queue run needs besides the jobs."""

    workflow: dict[str, Any]
    inputs: WorkflowInputs
    servers: list[str]
    output_dir: Path
    seed: int | None = None
    seed_policy: SeedPolicy = default("seed_policy")
    max_attempts: int = default("max_attempts")
    max_queue: int = default("max_queue")
    poll_interval_s: float = default("poll_interval")
    request_timeout_s: float = default("timeout")


def render_digest(settings: QueueSettings) -> str:
    """What, besides the inputs, decides what a job renders: the workflow (the loaders' file names aside, they are
    set per job), which nodes take the inputs, and the seeds asked for."""
    workflow = copy.deepcopy(settings.workflow)
    for node_id in (settings.inputs.source_node, settings.inputs.driving_node):
        node = workflow[node_id]
        node.setdefault("inputs", {}).pop(FILE_INPUT_BY_CLASS[node["class_type"]], None)
    for node in workflow.values():
        node.pop("_meta", None)  # titles do not change the render
    # The policy counts without --seed too: increment adds the job's offset to the workflow's own seeds.
    described = {"workflow": workflow, "source_node": settings.inputs.source_node,
                 "driving_node": settings.inputs.driving_node, "seeds": [settings.seed_policy, settings.seed]}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def plan_state_jobs(settings: QueueSettings, planned: list[PlannedPair]) -> list[Job]:
    """The state's jobs for these pairs under these settings: keyed by inputs' content and render settings."""
    render = render_digest(settings)
    jobs = []
    for index, pair in enumerate(planned):
        key = hashlib.sha256(f"{pair.source_digest}:{pair.driving_digest}:{render}".encode()).hexdigest()
        jobs.append(Job(job_id=key[:KEY_CHARS], source=str(pair.source), driving=str(pair.driving), index=index,
                        name=job_name(pair.source, pair.driving), source_digest=pair.source_digest,
                        driving_digest=pair.driving_digest, render=render))
    return jobs


@dataclass
class _Server:
    client: ComfyClient
    up: bool = True
    queue_length: int = 0
    uploaded: dict[str, str] = field(default_factory=dict)  # local path -> name on the server
    down_since: float = 0.0
    missing: dict[str, int] = field(default_factory=dict)  # prompt id -> polls in a row that found it unknown


class QueueRunner:
    """Runs the pending jobs of a `QueueState` to completion across the configured servers.

    Exactly once: a prompt's id is recorded before it is posted, and a job whose prompt was posted is queued again only
    once the server that has it, answering, says twice in a row that it does not know it (it restarted, or the post
    never arrived). A server that stops answering keeps its jobs: they are collected when it answers again, in this
    run or the next.
    """

    def __init__(self, settings: QueueSettings, state: QueueState):
        self.settings = settings
        self.state = state
        self.servers = {url.rstrip("/"): _Server(ComfyClient(url, settings.request_timeout_s))
                        for url in settings.servers}
        self.client_id = uuid.uuid4().hex

    def run(self) -> dict[str, int]:
        """Run until every job is done or failed; return the counts per status.

        Raises NoServerAvailableError when no server answers, or when the only jobs left wait on servers that stopped
        answering (the state keeps them for a re-run). Jobs still running from an interrupted run are collected, not
        queued again.
        """
        self._report("starting")
        while self.state.with_status(PENDING) or self.state.with_status(RUNNING):
            self._reprobe_down_servers()
            self._poll_running()
            self._dispatch_pending()
            if not any(server.up for server in self.servers.values()):
                raise NoServerAvailableError(self._all_down_message())
            waiting = self._waiting_on_down_servers()
            if waiting and not self.state.with_status(PENDING) and len(waiting) == len(self.state.with_status(RUNNING)):
                raise NoServerAvailableError(self._stuck_message(waiting))
            if self.state.with_status(PENDING) or self.state.with_status(RUNNING):
                time.sleep(self.settings.poll_interval_s)
        self._report("finished")
        return self.state.counts()

    # -- talking to servers

    def _dispatch_pending(self) -> None:
        for url, server in self.servers.items():
            if server.up:
                try:
                    server.queue_length = server.client.queue_length()
                except ComfyError as error:  # unreachable, or something that is not a ComfyUI server answers
                    self._server_lost(url, error)
        for job in self.state.with_status(PENDING):
            chosen = self._pick_server()
            if chosen is None:
                return
            self._submit(job, chosen)

    def _pick_server(self) -> str | None:
        """The up server with the shortest queue, if that queue has room; ties go to the first listed."""
        open_servers = [(server.queue_length, order, url)
                        for order, (url, server) in enumerate(self.servers.items())
                        if server.up and server.queue_length < self.settings.max_queue]
        return min(open_servers)[2] if open_servers else None

    def _submit(self, job: Job, url: str) -> None:
        server = self.servers[url]
        try:
            source_name = self._upload(server, Path(job.source), job.source_digest)
            driving_name = self._upload(server, Path(job.driving), job.driving_digest)
        except ServerUnreachableError as error:
            self._server_lost(url, error)
            return
        except (ComfyError, OSError) as error:
            self._attempt_failed(job, url, f"uploading the inputs to {url} failed: {error}")
            return
        offset = job.index if self.settings.seed_policy == "increment" else 0
        prompt = patch_workflow(self.settings.workflow, self.settings.inputs, source_name, driving_name,
                                self.settings.seed, offset)
        # The id is saved before the prompt exists on the server: however this run ends, the next one finds the
        # prompt (queued, running or finished) instead of rendering the job a second time.
        prompt_id = str(uuid.uuid4())
        self.state.update(job, status=RUNNING, server=url, prompt_id=prompt_id, error=None)
        try:
            accepted_id = server.client.submit_prompt(prompt, self.client_id, prompt_id)
        except ServerUnreachableError as error:
            # No answer: the prompt may be queued there. The job keeps its id and waits for the server to say.
            self._server_lost(url, error)
            return
        except WorkflowRejectedError as error:
            self._attempt_failed(job, url, str(error))
            return
        except ComfyError as error:  # the server answered with an error: nothing was queued
            self._attempt_failed(job, url, f"submitting to {url} failed: {error}")
            return
        server.queue_length += 1
        if accepted_id != prompt_id:  # a server that does not take the client's id
            self.state.update(job, prompt_id=accepted_id)
        logger.info("%s queued on %s (prompt %s)", job.folder, url, accepted_id)

    def cancel(self, jobs: list[Job]) -> list[Job]:
        """Cancel the prompts of these running jobs on their servers (waiting ones deleted, a running one
        interrupted) and make the jobs pending again; returns the jobs whose server could not be reached (they stay
        running in the state, so a re-run collects or re-queues them)."""
        by_server: dict[str | None, list[Job]] = {}  # None: a state file that recorded no server for a job
        for job in jobs:
            by_server.setdefault(job.server, []).append(job)
        unreachable: list[Job] = []
        for url, server_jobs in by_server.items():
            server = None if url is None else self.servers.get(url)
            try:
                if server is None:
                    raise ServerUnreachableError(str(url), "not among this run's --server addresses")
                server.client.cancel_prompts([_prompt_id(job) for job in server_jobs])
            except ComfyError as error:
                logger.warning("could not cancel %d prompts on %s: %s", len(server_jobs), url, error)
                unreachable += server_jobs
                continue
            for job in server_jobs:
                self.state.update(job, status=PENDING, server=None, prompt_id=None)
        return unreachable

    def _upload(self, server: _Server, path: Path, digest: str) -> str:
        key = str(path.resolve())
        if key not in server.uploaded:
            server.uploaded[key] = server.client.upload_file(path, upload_name(path, digest or None))
        return server.uploaded[key]

    def _poll_running(self) -> None:
        by_server: dict[str | None, list[Job]] = {}  # None: a state file that recorded no server for a job
        for job in self.state.with_status(RUNNING):
            by_server.setdefault(job.server, []).append(job)
        for url, jobs in by_server.items():
            if url is None or url not in self.servers:
                for job in jobs:
                    logger.warning("%s was queued on %s, which is not among this run's --server addresses: queuing "
                                   "it again here (if %s still runs it, it renders twice).", job.folder, url, url)
                    self.state.update(job, status=PENDING, server=None, prompt_id=None)
                continue
            server = self.servers[url]
            if not server.up:
                continue  # its jobs wait for it: it may still be rendering them
            try:
                statuses = server.client.prompt_statuses([_prompt_id(job) for job in jobs])
            except ComfyError as error:
                self._server_lost(url, error)
                continue
            for job in jobs:
                if not self._follow(job, url, statuses[_prompt_id(job)]):
                    break

    def _follow(self, job: Job, url: str, status: PromptStatus) -> bool:
        """Act on what the server says about a running job's prompt; False when the server went away meanwhile."""
        server = self.servers[url]
        prompt_id = _prompt_id(job)
        if status.state == WAITING:
            server.missing.pop(prompt_id, None)
            return True
        if status.state == UNKNOWN:
            # Twice in a row, a poll apart: a post the server was still taking in when it was first asked is found.
            server.missing[prompt_id] = server.missing.get(prompt_id, 0) + 1
            if server.missing[prompt_id] >= UNKNOWN_POLLS_BEFORE_REQUEUE:
                del server.missing[prompt_id]
                logger.warning("%s: %s does not know prompt %s (restarted?); queuing it again.", job.folder, url,
                               prompt_id)
                self.state.update(job, status=PENDING, server=None, prompt_id=None)
            return True
        server.missing.pop(prompt_id, None)
        return self._collect(job, url, status)

    def _collect(self, job: Job, url: str, status: PromptStatus) -> bool:
        """Finish `job` from its finished prompt; False when the server went away meanwhile (the job stays running
        and is collected when it answers again)."""
        if status.failure is not None:
            self._attempt_failed(job, url, f"{url} ran the workflow but {status.failure}")
            return True
        try:
            saved = self._download_outputs(self.servers[url].client, status.outputs, job)
        except ServerUnreachableError as error:
            self._server_lost(url, error)
            return False
        except (ComfyError, OSError) as error:
            self._attempt_failed(job, url, f"downloading outputs from {url} failed: {error}")
            return True
        if not saved:
            logger.warning("%s finished on %s but produced no output files; does the workflow have a save node?",
                           job.folder, url)
        self.state.update(job, status=DONE, outputs=saved, error=None)
        self._report(f"{job.folder} done on {url} ({len(saved)} files)")
        return True

    def _download_outputs(self, client: ComfyClient, outputs: tuple[OutputFile, ...], job: Job) -> list[str]:
        job_dir = self.settings.output_dir / job.folder
        saved = []
        for output, name in output_names(outputs).items():
            client.download(output, job_dir / name)
            saved.append(f"{job.folder}/{name}")
        return saved

    # -- bookkeeping

    def _attempt_failed(self, job: Job, url: str, message: str) -> None:
        attempts = job.attempts + 1
        final = attempts >= self.settings.max_attempts
        self.state.update(job, status=FAILED if final else PENDING, attempts=attempts, error=message,
                          server=url if final else None, prompt_id=None)
        outcome = "giving up" if final else "will retry"
        logger.error("%s failed (attempt %d of %d, %s): %s", job.folder, attempts, self.settings.max_attempts,
                     outcome, message)

    def _server_lost(self, url: str, error: ComfyError) -> None:
        server = self.servers[url]
        server.up, server.down_since = False, time.monotonic()
        server.client.forget_api()
        server.uploaded.clear()  # a server that comes back may be another installation
        waiting = [job for job in self.state.with_status(RUNNING) if job.server == url]
        kept = (f" Its {len(waiting)} prompts of this batch are kept: they are collected when it answers again."
                if waiting else "")
        logger.warning("%s%s", error, kept)

    def _waiting_on_down_servers(self) -> list[Job]:
        return [job for job in self.state.with_status(RUNNING)
                if job.server in self.servers and not self.servers[job.server].up]

    def _reprobe_down_servers(self) -> None:
        now = time.monotonic()
        for url, server in self.servers.items():
            if server.up or now - server.down_since < REPROBE_INTERVAL_S:
                continue
            try:
                server.queue_length = server.client.queue_length()
            except ComfyError:
                server.down_since = now
                continue
            server.up = True
            logger.info("%s answers again.", url)

    def _all_down_message(self) -> str:
        unfinished = len(self.state.with_status(PENDING)) + len(self.state.with_status(RUNNING))
        return (f"No ComfyUI server answers ({', '.join(self.servers)}); {unfinished} jobs are unfinished and "
                f"kept in {self.state.path}. Start ComfyUI (or fix the --server addresses) and run the same "
                "command again to resume: prompts already queued are collected, not rendered again.")

    def _stuck_message(self, waiting: list[Job]) -> str:
        servers = sorted({str(job.server) for job in waiting})
        return (f"The last {len(waiting)} jobs wait on {', '.join(servers)}, which stopped answering; they are kept "
                f"in {self.state.path}. Run the same command again when it answers: their prompts are collected, "
                "not rendered again.")

    def _report(self, event: str) -> None:
        counts = self.state.counts()
        logger.info("[%d/%d done, %d failed, %d running, %d pending] %s", counts[DONE], len(self.state.planned),
                    counts[FAILED], counts[RUNNING], counts[PENDING], event)


def _prompt_id(job: Job) -> str:
    """The prompt of a running job: `_submit` records it with the running status, and `QueueState.merge_plan` keeps a
    running job from an earlier run only with one."""
    assert job.prompt_id is not None, f"running job {job.job_id} has no prompt id"
    return job.prompt_id


class QueueInterrupted(Exception):
    """The run was interrupted (Ctrl-C); `in_flight` prompts of this batch were still queued or running on servers,
    of which `cancelled` were cancelled there (the others keep running and are collected by a re-run)."""

    def __init__(self, in_flight: int, cancelled: int, state_path: Path) -> None:
        self.in_flight = in_flight
        self.cancelled = cancelled
        self.state_path = state_path
        super().__init__(f"interrupted with {in_flight} prompts on the servers, {cancelled} cancelled")


def run_queue(settings: QueueSettings, jobs: list[PlannedPair], state_path: Path,
              should_cancel: Callable[[list[Job]], bool] | None = None) -> QueueState:
    """Run the batch `jobs` (from `plan_jobs`) with `settings`, recording it in the state file at `state_path`.

    Before any server is contacted: the server addresses are checked, and the output folder is locked (a second queue
    on it stops with FolderBusyError). Then the plan is merged into the state (finished jobs are skipped; ones still
    running from an interrupted run are collected) and the rest runs.

    should_cancel(in-flight jobs): asked on Ctrl-C while prompts of this batch are queued or running on servers;
    True cancels them there. Without it they keep running and a re-run collects them. Either way QueueInterrupted
    is raised."""
    settings = dataclasses.replace(settings, servers=check_servers(settings.servers))
    try:
        with folder_lock(settings.output_dir):
            return _run_locked(settings, jobs, state_path, should_cancel)
    except FolderUnusableError as error:
        raise QueueInputError(str(error)) from None


def _run_locked(settings: QueueSettings, planned: list[PlannedPair], state_path: Path,
                should_cancel: Callable[[list[Job]], bool] | None) -> QueueState:
    state = QueueState.load(state_path)
    try:
        state.merge_plan(plan_state_jobs(settings, planned), settings.output_dir)
    except OSError as error:
        raise QueueInputError(f"The state file {state_path} cannot be written ({error.strerror}); give a --state "
                              "(or --output) you can write to.") from None
    skipped = len(state.with_status(DONE))
    if skipped:
        logger.info("%d of %d jobs already done in %s; skipping them.", skipped, len(state.planned), state_path)
    runner = QueueRunner(settings, state)
    try:
        runner.run()
    except KeyboardInterrupt:
        in_flight = state.with_status(RUNNING)
        cancelled = 0
        if in_flight and should_cancel is not None and should_cancel(in_flight):
            cancelled = len(in_flight) - len(runner.cancel(in_flight))
        raise QueueInterrupted(len(in_flight), cancelled, state_path) from None
    return state


def check_servers(servers: list[str]) -> list[str]:
    """The --server addresses, each checked (`check_server_url`) before any is contacted."""
    checked = []
    for url in servers:
        try:
            checked.append(check_server_url(url))
        except ValueError as error:
            raise QueueInputError(f"--server {error}.") from None
    return list(dict.fromkeys(checked))
