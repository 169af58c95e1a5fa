"""The resumable record of a batch queue run: one entry per job, saved atomically after every change.

A re-run reads the file, keeps finished jobs as they are, collects the prompts an interrupted run left queued or
running on the servers, and runs the rest again, so an interrupted batch (Ctrl-C, a crash, servers gone) never
repeats or loses work.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..media.safe_output import atomic_output

STATE_FILE_NAME = "queue_state.json"  # in the output folder unless --state names another file

STATE_FORMAT_VERSION = 1

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
JOB_STATUSES = (PENDING, RUNNING, DONE, FAILED)


class QueueStateError(ValueError):
    """The state file exists but cannot be used."""


@dataclass
class Job:
    """One animation: a source image driven by a driving video.

    index: position in the batch plan; the per-job seed increment adds it, so a job keeps its seed on resume.
    attempts: submissions that ended in a failure of the job itself (a server going away does not count).
    outputs: downloaded files, relative to the output folder.
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


class QueueState:
    """Jobs by id, in plan order, bound to the JSON file they are saved to."""

    def __init__(self, path: Path, jobs: list[Job] | None = None):
        self.path = path
        self.jobs: dict[str, Job] = {job.job_id: job for job in jobs or []}

    @classmethod
    def load(cls, path: Path) -> QueueState:
        """Read the state file; a missing file is an empty state (a first run)."""
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in fields(Job)}
            jobs = [Job(**{k: v for k, v in entry.items() if k in known}) for entry in data["jobs"]]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise QueueStateError(
                f"State file {path} is not a queue state ({error}). Give another --state path, or delete the "
                "file to start the batch from scratch."
            ) from error
        return cls(path, jobs)

    def merge_plan(self, planned: list[Job]) -> None:
        """Adopt this run's plan, keeping what earlier runs achieved.

        A job with the same id, source and driving keeps its record when it is done, and when it is still running
        from an interrupted run (its prompt id and server are kept, so the prompt is collected instead of rendered
        again); a failed job is made pending again with fresh attempts (a re-run is a retry). Jobs no longer in
        the plan are dropped from the record.
        """
        merged: list[Job] = []
        for job in planned:
            previous = self.jobs.get(job.job_id)
            if previous is not None and (previous.source, previous.driving) == (job.source, job.driving) and (
                    previous.status == DONE or (previous.status == RUNNING and previous.prompt_id)):
                merged.append(previous)
            else:
                merged.append(Job(job_id=job.job_id, source=job.source, driving=job.driving, index=job.index))
        self.jobs = {job.job_id: job for job in merged}
        self.save()

    def update(self, job: Job, **changes: object) -> None:
        """Change fields of `job` and save at once."""
        for name, value in changes.items():
            setattr(job, name, value)
        self.save()

    def with_status(self, status: str) -> list[Job]:
        return [job for job in self.jobs.values() if job.status == status]

    def counts(self) -> dict[str, int]:
        return {status: len(self.with_status(status)) for status in JOB_STATUSES}

    def save(self) -> None:
        """Write to a temporary file beside the target, then rename: a crash never leaves half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": STATE_FORMAT_VERSION, "jobs": [asdict(job) for job in self.jobs.values()]}
        with atomic_output(self.path) as partial:
            partial.write_text(json.dumps(payload, indent=2))
