"""The resumable record of a batch queue: one entry per job, saved atomically after every change.

A job is what it renders: its key is made of the content of its source and driving files and of the render settings
(workflow, seeds), never of its position in the batch or of its file names. A re-run reads the file, keeps finished
jobs as they are (while their files are there), collects the prompts an interrupted run left queued or running on the
servers, and runs the rest, so an interrupted batch (Ctrl-C, a crash, servers gone) never repeats or loses work.
Records of other settings stay in the file (switching back to them finds their jobs done) but are not run.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..media.safe_output import atomic_output

logger = logging.getLogger(__name__)

STATE_FILE_NAME = "queue_state.json"  # in the output folder unless --state names another file

STATE_FORMAT_VERSION = 2  # 2: jobs keyed by what they render (1: by their names)

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
JOB_STATUSES = (PENDING, RUNNING, DONE, FAILED)
SHORT_KEY_CHARS = 8  # the key's start, added to a job's folder name only when the name is taken


class QueueStateError(ValueError):
    """The state file exists but cannot be used."""


@dataclass
class Job:
    """One animation: a source image driven by a driving video, with one workflow and seed.

    job_id: the job's key, from what it renders (inputs' content, workflow, seeds). name: its folder in the output
    folder, readable (`anna__smile`), fixed when the job is first planned.
    index: the seed offset of the increment policy; a job keeps it on resume.
    attempts: submissions that ended in a failure of the job itself (a server going away does not count).
    outputs: downloaded files, relative to the output folder.
    render: the digest of the render settings (workflow and seeds), to tell "same inputs, other settings" apart.
    """

    job_id: str
    source: str
    driving: str
    index: int
    status: str = PENDING
    attempts: int = 0
    server: str | None = None
    prompt_id: str | None = None
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    name: str = ""
    source_digest: str = ""
    driving_digest: str = ""
    render: str = ""

    @property
    def folder(self) -> str:
        return self.name or self.job_id


class QueueState:
    """Jobs by key, bound to the JSON file they are saved to; `planned` are the keys this run works on, in order."""

    def __init__(self, path: Path, jobs: list[Job] | None = None):
        self.path = path
        self.jobs: dict[str, Job] = {job.job_id: job for job in jobs or []}
        self.planned: list[str] = list(self.jobs)

    @classmethod
    def load(cls, path: Path) -> QueueState:
        """Read the state file; a missing file is an empty state (a first run)."""
        if not path.exists():
            return cls(path)
        advice = "Give another --state path, or delete the file to start the batch from scratch."
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version", 1) != STATE_FORMAT_VERSION:
                raise QueueStateError(
                    f"State file {path} was written by another version of the queue (format {data.get('version', 1)},"
                    f" this one reads {STATE_FORMAT_VERSION}). Finish that batch with that version, or give another "
                    "--output (or --state).")
            known = {f.name for f in fields(Job)}
            jobs = [Job(**{k: v for k, v in entry.items() if k in known}) for entry in data["jobs"]]
        except OSError as error:
            raise QueueStateError(f"State file {path} cannot be read ({error.strerror}). {advice}") from error
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            if isinstance(error, QueueStateError):
                raise
            raise QueueStateError(f"State file {path} is not a queue state ({error}). {advice}") from error
        return cls(path, jobs)

    def merge_plan(self, planned: list[Job], output_dir: Path) -> None:
        """Adopt this run's plan, keeping what earlier runs achieved.

        A planned job whose key is on record keeps its record when it is done and its files are still in
        `output_dir`, and when it is still running from an interrupted run (its prompt id and server are kept, so the
        prompt is collected instead of rendered again); otherwise it is made pending with fresh attempts (a re-run is
        a retry), keeping its folder name and seed. A new job gets its readable name unless another job or an
        unknown folder has it (then the key's start is added), and its plan position as seed offset unless a job of
        the same settings has that one.
        """
        self.planned = []
        for job in planned:
            if job.job_id in self.planned:
                logger.info("%s is listed twice (same files, same settings): it renders once.", job.folder)
                continue
            previous = self.jobs.get(job.job_id)
            if previous is None:
                self.jobs[job.job_id] = self._new_job(job, output_dir)
            else:
                self._resume(previous, job, output_dir)
            self.planned.append(job.job_id)
        self._report_other_settings(output_dir)
        self.save()

    def _resume(self, previous: Job, job: Job, output_dir: Path) -> None:
        previous.source, previous.driving = job.source, job.driving  # a renamed or moved input is the same job
        if previous.status == DONE:
            missing = [name for name in previous.outputs if not (output_dir / name).is_file()]
            if not missing:
                return
            logger.warning("%s was done, but %d of its files are gone from %s (%s); it renders again.",
                           previous.folder, len(missing), output_dir, missing[0])
        elif previous.status == RUNNING and previous.prompt_id:
            return
        previous.status, previous.attempts, previous.error = PENDING, 0, None
        previous.server, previous.prompt_id, previous.outputs = None, None, []

    def _new_job(self, job: Job, output_dir: Path) -> Job:
        taken = {other.name for other in self.jobs.values()}
        name = job.name
        if name in taken or (output_dir / name).exists():
            name = f"{name}-{job.job_id[:SHORT_KEY_CHARS]}"
        same_settings = {other.index for other in self.jobs.values() if other.render == job.render}
        index = job.index if job.index not in same_settings else max(same_settings) + 1
        return Job(job_id=job.job_id, source=job.source, driving=job.driving, index=index, name=name,
                   source_digest=job.source_digest, driving_digest=job.driving_digest, render=job.render)

    def _report_other_settings(self, output_dir: Path) -> None:
        """Say so when this plan's inputs were rendered before with another workflow or seed: those results stay in
        their folders, and these jobs render anew (a finished folder never answers for other settings)."""
        planned = [self.jobs[key] for key in self.planned]
        pairs = {(job.source_digest, job.driving_digest) for job in planned if job.status != DONE}
        earlier = [job for job in self.jobs.values() if job.job_id not in self.planned and job.status == DONE
                   and (job.source_digest, job.driving_digest) in pairs]
        if earlier:
            logger.info("%d of these source x driving pairs were rendered before with another workflow or seed (kept "
                        "in %s, e.g. %s); with this workflow and seed they render anew.", len(earlier), output_dir,
                        earlier[0].folder)

    def update(self, job: Job, **changes: object) -> None:
        """Change fields of `job` and save at once."""
        for name, value in changes.items():
            setattr(job, name, value)
        self.save()

    def with_status(self, status: str) -> list[Job]:
        """This run's jobs with `status`, in plan order."""
        return [self.jobs[key] for key in self.planned if self.jobs[key].status == status]

    def counts(self) -> dict[str, int]:
        return {status: len(self.with_status(status)) for status in JOB_STATUSES}

    def save(self) -> None:
        """Write to a temporary file beside the target, then rename: a crash never leaves half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": STATE_FORMAT_VERSION, "jobs": [asdict(job) for job in self.jobs.values()]}
        with atomic_output(self.path) as partial:
            partial.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
