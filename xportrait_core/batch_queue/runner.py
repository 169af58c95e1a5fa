"""Batch-queue X-Portrait animations (sources x drivings) into one or more ComfyUI servers.

For each job the source image and driving video are uploaded, an API-format workflow is patched
(LoadImage <- source, LoadVideo <- driving, seeds) and queued on the server with the shortest queue;
finished jobs' output files are downloaded into `<output>/<job id>/`. Every state change is saved to a
JSON state file, so a re-run resumes: finished jobs are skipped, the rest run again. A server that goes
away hands its jobs back to the pending list, where another server (or a later run) picks them up.

Standard library only, so the command line needs neither torch nor requests.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import SeedPolicy, default
from .comfy_client import (
    ComfyClient,
    ComfyError,
    ServerUnreachableError,
    WorkflowRejectedError,
    execution_failure,
    output_files,
)
from .queue_state import DONE, FAILED, PENDING, RUNNING, Job, QueueState

logger = logging.getLogger(__name__)

SOURCE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
DRIVING_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"})
# Which input of each loader node receives the uploaded file name.
FILE_INPUT_BY_CLASS = {"LoadImage": "image", "LoadVideo": "file"}
SOURCE_CLASS, DRIVING_CLASS = "LoadImage", "LoadVideo"
# Inputs that take a seed: `seed` (X-Portrait Sampler, KSampler), `noise_seed` (RandomNoise, SamplerCustom).
SEED_INPUTS = ("seed", "noise_seed")
# How long a server that went away rests before it is asked again.
REPROBE_INTERVAL_S = 10.0
UPLOAD_HASH_CHARS = 12  # enough to tell apart inputs of one batch


class QueueInputError(ValueError):
    """The workflow, sources, drivings or pairs file cannot make a batch."""


class NoServerAvailableError(RuntimeError):
    """Every server is unreachable; the state file keeps the unfinished jobs for a re-run."""


# ---- batch plan ---------------------------------------------------------------------------------

def collect_pairs(sources: Path, drivings: Path) -> list[tuple[Path, Path]]:
    """Every source with every driving: each argument is one file or a folder of them (sorted by name)."""
    return [(s, d) for s in _files(sources, SOURCE_SUFFIXES, "source image")
            for d in _files(drivings, DRIVING_SUFFIXES, "driving video")]


def read_pairs_file(path: Path) -> list[tuple[Path, Path]]:
    """Pairs from a CSV (`source,driving` per row, header optional) or JSON file (a list of
    `{"source": ..., "driving": ...}` objects or `[source, driving]` lists). Relative paths are taken
    from the pairs file's folder."""
    if not path.is_file():
        raise QueueInputError(f"Pairs file {path} does not exist.")
    if path.suffix.lower() == ".json":
        try:
            entries = json.loads(path.read_text())
            rows = [(e["source"], e["driving"]) if isinstance(e, dict) else tuple(e) for e in entries]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise QueueInputError(
                f"Pairs file {path}: expected a JSON list of {{\"source\": ..., \"driving\": ...}} ({error})."
            ) from error
    else:
        with path.open(newline="") as file:
            rows = [tuple(cell.strip() for cell in row) for row in csv.reader(file) if any(c.strip() for c in row)]
        if rows and [cell.lower() for cell in rows[0]] == ["source", "driving"]:
            rows = rows[1:]
    pairs: list[tuple[Path, Path]] = []
    for number, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise QueueInputError(f"Pairs file {path}, entry {number}: expected a source and a driving, got {row!r}.")
        source, driving = (Path(cell) if Path(cell).is_absolute() else path.parent / cell for cell in row)
        for item, kind in ((source, "Source image"), (driving, "Driving video")):
            if not item.is_file():
                raise QueueInputError(f"Pairs file {path}, entry {number}: {kind} {item} does not exist.")
        pairs.append((source, driving))
    if not pairs:
        raise QueueInputError(f"Pairs file {path} lists no pairs.")
    return pairs


def plan_jobs(pairs: list[tuple[Path, Path]]) -> list[Job]:
    """One job per pair, named `<source stem>__<driving stem>` (made unique with a counter)."""
    jobs: list[Job] = []
    taken: set[str] = set()
    for index, (source, driving) in enumerate(pairs):
        base = _safe_name(f"{source.stem}__{driving.stem}")
        job_id, counter = base, 1
        while job_id in taken:
            counter += 1
            job_id = f"{base}_{counter}"
        taken.add(job_id)
        # Absolute paths keep the state file valid when a re-run starts from another folder.
        jobs.append(Job(job_id=job_id, source=str(source.resolve()), driving=str(driving.resolve()), index=index))
    return jobs


def _files(path: Path, suffixes: frozenset[str], kind: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise QueueInputError(f"{kind.capitalize()} path {path} does not exist; give a file or a folder.")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not found:
        raise QueueInputError(f"Folder {path} holds no {kind} files ({', '.join(sorted(suffixes))}).")
    return found


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


# ---- workflow -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkflowInputs:
    """Where a job's values go in the workflow: node ids of the loaders and of the seeded nodes."""

    source_node: str
    driving_node: str
    seed_nodes: tuple[str, ...]


def load_workflow(path: Path) -> dict[str, Any]:
    """Read an API-format workflow (`{node_id: {"class_type": ..., "inputs": {...}}}`)."""
    try:
        workflow = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise QueueInputError(f"Workflow file {path} does not exist.") from error
    except json.JSONDecodeError as error:
        raise QueueInputError(f"Workflow file {path} is not valid JSON: {error}.") from error
    if isinstance(workflow, dict) and "nodes" in workflow and "links" in workflow:
        raise QueueInputError(
            f"Workflow file {path} is in the editor's UI format. In ComfyUI use Workflow > Export (API) and "
            "give that file."
        )
    if not isinstance(workflow, dict) or not all(
        isinstance(node, dict) and "class_type" in node for node in workflow.values()
    ):
        raise QueueInputError(f"Workflow file {path} is not an API-format workflow (node id -> class_type/inputs).")
    return workflow


def locate_workflow_inputs(
    workflow: dict[str, Any], source_node: str | None = None, driving_node: str | None = None
) -> WorkflowInputs:
    """Find the source and driving loader nodes and the nodes with a literal `seed` or `noise_seed` input.

    Given ids are checked and used. Otherwise the single LoadImage is the source and the single
    LoadVideo the driving; with several, the one whose title (`_meta.title`) contains "source" or
    "driving" is taken. A LoadImage titled "driving" can serve as driving when there is no LoadVideo.
    """
    source = source_node or _detect(workflow, "source", SOURCE_CLASS, exclude=driving_node)
    driving = driving_node or _detect(workflow, "driving", DRIVING_CLASS, exclude=source)
    for node_id, role, option in ((source, "source", "--source-node"), (driving, "driving", "--driving-node")):
        if node_id not in workflow:
            raise QueueInputError(f"The workflow has no node {node_id!r} for the {role} ({option}).")
        class_type = workflow[node_id]["class_type"]
        if class_type not in FILE_INPUT_BY_CLASS:
            raise QueueInputError(
                f"Node {node_id} ({class_type}) cannot take the {role} file; {option} must name a "
                f"{' or '.join(FILE_INPUT_BY_CLASS)} node."
            )
    if source == driving:
        raise QueueInputError(f"Source and driving both resolve to node {source}; set --source-node/--driving-node.")
    seeds = tuple(node_id for node_id, node in workflow.items()
                  if any(isinstance(node.get("inputs", {}).get(name), int) for name in SEED_INPUTS))
    return WorkflowInputs(source_node=source, driving_node=driving, seed_nodes=seeds)


def _detect(workflow: dict[str, Any], role: str, class_type: str, exclude: str | None) -> str:
    candidates = [i for i, node in workflow.items() if node["class_type"] == class_type and i != exclude]
    titled = [i for i in candidates if role in _title(workflow[i])]
    if len(candidates) == 1:
        return candidates[0]
    if len(titled) == 1:
        return titled[0]
    if not candidates and role == "driving":
        # No LoadVideo: a LoadImage titled "driving" (an animated GIF/WebP loads as frames) may serve.
        titled_images = [i for i, node in workflow.items() if node["class_type"] == SOURCE_CLASS
                         and i != exclude and role in _title(node)]
        if len(titled_images) == 1:
            return titled_images[0]
    found = ", ".join(f"{i} ({_title(workflow[i]) or 'untitled'})" for i in candidates) or "none"
    raise QueueInputError(
        f"Cannot tell which node takes the {role}: {class_type} nodes found: {found}. Give its id with "
        f"--{role}-node, or put '{role}' in that node's title."
    )


def _title(node: dict[str, Any]) -> str:
    return str(node.get("_meta", {}).get("title", "")).lower()


def patch_workflow(
    workflow: dict[str, Any], inputs: WorkflowInputs, source_name: str, driving_name: str, seed: int | None,
    seed_offset: int,
) -> dict[str, Any]:
    """A copy of `workflow` with the uploaded file names and the job's seed set.

    seed: the base seed; None keeps each node's own value. seed_offset is added to the base
    (0 for the fixed policy, the job index for the increment policy).
    """
    patched = copy.deepcopy(workflow)
    for node_id, name in ((inputs.source_node, source_name), (inputs.driving_node, driving_name)):
        node = patched[node_id]
        node.setdefault("inputs", {})[FILE_INPUT_BY_CLASS[node["class_type"]]] = name
    for node_id in inputs.seed_nodes:
        node_inputs = patched[node_id]["inputs"]
        for name in SEED_INPUTS:
            if isinstance(node_inputs.get(name), int):
                node_inputs[name] = (node_inputs[name] if seed is None else seed) + seed_offset
    return patched


def upload_name(path: Path) -> str:
    """Name an input by its content (`face-1a2b3c4d5e6f.png`): uploading with overwrite can then never
    replace a different file another job still needs, and re-uploads are harmless."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:UPLOAD_HASH_CHARS]
    return f"{_safe_name(path.stem)}-{digest}{path.suffix.lower()}"


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


@dataclass
class _Server:
    client: ComfyClient
    up: bool = True
    down_since: float = 0.0
    queue_length: int = 0
    uploaded: dict[str, str] = field(default_factory=dict)  # local path -> name on the server


class QueueRunner:
    """Runs the pending jobs of a `QueueState` to completion across the configured servers."""

    def __init__(self, settings: QueueSettings, state: QueueState):
        self.settings = settings
        self.state = state
        self.servers = {url.rstrip("/"): _Server(ComfyClient(url, settings.request_timeout_s))
                        for url in settings.servers}
        self.client_id = uuid.uuid4().hex

    def run(self) -> dict[str, int]:
        """Run until every job is done or failed; return the counts per status.

        Raises NoServerAvailableError when no server answers (jobs not finished stay pending in the state).
        Jobs still running from an interrupted run are waited for and collected, not queued again: their prompt
        ids were recorded before they were queued.
        """
        self._report("starting")
        while self.state.with_status(PENDING) or self.state.with_status(RUNNING):
            self._reprobe_down_servers()
            self._poll_running()
            self._dispatch_pending()
            if not any(server.up for server in self.servers.values()):
                raise NoServerAvailableError(self._all_down_message())
            if self.state.with_status(PENDING) or self.state.with_status(RUNNING):
                time.sleep(self.settings.poll_interval_s)
        self._report("finished")
        return self.state.counts()

    # -- talking to servers

    def _refresh_queue(self, url: str) -> set[str] | None:
        """The server's queued prompt ids (and its queue length), or None when it went away."""
        server = self.servers[url]
        try:
            queued = server.client.queued_prompt_ids()
        except ComfyError as error:  # unreachable, or something that is not a ComfyUI server answers
            self._server_lost(url, error)
            return None
        server.queue_length = len(queued)
        return queued

    def _dispatch_pending(self) -> None:
        for url, server in self.servers.items():
            if server.up:
                self._refresh_queue(url)
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
            source_name = self._upload(server, Path(job.source))
            driving_name = self._upload(server, Path(job.driving))
            offset = job.index if self.settings.seed_policy == "increment" else 0
            prompt = patch_workflow(self.settings.workflow, self.settings.inputs, source_name, driving_name,
                                    self.settings.seed, offset)
            # The id is saved before the prompt exists on the server: however this run ends, the next one finds
            # the prompt (queued, running or finished) instead of rendering the job a second time.
            prompt_id = str(uuid.uuid4())
            self.state.update(job, status=RUNNING, server=url, prompt_id=prompt_id, error=None)
            accepted_id = server.client.submit_prompt(prompt, self.client_id, prompt_id)
        except ServerUnreachableError as error:
            self._server_lost(url, error)
            return
        except WorkflowRejectedError as error:
            self._attempt_failed(job, url, str(error))
            return
        except (ComfyError, OSError) as error:
            self._attempt_failed(job, url, f"submitting to {url} failed: {error}")
            return
        server.queue_length += 1
        if accepted_id != prompt_id:  # a server that does not take the client's id
            self.state.update(job, prompt_id=accepted_id)
        logger.info("%s queued on %s (prompt %s)", job.job_id, url, accepted_id)

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

    def _upload(self, server: _Server, path: Path) -> str:
        key = str(path.resolve())
        if key not in server.uploaded:
            server.uploaded[key] = server.client.upload_file(path, upload_name(path))
        return server.uploaded[key]

    def _poll_running(self) -> None:
        by_server: dict[str | None, list[Job]] = {}  # None: a state file that recorded no server for a job
        for job in self.state.with_status(RUNNING):
            by_server.setdefault(job.server, []).append(job)
        for url, jobs in by_server.items():
            if url is None or url not in self.servers or not self.servers[url].up:
                for job in jobs:
                    self.state.update(job, status=PENDING, server=None, prompt_id=None)
                continue
            # The queue is read before the history: a prompt in neither was dropped by the server.
            queued = self._refresh_queue(url)
            if queued is None:
                continue
            for job in jobs:
                if job.prompt_id not in queued and not self._collect(job, url):
                    break

    def _collect(self, job: Job, url: str) -> bool:
        """Finish `job` from its history entry; False when the server went away meanwhile."""
        client = self.servers[url].client
        try:
            entry = client.history(_prompt_id(job))
            if entry is None:
                logger.warning("%s: prompt %s vanished from %s (server restarted?); queuing it again.",
                               job.job_id, job.prompt_id, url)
                self.state.update(job, status=PENDING, server=None, prompt_id=None)
                return True
            failure = execution_failure(entry)
            if failure is not None:
                self._attempt_failed(job, url, f"{url} ran the workflow but {failure}")
                return True
            saved = self._download_outputs(client, entry, job)
        except ServerUnreachableError as error:
            self._server_lost(url, error)
            return False
        except (ComfyError, OSError) as error:
            self._attempt_failed(job, url, f"downloading outputs from {url} failed: {error}")
            return True
        if not saved:
            logger.warning("%s finished on %s but produced no output files; does the workflow have a save node?",
                           job.job_id, url)
        self.state.update(job, status=DONE, outputs=saved, error=None)
        self._report(f"{job.job_id} done on {url} ({len(saved)} files)")
        return True

    def _download_outputs(self, client: ComfyClient, entry: dict[str, Any], job: Job) -> list[str]:
        job_dir = self.settings.output_dir / job.job_id
        saved = []
        for output in output_files(entry):
            destination = job_dir / Path(output.filename).name
            client.download(output, destination)
            saved.append(str(destination.relative_to(self.settings.output_dir)))
        return saved

    # -- bookkeeping

    def _attempt_failed(self, job: Job, url: str, message: str) -> None:
        attempts = job.attempts + 1
        final = attempts >= self.settings.max_attempts
        self.state.update(job, status=FAILED if final else PENDING, attempts=attempts, error=message,
                          server=url if final else None, prompt_id=None)
        outcome = "giving up" if final else "will retry"
        logger.error("%s failed (attempt %d of %d, %s): %s", job.job_id, attempts, self.settings.max_attempts,
                     outcome, message)

    def _server_lost(self, url: str, error: ComfyError) -> None:
        server = self.servers[url]
        server.up, server.down_since = False, time.monotonic()
        orphans = [job for job in self.state.with_status(RUNNING) if job.server == url]
        for job in orphans:
            self.state.update(job, status=PENDING, server=None, prompt_id=None)
        handed_back = f" Its {len(orphans)} running jobs go back to the queue." if orphans else ""
        logger.warning("%s%s", error, handed_back)

    def _reprobe_down_servers(self) -> None:
        now = time.monotonic()
        for url, server in self.servers.items():
            if server.up or now - server.down_since < REPROBE_INTERVAL_S:
                continue
            try:
                server.queue_length = len(server.client.queued_prompt_ids())
            except ComfyError:
                server.down_since = now
                continue
            server.up = True
            logger.info("%s answers again.", url)

    def _all_down_message(self) -> str:
        unfinished = len(self.state.with_status(PENDING))
        return (f"No ComfyUI server answers ({', '.join(self.servers)}); {unfinished} jobs are unfinished and "
                f"kept in {self.state.path}. Start ComfyUI (or fix the --server addresses) and run the same "
                "command again to resume.")

    def _report(self, event: str) -> None:
        counts = self.state.counts()
        logger.info("[%d/%d done, %d failed, %d running, %d pending] %s", counts[DONE], len(self.state.jobs),
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


def run_queue(settings: QueueSettings, jobs: list[Job], state_path: Path,
              should_cancel: Callable[[list[Job]], bool] | None = None) -> QueueState:
    """Merge `jobs` into the state at `state_path` (finished ones are skipped; ones still running from an interrupted
    run are collected) and run the rest.

    should_cancel(in-flight jobs): asked on Ctrl-C while prompts of this batch are queued or running on servers;
    True cancels them there. Without it they keep running and a re-run collects them. Either way QueueInterrupted
    is raised."""
    state = QueueState.load(state_path)
    state.merge_plan(jobs)
    skipped = len(state.with_status(DONE))
    if skipped:
        logger.info("%d of %d jobs already done in %s; skipping them.", skipped, len(jobs), state_path)
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
