"""Batch queue into ComfyUI servers (xportrait_core.batch_queue), against in-process fake servers.

FakeComfy answers the routes the queue uses with the reply shapes of ComfyUI 0.3.64's server.py and
execution.py: POST /upload/image, POST /prompt (400 with error/node_errors on invalid graphs; the client's
prompt_id is taken), GET /queue, GET /history/{prompt_id}, GET /view, POST /queue {"delete": [...]} and
POST /interrupt {"prompt_id": ...}; with jobs_api=True also the jobs API of newer ComfyUI (see the class).
Prompts "run" for a fixed time after each other. It can pause, be killed and restarted, and counts every request.
"""
from __future__ import annotations

import collections
import email.parser
import email.policy
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from xportrait_core.batch_queue.batch_plan import QueueInputError, collect_pairs, plan_jobs, read_pairs_file
from xportrait_core.batch_queue.queue_state import DONE, FAILED, QueueState
from xportrait_core.batch_queue.runner import NoServerAvailableError, QueueSettings, run_queue
from xportrait_core.batch_queue.workflow import (
    WorkflowInputs,
    load_workflow,
    locate_workflow_inputs,
    patch_workflow,
    upload_name,
)

FAST_POLL_S = 0.01
FAKE_RUN_TIME_S = 0.05
SAVE_NODE = "9"
SHUTDOWN_POLL_S = 0.02  # how quickly a fake server notices it should stop


def api_workflow() -> dict:
    """A small X-Portrait style API workflow: source image, driving video, sampler, save."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Load Image"}},
        "2": {"class_type": "LoadVideo", "inputs": {"file": "example.mp4"}, "_meta": {"title": "Load Video"}},
        "3": {"class_type": "XPortraitSampler",
              "inputs": {"source": ["1", 0], "driving": ["2", 0], "seed": 7, "ckpt_name": "model.pth"},
              "_meta": {"title": "X-Portrait Sampler"}},
        SAVE_NODE: {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "xportrait/XP"},
                    "_meta": {"title": "Save Video"}},
    }


class FakeComfy:
    """A loopback HTTP server speaking the subset of ComfyUI's API the queue uses, as 0.3.64 (`jobs_api=False`) or as
    a server with the jobs API (`jobs_api=True`).

    The jobs flavour follows Comfy-Org/ComfyUI server.py at commit 002c3fb9a504 (2026; the jobs routes came with
    v0.26) and comfy_execution/jobs.py at 172be4385765: GET /api/jobs (status filter, limit; `{"jobs": [...],
    "pagination": {"total": ...}}`), GET /api/jobs/{id} (404 `{"error": "Job not found"}`; a finished job carries
    `outputs` and `execution_status`; statuses pending, in_progress, completed, failed, cancelled), POST
    /api/jobs/{id}/cancel (`{"cancelled": bool}`, a no-op for finished or unknown ids), and POST /prompt refusing a
    prompt_id that is not a canonical UUID (400 invalid_prompt_id). It keeps the older routes, as that server does.
    The 0.3.64 flavour answers 404 on /api/jobs, as 0.3.64 does (no such route).

    run_time_s: how long each accepted prompt runs (prompts run one after another).
    foreign_backlog: prompts of other users that sit in the queue and never finish.
    reject_with: node_errors to answer every /prompt with (HTTP 400).
    fail_execution: finished prompts end with an execution_error instead of outputs.
    vanish_after_prompts: shut the server down right after accepting this many prompts.
    two_save_nodes: every prompt saves two files of the same name into the subfolders "a" and "b".
    pause_at_prompt: the server stops answering (`pause`) when this POST /prompt (counted from 1) arrives, before it
        records it; `resume` lets it record the prompt and answer again.
    requests: (method, route) -> count, ids in routes as "*"; survives `restart`.
    """

    def __init__(self, run_time_s: float = FAKE_RUN_TIME_S, foreign_backlog: int = 0,
                 reject_with: dict | None = None, fail_execution: bool = False,
                 vanish_after_prompts: int | None = None, jobs_api: bool = False, two_save_nodes: bool = False,
                 pause_at_prompt: int | None = None):
        self.run_time_s = run_time_s
        self.reject_with = reject_with
        self.fail_execution = fail_execution
        self.vanish_after_prompts = vanish_after_prompts
        self.jobs_api = jobs_api
        self.two_save_nodes = two_save_nodes
        self.pause_at_prompt = pause_at_prompt
        self.uploads: dict[str, bytes] = {}
        self.prompt_posts = 0
        self.accepted: list[dict] = []  # {"prompt_id", "number", "prompt", "client_id", "finish_at"}
        self.foreign = [[i, f"foreign-{i}", {}, {}, []] for i in range(foreign_backlog)]
        self.history: dict[str, dict] = {}
        self.rendered: list[str] = []  # prompt ids that ran to the end, over restarts
        self.deleted: list[str] = []  # prompt ids removed from the queue by POST /queue
        self.interrupted: list[str] = []  # prompt ids stopped by POST /interrupt while running
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.requests: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        self.running = threading.Event()  # cleared while paused
        self.running.set()
        self.stopped = True
        self._serve(0)

    def _serve(self, port: int) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True)
        self.thread.start()
        self.stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.running.set()  # let requests held by a pause end
        if not self.stopped:
            self.stopped = True
            self.httpd.shutdown()
            self.httpd.server_close()

    def restart(self) -> None:
        """Kill the server and start it again on the same port: its queue and history are gone (ComfyUI keeps them
        in memory), its files stay."""
        port = self.httpd.server_address[1]
        self.stop()
        self.forget_everything()
        self._serve(port)

    def pause(self) -> None:
        """Stop answering (as a stopped process or a stalled machine): requests wait until `resume`."""
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    # -- state

    def unfinished(self) -> list[dict]:
        """Accepted prompts not yet finished, running one first."""
        return [i for i in self.accepted if i["prompt_id"] not in self.history and i["prompt_id"] not in self.deleted
                and not i.get("forgotten")]

    def forget_everything(self) -> None:
        """What a server restart does: the queue and the history are gone."""
        with self.lock:
            for item in self.unfinished():
                item["forgotten"] = True
            self.history.clear()

    def _finish_due_prompts(self) -> None:
        now = time.monotonic()
        for item in self.unfinished():
            if item["finish_at"] <= now:
                self._record_history(item)

    def _record_history(self, item: dict) -> None:
        prompt, prompt_id = item["prompt"], item["prompt_id"]
        base = {"prompt": [item["number"], prompt_id, prompt, {"client_id": item["client_id"]}, [SAVE_NODE]],
                "meta": {}}
        if self.fail_execution:
            error = {"prompt_id": prompt_id, "node_id": "3", "node_type": "XPortraitSampler", "executed": ["1", "2"],
                     "exception_message": "CUDA out of memory", "exception_type": "torch.OutOfMemoryError",
                     "traceback": [], "current_inputs": {}, "current_outputs": []}
            self.history[prompt_id] = {**base, "outputs": {}, "status": {
                "status_str": "error", "completed": False,
                "messages": [["execution_start", {"prompt_id": prompt_id}], ["execution_error", error]]}}
            return
        self.rendered.append(prompt_id)
        filename = f"XP_{item['number']:05d}_.mp4"
        outputs = {}
        for node, subfolder in (((SAVE_NODE, "xportrait"),) if not self.two_save_nodes else
                                ((SAVE_NODE, "a"), ("10", "b"))):
            self.files[("output", subfolder, filename)] = self.result_bytes(prompt) + f"|{subfolder}".encode()
            outputs[node] = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
                             "animated": [True]}
        self.files[("temp", "", f"preview_{item['number']}.png")] = b"preview"
        self.history[prompt_id] = {**base, "outputs": {
            **outputs, "3": {"images": [{"filename": f"preview_{item['number']}.png", "subfolder": "",
                                         "type": "temp"}]},
        }, "status": {"status_str": "success", "completed": True, "messages": [
            ["execution_start", {"prompt_id": prompt_id}], ["execution_success", {"prompt_id": prompt_id}]]}}

    @staticmethod
    def result_bytes(prompt: dict) -> bytes:
        """What the fake 'renders': the names it animated and the seed, so tests can check the patching."""
        return (f"{prompt['1']['inputs']['image']}|{prompt['2']['inputs']['file']}|"
                f"seed={prompt['3']['inputs']['seed']}").encode()

    def _validation_errors(self, prompt: dict) -> dict:
        node_errors = {}
        for node_id, node in prompt.items():
            name_input = {"LoadImage": "image", "LoadVideo": "file"}.get(node["class_type"])
            if name_input and node["inputs"][name_input] not in self.uploads:
                value = node["inputs"][name_input]
                node_errors[node_id] = {"errors": [{
                    "type": "custom_validation_failed", "message": "Custom validation failed for node",
                    "details": f"{name_input} - Invalid file: {value}", "extra_info": {"input_name": name_input}}],
                    "dependent_outputs": [SAVE_NODE], "class_type": node["class_type"]}
        return node_errors

    def _job(self, prompt_id: str) -> dict | None:
        """GET /api/jobs/{id} (comfy_execution/jobs.py get_job): from the history, else the queue."""
        if prompt_id in self.history:
            entry = self.history[prompt_id]
            status = "completed" if entry["status"]["status_str"] == "success" else "failed"
            return {"id": prompt_id, "status": status, "outputs": entry["outputs"],
                    "execution_status": entry["status"], "outputs_count": len(entry["outputs"])}
        waiting = self.unfinished()
        for position, item in enumerate(waiting):
            if item["prompt_id"] == prompt_id:
                return {"id": prompt_id, "status": "in_progress" if position == 0 else "pending",
                        "priority": item["number"], "outputs_count": 0}
        return None

    def _jobs_list(self, query: dict) -> dict:
        wanted = set(query.get("status", "pending,in_progress,completed,failed,cancelled").split(","))
        jobs = [job for job in (self._job(item["prompt_id"]) for item in self.accepted) if job]
        jobs += [{"id": item[1], "status": "pending"} for item in self.foreign]
        jobs = [job for job in jobs if job["status"] in wanted]
        limit = int(query["limit"]) if "limit" in query else None
        shown = jobs[:limit] if limit else jobs
        return {"jobs": shown, "pagination": {"offset": 0, "limit": limit, "total": len(jobs),
                                              "has_more": len(shown) < len(jobs)}}

    def _cancel_job(self, prompt_id: str) -> bool:
        """POST /api/jobs/{id}/cancel (comfy_execution/jobs.py cancel_job): a running job is interrupted, a pending
        one dequeued, a finished or unknown one left alone."""
        # An interrupted prompt holds the running place until the server turns to the next one.
        waiting = [item for item in self.accepted if item["prompt_id"] not in self.history
                   and not item.get("forgotten")
                   and (item["prompt_id"] not in self.deleted or item["prompt_id"] in self.interrupted)]
        for position, item in enumerate(waiting):
            if item["prompt_id"] == prompt_id and prompt_id not in self.deleted:
                if position == 0:
                    self.interrupted.append(prompt_id)
                self.deleted.append(prompt_id)
                return True
        return False

    # -- HTTP

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _count(self, method: str) -> None:
                route = urllib.parse.urlsplit(self.path).path
                route = re.sub(r"^/(history|api/jobs)/[^/]+", r"/\1/*", route)
                with fake.lock:
                    fake.requests[(method, route)] += 1
                fake.running.wait(timeout=30)

            def _reply(self, status: int, payload: object = None, body: bytes | None = None):
                data = body if body is not None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type",
                                     "application/json" if body is None else "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (its timeout)
                    pass

            def do_GET(self):
                self._count("GET")
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                with fake.lock:
                    fake._finish_due_prompts()
                    if url.path == "/queue":
                        waiting = [[i["number"], i["prompt_id"], i["prompt"], {}, [SAVE_NODE]]
                                   for i in fake.unfinished()]
                        return self._reply(200, {"queue_running": waiting[:1],
                                                 "queue_pending": waiting[1:] + fake.foreign})
                    if url.path.startswith("/history/"):
                        prompt_id = url.path.removeprefix("/history/")
                        entry = fake.history.get(prompt_id)
                        return self._reply(200, {prompt_id: entry} if entry else {})
                    if url.path == "/view":
                        key = (query.get("type", "output"), query.get("subfolder", ""), query["filename"])
                        if key in fake.files:
                            return self._reply(200, body=fake.files[key])
                        return self._reply(404, {})
                    if fake.jobs_api and url.path == "/api/jobs":
                        return self._reply(200, fake._jobs_list(query))
                    if fake.jobs_api and url.path.startswith("/api/jobs/"):
                        job = fake._job(url.path.removeprefix("/api/jobs/"))
                        return self._reply(200, job) if job else self._reply(404, {"error": "Job not found"})
                self._reply(404, {})

            def do_POST(self):
                self._count("POST")
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/upload/image":
                    return self._upload(body)
                if self.path == "/prompt":
                    return self._prompt(json.loads(body))
                if self.path == "/queue":
                    with fake.lock:
                        fake.deleted += [i["prompt_id"] for i in fake.unfinished()[1:]
                                         if i["prompt_id"] in json.loads(body).get("delete", [])]
                    return self._reply(200, body=b"")
                if self.path == "/interrupt":
                    with fake.lock:
                        running = fake.unfinished()[:1]
                        if running and running[0]["prompt_id"] == json.loads(body).get("prompt_id"):
                            fake.interrupted.append(running[0]["prompt_id"])
                            fake.deleted.append(running[0]["prompt_id"])
                    return self._reply(200, body=b"")
                cancel = re.fullmatch(r"/api/jobs/([^/]+)/cancel", self.path)
                if fake.jobs_api and cancel:
                    with fake.lock:
                        return self._reply(200, {"cancelled": fake._cancel_job(cancel.group(1))})
                self._reply(404, {})

            def _upload(self, body: bytes):
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
                fields = {part.get_param("name", header="content-disposition"): part
                          for part in message.iter_parts()}
                if "image" not in fields or fields["overwrite"].get_content().strip() != "true":
                    return self._reply(400, body=b"")
                name = fields["image"].get_filename()
                with fake.lock:
                    fake.uploads[name] = fields["image"].get_payload(decode=True)
                self._reply(200, {"name": name, "subfolder": "", "type": "input"})

            def _prompt(self, request: dict):
                with fake.lock:
                    fake.prompt_posts += 1
                    pause_here = fake.prompt_posts == fake.pause_at_prompt
                if pause_here:  # the post has arrived; the server stalls before it takes it in
                    fake.pause()
                    fake.running.wait(timeout=30)
                with fake.lock:
                    client_id = request.get("prompt_id")
                    if fake.jobs_api and client_id is not None and (
                            not isinstance(client_id, str) or str(uuid.UUID(client_id)) != client_id):
                        error = {"type": "invalid_prompt_id", "message": "prompt_id must be a valid UUID",
                                 "details": "", "extra_info": {}}
                        return self._reply(400, {"error": error, "node_errors": {}})
                    node_errors = fake.reject_with or fake._validation_errors(request["prompt"])
                    if node_errors:
                        error = {"type": "prompt_outputs_failed_validation",
                                 "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}
                        return self._reply(400, {"error": error, "node_errors": node_errors})
                    fake._finish_due_prompts()
                    running = [i["finish_at"] for i in fake.unfinished()]
                    start = max(running + [time.monotonic()])
                    item = {"prompt_id": client_id or str(uuid.uuid4()), "number": len(fake.accepted),
                            "prompt": request["prompt"], "client_id": request.get("client_id"),
                            "finish_at": start + fake.run_time_s}
                    fake.accepted.append(item)
                    vanish = fake.vanish_after_prompts is not None and len(fake.accepted) >= fake.vanish_after_prompts
                self._reply(200, {"prompt_id": item["prompt_id"], "number": item["number"], "node_errors": {}})
                if vanish:
                    threading.Thread(target=fake.stop, daemon=True).start()

        return Handler


@pytest.fixture
def fakes():
    started: list[FakeComfy] = []

    def start(**options) -> FakeComfy:
        fake = FakeComfy(**options)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def batch(tmp_path) -> dict:
    """Two source images and two driving videos on disk, and the batch's output/state paths."""
    sources, drivings = tmp_path / "sources", tmp_path / "drivings"
    sources.mkdir()
    drivings.mkdir()
    for name in ("anna.png", "ben.png"):
        (sources / name).write_bytes(b"png bytes of " + name.encode())
    for name in ("smile.mp4", "talk.mp4"):
        (drivings / name).write_bytes(b"mp4 bytes of " + name.encode())
    return {"jobs": plan_jobs(collect_pairs(sources, drivings)), "output": tmp_path / "out",
            "state": tmp_path / "out" / "queue_state.json"}


def settings_for(servers: list[FakeComfy | str], output: Path, **overrides) -> QueueSettings:
    workflow = api_workflow()
    options = {"max_queue": 1, "poll_interval_s": FAST_POLL_S, "request_timeout_s": 2.0, **overrides}
    return QueueSettings(workflow=workflow, inputs=locate_workflow_inputs(workflow),
                         servers=[s if isinstance(s, str) else s.url for s in servers], output_dir=output, **options)


def named(state: QueueState, name: str):
    """This run's job whose folder is `name`."""
    found = [state.jobs[key] for key in state.planned if state.jobs[key].folder == name]
    assert len(found) == 1, f"no single job named {name}: {[state.jobs[key].folder for key in state.planned]}"
    return found[0]


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---- running a batch ----------------------------------------------------------------------------

def test_two_sources_by_two_drivings_run_across_two_servers(fakes, batch):
    first, second = fakes(), fakes()

    state = run_queue(settings_for([first, second], batch["output"]), batch["jobs"], batch["state"])

    assert state.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}
    # With room for one prompt per server, both work at once; the exact split follows which one frees first.
    assert len(first.accepted) >= 1 and len(second.accepted) >= 1
    assert len(first.accepted) + len(second.accepted) == 4
    assert {job.server for job in state.jobs.values()} == {first.url, second.url}


def test_each_job_downloads_its_own_result_into_its_folder(fakes, batch):
    first, second = fakes(), fakes()

    state = run_queue(settings_for([first, second], batch["output"]), batch["jobs"], batch["state"])

    job = named(state, "anna__talk")
    assert len(job.outputs) == 1 and job.outputs[0].startswith("anna__talk/XP_")
    result = (batch["output"] / job.outputs[0]).read_bytes().decode()
    source_name, driving_name, seed, subfolder = result.split("|")
    assert source_name.startswith("anna-") and source_name.endswith(".png")
    assert driving_name.startswith("talk-") and driving_name.endswith(".mp4")
    assert seed == "seed=7"  # no --seed: the workflow's own seed is kept


def test_temp_previews_are_not_downloaded(fakes, batch):
    state = run_queue(settings_for([fakes()], batch["output"]), batch["jobs"], batch["state"])

    downloaded = sorted(p.name for p in batch["output"].rglob("*")
                        if p.is_file() and p.name not in ("queue_state.json", ".queue.lock"))
    assert len(downloaded) == 4 and all(name.startswith("XP_") for name in downloaded)
    assert all(job.status == DONE for job in state.jobs.values())


def test_state_file_records_every_job_done(fakes, batch):
    run_queue(settings_for([fakes()], batch["output"]), batch["jobs"], batch["state"])

    saved = json.loads(batch["state"].read_text())
    assert [entry["name"] for entry in saved["jobs"]] == ["anna__smile", "anna__talk", "ben__smile", "ben__talk"]
    assert {entry["status"] for entry in saved["jobs"]} == {DONE}
    assert all(entry["prompt_id"] and entry["attempts"] == 0 for entry in saved["jobs"])


def test_jobs_go_to_the_server_with_the_shorter_queue(fakes, batch):
    busy = fakes(foreign_backlog=2)
    idle = fakes()

    state = run_queue(settings_for([busy, idle], batch["output"], max_queue=2), batch["jobs"], batch["state"])

    assert busy.prompt_posts == 0
    assert len(idle.accepted) == 4
    assert {job.server for job in state.jobs.values()} == {idle.url}


def test_increment_seed_policy_adds_the_job_index(fakes, batch):
    fake = fakes()

    run_queue(settings_for([fake], batch["output"], seed=100, seed_policy="increment"), batch["jobs"], batch["state"])

    seeds = sorted(item["prompt"]["3"]["inputs"]["seed"] for item in fake.accepted)
    assert seeds == [100, 101, 102, 103]


def test_inputs_are_uploaded_once_per_server(fakes, batch):
    fake = fakes()

    run_queue(settings_for([fake], batch["output"]), batch["jobs"], batch["state"])

    assert len(fake.uploads) == 4  # 2 sources + 2 drivings for 4 jobs
    assert fake.uploads[upload_name(batch["jobs"][0].source)] == b"png bytes of anna.png"


# ---- resuming -----------------------------------------------------------------------------------

def test_rerun_skips_finished_jobs(fakes, batch):
    run_queue(settings_for([fakes()], batch["output"]), batch["jobs"], batch["state"])
    second_run_server = fakes()

    state = run_queue(settings_for([second_run_server], batch["output"]), batch["jobs"], batch["state"])

    assert second_run_server.prompt_posts == 0 and second_run_server.uploads == {}
    assert state.counts()["done"] == 4


def test_rerun_runs_only_the_unfinished_jobs(fakes, batch):
    run_queue(settings_for([fakes()], batch["output"]), batch["jobs"], batch["state"])
    interrupted = QueueState.load(batch["state"])
    interrupted.update(named(interrupted, "ben__talk"), status="pending", outputs=[])
    second_run_server = fakes()

    state = run_queue(settings_for([second_run_server], batch["output"]), batch["jobs"], batch["state"])

    assert [item["prompt"]["1"]["inputs"]["image"][:3] for item in second_run_server.accepted] == ["ben"]
    assert named(state, "ben__talk").status == DONE and named(state, "ben__talk").server == second_run_server.url


# ---- failures -----------------------------------------------------------------------------------

MISSING_CHECKPOINT = {"3": {"errors": [{
    "type": "value_not_in_list", "message": "Value not in list",
    "details": "ckpt_name: 'model.pth' not in ['other.pth']", "extra_info": {"input_name": "ckpt_name"}}],
    "dependent_outputs": [SAVE_NODE], "class_type": "XPortraitSampler"}}


def test_rejected_workflow_fails_the_job_after_bounded_attempts(fakes, batch):
    fake = fakes(reject_with=MISSING_CHECKPOINT)
    one_job = batch["jobs"][:1]

    state = run_queue(settings_for([fake], batch["output"], max_attempts=2), one_job, batch["state"])

    job = named(state, "anna__smile")
    assert (job.status, job.attempts, fake.prompt_posts) == (FAILED, 2, 2)


def test_rejection_message_names_the_node_and_its_error(fakes, batch, caplog):
    fake = fakes(reject_with=MISSING_CHECKPOINT)

    with caplog.at_level(logging.ERROR):
        state = run_queue(settings_for([fake], batch["output"], max_attempts=1), batch["jobs"][:1], batch["state"])

    expected = "node 3 (XPortraitSampler): Value not in list: ckpt_name: 'model.pth' not in ['other.pth']"
    assert expected in named(state, "anna__smile").error
    assert expected in caplog.text
    assert f"{fake.url} rejected the workflow" in caplog.text


def test_execution_error_is_retried_then_reported(fakes, batch):
    fake = fakes(fail_execution=True)

    state = run_queue(settings_for([fake], batch["output"], max_attempts=3), batch["jobs"][:1], batch["state"])

    job = named(state, "anna__smile")
    assert (job.status, job.attempts, len(fake.accepted)) == (FAILED, 3, 3)
    assert "node 3 (XPortraitSampler) raised torch.OutOfMemoryError: CUDA out of memory" in job.error


def test_a_server_that_goes_away_keeps_its_prompt_and_the_others_finish_the_rest(fakes, batch):
    vanishing = fakes(vanish_after_prompts=1, run_time_s=60.0)  # its prompt can never finish before it goes
    steady = fakes()

    with pytest.raises(NoServerAvailableError, match=rf"The last 1 jobs wait on {vanishing.url}, which stopped"):
        run_queue(settings_for([vanishing, steady], batch["output"]), batch["jobs"], batch["state"])

    state = QueueState.load(batch["state"])
    kept = [job for job in state.jobs.values() if job.status == "running"]
    assert len(vanishing.accepted) == 1 and vanishing.stopped and len(steady.accepted) == 3
    assert [(job.server, job.prompt_id) for job in kept] == [(vanishing.url, vanishing.accepted[0]["prompt_id"])]
    assert state.counts()[DONE] == 3 and all(job.attempts == 0 for job in state.jobs.values())


def test_a_rerun_without_the_lost_server_queues_its_job_elsewhere_and_says_so(fakes, batch, caplog):
    vanishing = fakes(vanish_after_prompts=1, run_time_s=60.0)
    steady = fakes()
    with pytest.raises(NoServerAvailableError):
        run_queue(settings_for([vanishing, steady], batch["output"]), batch["jobs"], batch["state"])

    with caplog.at_level(logging.WARNING):
        state = run_queue(settings_for([steady], batch["output"]), batch["jobs"], batch["state"])

    assert state.counts()[DONE] == 4 and len(steady.accepted) == 4
    assert f"which is not among this run's --server addresses: queuing it again here (if {vanishing.url}" in caplog.text


def test_unreachable_server_is_named_with_what_to_check(batch, caplog):
    url = closed_port_url()

    with caplog.at_level(logging.WARNING), pytest.raises(NoServerAvailableError) as raised:
        run_queue(settings_for([url], batch["output"]), batch["jobs"], batch["state"])

    assert f"ComfyUI server {url} is unreachable" in caplog.text
    assert "--listen/--port" in caplog.text
    assert url in str(raised.value) and "run the same command again" in str(raised.value)


def test_unreachable_server_leaves_all_jobs_pending_in_the_state(batch):
    with pytest.raises(NoServerAvailableError):
        run_queue(settings_for([closed_port_url()], batch["output"]), batch["jobs"], batch["state"])

    assert QueueState.load(batch["state"]).counts() == {"pending": 4, "running": 0, "done": 0, "failed": 0}


# ---- workflow patching --------------------------------------------------------------------------

def test_loaders_and_seed_nodes_are_found_by_class_type():
    assert locate_workflow_inputs(api_workflow()) == WorkflowInputs("1", "2", ("3",))


def test_several_loaders_are_told_apart_by_title():
    workflow = api_workflow()
    workflow["5"] = {"class_type": "LoadImage", "inputs": {"image": "x.png"}, "_meta": {"title": "Source face"}}
    workflow["6"] = {"class_type": "LoadVideo", "inputs": {"file": "y.mp4"}, "_meta": {"title": "Driving clip"}}

    assert locate_workflow_inputs(workflow) == WorkflowInputs("5", "6", ("3",))


def test_ambiguous_loaders_ask_for_a_node_id():
    workflow = api_workflow()
    workflow["5"] = {"class_type": "LoadImage", "inputs": {"image": "x.png"}, "_meta": {"title": "Mask"}}

    with pytest.raises(QueueInputError,
                       match=r"which node takes the source: LoadImage nodes found: 1 .*5 .*--source-node"):
        locate_workflow_inputs(workflow)


def test_given_node_ids_override_detection():
    workflow = api_workflow()
    workflow["5"] = {"class_type": "LoadImage", "inputs": {"image": "x.png"}, "_meta": {"title": "Mask"}}

    assert locate_workflow_inputs(workflow, source_node="5").source_node == "5"


def test_a_given_node_of_the_wrong_class_is_an_error():
    with pytest.raises(QueueInputError, match=r"Node 3 \(XPortraitSampler\) cannot take the driving file"):
        locate_workflow_inputs(api_workflow(), driving_node="3")


def test_patching_sets_file_names_and_seed_without_touching_the_original():
    workflow = api_workflow()

    patched = patch_workflow(workflow, WorkflowInputs("1", "2", ("3",)), "a.png", "b.mp4", seed=40, seed_offset=2)

    assert patched["1"]["inputs"]["image"] == "a.png"
    assert patched["2"]["inputs"]["file"] == "b.mp4"
    assert patched["3"]["inputs"]["seed"] == 42
    assert workflow["3"]["inputs"]["seed"] == 7


def test_random_noise_seeds_of_core_custom_sampling_are_found_and_patched():
    workflow = api_workflow()
    workflow["3"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}, "_meta": {"title": "RandomNoise"}}
    found = locate_workflow_inputs(workflow)

    patched = patch_workflow(workflow, found, "a.png", "b.mp4", seed=40, seed_offset=2)

    assert found.seed_nodes == ("3",) and patched["3"]["inputs"] == {"noise_seed": 42}


def test_ui_format_workflow_is_refused_with_the_export_hint(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))

    with pytest.raises(QueueInputError, match=r"Export \(API\)"):
        load_workflow(path)


# ---- batch plans --------------------------------------------------------------------------------

def test_upload_names_differ_for_same_named_files_with_different_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "face.png").write_bytes(b"one")
    (tmp_path / "b" / "face.png").write_bytes(b"two")

    assert upload_name(tmp_path / "a" / "face.png") != upload_name(tmp_path / "b" / "face.png")


def test_same_named_inputs_of_different_content_are_two_jobs_with_distinct_folders(fakes, tmp_path):
    for folder, content in (("a", b"one"), ("b", b"two")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "face.png").write_bytes(content)
    (tmp_path / "clip.mp4").write_bytes(b"clip")
    pairs = [(tmp_path / "a" / "face.png", tmp_path / "clip.mp4"), (tmp_path / "b" / "face.png", tmp_path / "clip.mp4")]

    state = run_queue(settings_for([fakes()], tmp_path / "out"), plan_jobs(pairs), tmp_path / "out" / "s.json")

    folders = [state.jobs[key].folder for key in state.planned]
    assert folders[0] == "face__clip" and folders[1].startswith("face__clip-") and state.counts()[DONE] == 2


def test_pairs_csv_with_header_resolves_paths_next_to_it(tmp_path):
    (tmp_path / "s.png").write_bytes(b"s")
    (tmp_path / "d.mp4").write_bytes(b"d")
    (tmp_path / "pairs.csv").write_text("source,driving\ns.png,d.mp4\n")

    assert read_pairs_file(tmp_path / "pairs.csv") == [(tmp_path / "s.png", tmp_path / "d.mp4")]


def test_pairs_json_accepts_objects_and_lists(tmp_path):
    (tmp_path / "s.png").write_bytes(b"s")
    (tmp_path / "d.mp4").write_bytes(b"d")
    (tmp_path / "pairs.json").write_text(json.dumps([{"source": "s.png", "driving": "d.mp4"}, ["s.png", "d.mp4"]]))

    assert read_pairs_file(tmp_path / "pairs.json") == [(tmp_path / "s.png", tmp_path / "d.mp4")] * 2


def test_pairs_file_naming_a_missing_file_says_which_entry(tmp_path):
    (tmp_path / "s.png").write_bytes(b"s")
    (tmp_path / "pairs.csv").write_text("s.png,missing.mp4\n")

    with pytest.raises(QueueInputError, match=r"entry 1: Driving video .*missing.mp4 does not exist"):
        read_pairs_file(tmp_path / "pairs.csv")


def test_a_folder_without_sources_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "d.mp4").write_bytes(b"d")

    with pytest.raises(QueueInputError, match="holds no source image files"):
        collect_pairs(tmp_path / "empty", tmp_path / "d.mp4")


def test_a_failed_job_is_retried_with_fresh_attempts_on_rerun(fakes, batch):
    rejecting = fakes(reject_with=MISSING_CHECKPOINT)
    first = run_queue(settings_for([rejecting], batch["output"], max_attempts=1), batch["jobs"][:1], batch["state"])
    assert (named(first, "anna__smile").status, named(first, "anna__smile").attempts) == (FAILED, 1)
    fixed = fakes()

    state = run_queue(settings_for([fixed], batch["output"], max_attempts=1), batch["jobs"][:1], batch["state"])

    job = named(state, "anna__smile")
    assert (job.status, job.attempts, job.error, len(fixed.accepted)) == (DONE, 0, None, 1)
