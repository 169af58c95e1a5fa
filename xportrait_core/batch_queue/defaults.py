"""The values the command line shows before anything runs: the `queue` command's defaults and choices (its --help
prints them) and the exit statuses of every command.

Standard library only and nothing else of the batch queue, so that cli/main.py builds its parser from here without
loading the queue; the runner, the client and the `queue` command import their defaults from here too.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8188"  # ComfyUI's default --listen/--port
# A running prompt plus one waiting keeps a GPU busy between prompts while leaving the rest of the
# batch free to go to whichever server drains first.
DEFAULT_MAX_QUEUE = 2
DEFAULT_POLL_INTERVAL_S = 1.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT_S = 30.0  # seconds to wait for one HTTP reply
SEED_POLICIES = ("fixed", "increment")
DEFAULT_QUEUE_OUTPUT = Path("xportrait_output")
STATE_FILE_NAME = "queue_state.json"
INTERRUPT_POLICIES = ("ask", "keep", "cancel")

# Exit statuses of `python -m xportrait_core COMMAND`.
EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_BAD_INPUT = 2  # also what argparse uses for usage errors
EXIT_NO_SERVER = 3
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C
