"""The queue against a real ComfyUI 0.3.64, which has no jobs API: the fallback path (/queue, /history) keeps every
job exactly once when the server stops answering past --timeout (SIGSTOP) in the middle of the batch.

Skipped unless COMFYUI_PATH points to a ComfyUI checkout (as tests/test_comfyui_integration.py, whose server fixture
and inputs it shares); run it with that file: PYTEST_EXTRA="tests/test_queue_real_comfyui.py -k queue"
/work/env/run_checks.sh CHECKOUT integration.
"""
from __future__ import annotations

import os
import signal
import sys

import pytest

from tests.test_comfyui_integration import (  # noqa: F401 (the server fixture)
    COMFYUI_PATH,
    queue_inputs,
    server,
)
from xportrait_core.batch_queue import runner
from xportrait_core.batch_queue.comfy_client import ComfyClient
from xportrait_core.cli.main import main
from xportrait_core.options import EXIT_NO_SERVER, EXIT_OK

pytestmark = pytest.mark.skipif(not COMFYUI_PATH or sys.platform == "win32",
                                reason="set COMFYUI_PATH to a ComfyUI checkout to run (SIGSTOP: not on Windows)")
PAUSED_TIMEOUT_S = "3"  # --timeout: a stopped server is taken for gone after this


def test_the_queue_on_a_real_0_3_64_server_paused_past_the_timeout_renders_each_job_once(server, tmp_path,
                                                                                          monkeypatch, capsys):
    from xportrait_core.media.video_io import read_video

    assert not ComfyClient(server.url).has_jobs_api  # 0.3.64: the queue falls back to /queue and /history
    workflow, sources, drivings, output = queue_inputs(tmp_path)
    arguments = ["queue", str(workflow), "--sources", str(sources), "--drivings", str(drivings), "--server",
                 server.url, "--output", str(output), "--poll-interval", "0.5", "--timeout", PAUSED_TIMEOUT_S,
                 "--max-queue", "1"]
    prompts_before = len(server.get("/history"))
    real_submit = runner.ComfyClient.submit_prompt

    def submit_then_stop_the_server(client, *args, **kwargs):
        accepted = real_submit(client, *args, **kwargs)
        monkeypatch.setattr(runner.ComfyClient, "submit_prompt", real_submit)
        os.kill(server.process.pid, signal.SIGSTOP)  # the machine stalls with the first prompt on it
        return accepted

    monkeypatch.setattr(runner.ComfyClient, "submit_prompt", submit_then_stop_the_server)
    try:
        assert main(arguments) == EXIT_NO_SERVER
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert "collected, not rendered again" in capsys.readouterr().err

    assert main(arguments) == EXIT_OK

    assert len(server.get("/history")) == prompts_before + 2  # two jobs, two prompts: none rendered twice
    videos = sorted(output.glob("*/*.mp4"))
    assert [video.parent.name for video in videos] == ["xportrait_source__backward", "xportrait_source__forward"]
    for video in videos:
        assert read_video(video).frames.shape[0] == read_video(drivings / "forward.mp4").frames.shape[0]
