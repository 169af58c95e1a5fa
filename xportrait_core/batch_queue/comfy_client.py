"""A small standard-library HTTP client for the part of ComfyUI's API a batch queue needs.

Routes and reply shapes follow ComfyUI's server.py. Every version: POST /upload/image, POST /prompt, GET /view.
What a prompt is doing, and cancelling it, comes from the jobs API where the server has it (ComfyUI server.py with
comfy_execution/jobs.py, since v0.26: GET /api/jobs, GET /api/jobs/{id}, POST /api/jobs/{id}/cancel), and otherwise
from what 0.3.64 offers: GET /queue, GET /history/{prompt_id}, POST /queue (delete), POST /interrupt. Which one a
server has is asked once per connection (`GET /api/jobs?limit=1`: a 404 means no jobs API).
"""
from __future__ import annotations

import contextlib
import http.client
import json
import logging
import mimetypes
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..media.safe_output import atomic_output
from ..options import default

logger = logging.getLogger(__name__)

# Uploading a driving video can take longer than a JSON call.
UPLOAD_TIMEOUT_S = 300.0
DOWNLOAD_CHUNK_BYTES = 1 << 20


class ComfyError(RuntimeError):
    """Base class for failures talking to a ComfyUI server."""


class ServerUnreachableError(ComfyError):
    """The server did not answer at all (refused, timed out, DNS, reset)."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(
            f"ComfyUI server {url} is unreachable ({reason}). Check that ComfyUI is running there, that the "
            "address and port are right (ComfyUI's --listen/--port), and that no firewall blocks it."
        )


class WorkflowRejectedError(ComfyError):
    """POST /prompt answered 400: the graph failed validation; `node_errors` says where."""

    def __init__(self, url: str, error: Any, node_errors: dict[str, Any]):
        self.url = url
        self.error = error
        self.node_errors = node_errors
        super().__init__(f"ComfyUI server {url} rejected the workflow: {describe_rejection(error, node_errors)}")


class ServerReplyError(ComfyError):
    """The server answered, but with an unexpected HTTP status (`status`, None for a body it could not read) or
    body."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class OutputFile:
    """One file a prompt produced, as listed in its /history outputs."""

    filename: str
    subfolder: str
    type: str


# What the server says about a prompt: still queued or running, finished (its outputs can be collected), or unknown
# to it (it was never queued there, or the server restarted and forgot it).
WAITING = "waiting"
FINISHED = "finished"
UNKNOWN = "unknown"
# The jobs API's job statuses (comfy_execution/jobs.py JobStatus): waiting ones, and finished ones that failed.
JOB_WAITING = frozenset({"pending", "in_progress"})
JOB_FAILED = frozenset({"failed", "cancelled"})


@dataclass(frozen=True)
class PromptStatus:
    """One prompt as the server reports it: `state` (WAITING, FINISHED, UNKNOWN); once finished, its output files and
    its failure (None when it succeeded)."""

    state: str
    outputs: tuple[OutputFile, ...] = ()
    failure: str | None = None


def check_server_url(url: str) -> str:
    """`url` without a trailing slash when it is an http(s) address a client can open; ValueError saying what is wrong
    with it otherwise (found before any request, so that a typo is not reported as a server that is not running)."""
    example = "e.g. http://127.0.0.1:8188"
    text = url.strip()
    if not text or any(char.isspace() for char in text):
        raise ValueError(f"{url!r} is not a server address ({example})")
    if "://" not in text:
        raise ValueError(f"{url!r} has no http:// or https:// in front ({example}: write http://{text})")
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as error:
        raise ValueError(f"{url!r} is not a valid address ({error}; {example})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{url!r} is a {parts.scheme}:// address; ComfyUI answers http:// or https:// ({example})")
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ValueError(f"{url!r} has no valid port (a number from 1 to 65535, {example})") from None
    if not host or port == 0:
        raise ValueError(f"{url!r} names no host and port ({example})")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the server's address only, without ?query or #fragment ({example})")
    return text.rstrip("/")


def describe_rejection(error: Any, node_errors: dict[str, Any]) -> str:
    """Turn a /prompt 400 body into lines a person can act on: the prompt error, then each node's errors."""
    if isinstance(error, dict):
        headline = error.get("message", "invalid prompt")
        details = error.get("details")
        if details and not node_errors:
            headline = f"{headline}: {details}"
    else:
        headline = str(error)
    lines = [headline]
    for node_id, info in node_errors.items():
        for reason in info.get("errors", []):
            lines.append(
                f"  node {node_id} ({info.get('class_type', '?')}): {reason.get('message', '')}: "
                f"{reason.get('details', '')}"
            )
    return "\n".join(lines)


class ComfyClient:
    """Talks to one ComfyUI server at `base_url` (e.g. http://127.0.0.1:8188)."""

    def __init__(self, base_url: str, timeout_s: float = default("timeout")):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._jobs_api: bool | None = None  # unknown until asked

    @property
    def has_jobs_api(self) -> bool:
        """Whether the server has ComfyUI's jobs API (GET /api/jobs, per-job cancel; v0.26 and later). Asked once
        (`forget_api` asks again: a restarted server may be another version); 0.3.64 answers 404. Only a server that
        does not answer at all is an error here."""
        if self._jobs_api is None:
            try:
                reply = self._json("GET", "/api/jobs?limit=1")
                self._jobs_api = isinstance(reply.get("jobs"), list)
            except ServerReplyError:  # 404, or a page of a frontend or proxy that is not the route's JSON
                self._jobs_api = False
            logger.info("%s %s", self.base_url, "has the jobs API" if self._jobs_api else
                        "has no jobs API (ComfyUI before v0.26): using /queue, /history and /interrupt")
        return self._jobs_api

    def forget_api(self) -> None:
        """Ask again which API the server has (after it went away: it may come back as another version)."""
        self._jobs_api = None

    def queue_length(self) -> int:
        """How many prompts, anyone's, are running or waiting on the server."""
        if self.has_jobs_api:
            reply = self._json("GET", "/api/jobs?status=pending,in_progress&limit=1")
            try:
                return int(reply["pagination"]["total"])
            except (KeyError, TypeError, ValueError) as error:
                raise ServerReplyError(f"{self.base_url}/api/jobs answered {str(reply)[:200]}; is this a ComfyUI "
                                       "server?") from error
        return len(self.queued_prompt_ids())

    def queued_prompt_ids(self) -> set[str]:
        """Ids of the prompts running or waiting on the server, from anyone (GET /queue).

        Each queue item is `[number, prompt_id, prompt, extra_data, outputs_to_execute]`; its length is
        the server's queue length.
        """
        reply = self._json("GET", "/queue")
        try:
            items = reply["queue_running"] + reply["queue_pending"]
            return {str(item[1]) for item in items}
        except (KeyError, TypeError, IndexError) as error:
            raise ServerReplyError(f"{self.base_url}/queue answered {str(reply)[:200]}; is this a ComfyUI "
                                   "server?") from error

    def prompt_statuses(self, prompt_ids: list[str]) -> dict[str, PromptStatus]:
        """What the server says about each of these prompts (GET /api/jobs/{id}; without the jobs API, GET /queue
        then GET /history/{id}: in that order, so that a prompt finishing in between is never taken for unknown)."""
        if self.has_jobs_api:
            return {prompt_id: self._job_status(prompt_id) for prompt_id in prompt_ids}
        queued = self.queued_prompt_ids()
        statuses: dict[str, PromptStatus] = {}
        for prompt_id in prompt_ids:
            if prompt_id in queued:
                statuses[prompt_id] = PromptStatus(WAITING)
                continue
            entry = self.history(prompt_id)
            statuses[prompt_id] = PromptStatus(UNKNOWN) if entry is None else PromptStatus(
                FINISHED, tuple(output_files(entry)), execution_failure(entry))
        return statuses

    def _job_status(self, prompt_id: str) -> PromptStatus:
        try:
            job = self._json("GET", f"/api/jobs/{urllib.parse.quote(prompt_id)}")
        except ServerReplyError as error:
            if error.status == 404:  # "Job not found": neither queued, running nor in the history
                return PromptStatus(UNKNOWN)
            raise
        status = job.get("status")
        if status in JOB_WAITING:
            return PromptStatus(WAITING)
        entry = {"outputs": job.get("outputs") or {}, "status": job.get("execution_status") or {}}
        failure = None
        if status in JOB_FAILED:
            failure = execution_failure(entry) if entry["status"] else f"the job ended {status}"
        return PromptStatus(FINISHED, tuple(output_files(entry)), failure)

    def upload_file(self, path: Path, upload_name: str) -> str:
        """Upload `path` into the server's input folder as `upload_name`; return the name nodes take.

        Videos go through /upload/image too (ComfyUI accepts any file type there). overwrite=true keeps
        the name stable, so a LoadImage/LoadVideo value can be set to it.
        """
        boundary = uuid.uuid4().hex
        content_type = mimetypes.guess_type(upload_name)[0] or "application/octet-stream"
        body = b"".join([
            _form_field(boundary, "overwrite", "true"),
            _form_field(boundary, "type", "input"),
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{upload_name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode(),
            path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        reply = self._json("POST", "/upload/image", body, f"multipart/form-data; boundary={boundary}", UPLOAD_TIMEOUT_S)
        subfolder = reply.get("subfolder") or ""
        return f"{subfolder}/{reply['name']}" if subfolder else reply["name"]

    def submit_prompt(self, prompt: dict[str, Any], client_id: str, prompt_id: str | None = None) -> str:
        """Queue an API-format workflow; return its prompt_id. Raises WorkflowRejectedError on HTTP 400.

        prompt_id: the id to queue it under (ComfyUI takes the client's id, server.py post_prompt), so that it can be
        recorded before the prompt can start; a server that picks its own id answers with that one."""
        payload: dict[str, Any] = {"prompt": prompt, "client_id": client_id}
        if prompt_id is not None:
            payload["prompt_id"] = prompt_id
        reply = self._json("POST", "/prompt", json.dumps(payload).encode(), "application/json")
        if not isinstance(reply.get("prompt_id"), str):
            raise ServerReplyError(f"{self.base_url}/prompt answered {str(reply)[:200]} without a prompt_id; is "
                                   "this a ComfyUI server?")
        return reply["prompt_id"]

    def cancel_prompts(self, prompt_ids: list[str]) -> None:
        """Cancel these prompts: waiting ones leave the queue, a running one is stopped; other users' work is never
        touched. With the jobs API, POST /api/jobs/{id}/cancel each; without it, POST /queue {"delete": ids}, then
        POST /interrupt with each prompt_id (ComfyUI interrupts only when that prompt is the running one)."""
        if self.has_jobs_api:
            for prompt_id in prompt_ids:
                self._request_json("POST", f"/api/jobs/{urllib.parse.quote(prompt_id)}/cancel", {})
            return
        self._request_json("POST", "/queue", {"delete": prompt_ids})
        for prompt_id in prompt_ids:
            self._request_json("POST", "/interrupt", {"prompt_id": prompt_id})

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The /history entry of a finished prompt, or None while it is queued or running."""
        reply = self._json("GET", f"/history/{urllib.parse.quote(prompt_id)}")
        return reply.get(prompt_id)

    def download(self, output: OutputFile, destination: Path) -> None:
        """Save one output file (GET /view) to `destination`, whole or not at all (`atomic_output`)."""
        query = urllib.parse.urlencode({"filename": output.filename, "subfolder": output.subfolder,
                                        "type": output.type})
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(destination) as partial, self._open("GET", f"/view?{query}") as response, \
                partial.open("wb") as file:
            shutil.copyfileobj(response, file, DOWNLOAD_CHUNK_BYTES)

    def _request_json(self, method: str, route: str, payload: dict[str, Any]) -> None:
        """Send a JSON body to a route whose answer is not needed."""
        with self._open(method, route, json.dumps(payload).encode(), "application/json") as response:
            response.read()

    def _json(
        self, method: str, route: str, body: bytes | None = None, content_type: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        with self._open(method, route, body, content_type, timeout_s) as response:
            raw = response.read()
        try:
            reply = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ServerReplyError(
                f"{self.base_url}{route} answered with non-JSON {raw[:200]!r}; is this a ComfyUI server?"
            ) from error
        if not isinstance(reply, dict):
            raise ServerReplyError(f"{self.base_url}{route} answered {raw[:200]!r}; is this a ComfyUI server?")
        return reply

    @contextlib.contextmanager
    def _open(
        self, method: str, route: str, body: bytes | None = None, content_type: str | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[http.client.HTTPResponse]:
        """Open a request; a connection that fails, or breaks while the body is read, is ServerUnreachableError."""
        request = urllib.request.Request(self.base_url + route, data=body, method=method)
        logger.debug("%s %s%s", method, self.base_url, route)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as response:
                yield response
        except urllib.error.HTTPError as error:
            raise self._http_error(route, error) from error
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            raise ServerUnreachableError(self.base_url, str(reason)) from error

    def _http_error(self, route: str, error: urllib.error.HTTPError) -> ComfyError:
        raw = error.read()
        if route == "/prompt" and error.code == 400:
            try:
                reply = json.loads(raw)
                return WorkflowRejectedError(self.base_url, reply.get("error"), reply.get("node_errors") or {})
            except (json.JSONDecodeError, AttributeError):
                pass
        return ServerReplyError(
            f"{self.base_url}{route} answered HTTP {error.code} {error.reason}: {raw[:300].decode(errors='replace')}",
            error.code,
        )


def _form_field(boundary: str, name: str, value: str) -> bytes:
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def output_files(history_entry: dict[str, Any], file_type: str = "output") -> list[OutputFile]:
    """Files of `file_type` listed in a /history entry's outputs (any ui key: images, gifs, videos, ...)."""
    found: list[OutputFile] = []
    for node_output in (history_entry.get("outputs") or {}).values():
        for values in node_output.values():
            for value in values if isinstance(values, list) else []:
                if isinstance(value, dict) and "filename" in value and value.get("type", "output") == file_type:
                    found.append(OutputFile(value["filename"], value.get("subfolder", ""), value.get("type", "output")))
    return found


def execution_failure(history_entry: dict[str, Any]) -> str | None:
    """None when a finished prompt succeeded, else what went wrong (from its execution_error message)."""
    status = history_entry.get("status") or {}
    if status.get("status_str") == "success":
        return None
    for event, data in status.get("messages", []):
        if event == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                    f"{data.get('exception_type')}: {str(data.get('exception_message')).strip()}")
        if event == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    return f"prompt ended with status {status.get('status_str')!r}"
