"""The command line: `python -m xportrait_core <command> ...`.

Each sub-command lives in an `add_<command>_parser(subparsers)` function that declares its arguments
and sets `func` (called with the parsed arguments, returns the exit status); `build_parser` lists them.
Imports here stay light (no torch) so `--help` answers at once; commands import heavy modules when run.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..batch_queue.defaults import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_QUEUE_OUTPUT,
    DEFAULT_SERVER,
    DEFAULT_TIMEOUT_S,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_NO_SERVER,
    EXIT_OK,
    INTERRUPT_POLICIES,
    SEED_POLICIES,
    STATE_FILE_NAME,
)
from .arg_types import positive_float, positive_int
from .local_commands import add_animate_parser, add_convert_parser, add_demo_parser

logger = logging.getLogger(__name__)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, reporting a bad argument in one line (which argument, what is wrong, where help is) instead
    of the whole usage block; the sub-commands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (options: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m xportrait_core",
        description="X-Portrait portrait animation: animate locally, try the pipeline with nothing downloaded, "
                    "convert checkpoints, batch-run on ComfyUI servers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log every HTTP request (debug level)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Sub-commands, one registration function each.
    add_animate_parser(subparsers)
    add_demo_parser(subparsers)
    add_convert_parser(subparsers)
    add_queue_parser(subparsers)
    return parser


def add_queue_parser(subparsers: argparse._SubParsersAction) -> None:
    """`queue`: run a ComfyUI workflow for every source x driving pair on one or more servers."""
    parser = subparsers.add_parser(
        "queue",
        help="batch-run a ComfyUI workflow over source images x driving videos on ComfyUI servers",
        description=(
            "Upload each source image and driving video to a ComfyUI server, set them (and the seed) in an\n"
            "API-format workflow, queue it on the server with the shortest queue, and download the outputs\n"
            "into OUTPUT/<source>__<driving>/. Progress is saved to a state file after every change: running\n"
            "the same command again skips finished jobs and retries failed or unfinished ones. A server that\n"
            "goes away hands its jobs to the other servers."
        ),
        epilog=(
            "examples:\n"
            "  python -m xportrait_core queue workflow_api.json --sources faces/ --drivings clips/\n"
            "  python -m xportrait_core queue workflow_api.json --pairs pairs.csv \\\n"
            "      --server http://gpu1:8188 --server http://gpu2:8188 --seed 42 --seed-policy increment\n"
            "\n"
            f"exit status: {EXIT_OK} all jobs done, {EXIT_JOBS_FAILED} some jobs failed, {EXIT_BAD_INPUT} bad "
            f"arguments or inputs,\n  {EXIT_NO_SERVER} no server reachable, {EXIT_INTERRUPTED} interrupted "
            "(resume by running the same command)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workflow", type=Path,
                        help="workflow JSON in API format (ComfyUI: Workflow > Export (API))")
    inputs = parser.add_argument_group("inputs (--sources with --drivings, or --pairs)")
    inputs.add_argument("--sources", type=Path, metavar="PATH",
                        help="a source portrait image, or a folder of them (png/jpg/jpeg/webp)")
    inputs.add_argument("--drivings", type=Path, metavar="PATH",
                        help="a driving video, or a folder of them (mp4/webm/mov/mkv/avi/gif); "
                             "every source is animated with every driving")
    inputs.add_argument("--pairs", type=Path, metavar="FILE",
                        help="explicit pairs instead: CSV rows 'source,driving' (header optional) or a JSON list "
                             "of {\"source\": ..., \"driving\": ...}; relative paths are taken from the file's folder")

    servers = parser.add_argument_group("servers")
    servers.add_argument("--server", dest="servers", action="append", metavar="URL",
                         help=f"ComfyUI server address; repeat for several (default: {DEFAULT_SERVER})")
    servers.add_argument("--max-queue", type=positive_int, default=DEFAULT_MAX_QUEUE, metavar="N",
                         help="queue a job on a server only while its queue (anyone's prompts, running or "
                              f"waiting) is shorter than N (default: {DEFAULT_MAX_QUEUE})")
    servers.add_argument("--poll-interval", type=positive_float, default=DEFAULT_POLL_INTERVAL_S, metavar="S",
                         help=f"seconds between progress checks (default: {DEFAULT_POLL_INTERVAL_S})")
    servers.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
                         help=f"seconds to wait for one HTTP reply (default: {DEFAULT_TIMEOUT_S:g})")

    workflow = parser.add_argument_group("workflow patching")
    workflow.add_argument("--source-node", metavar="ID",
                          help="id of the LoadImage node that takes the source (default: the only LoadImage, or "
                               "the one whose title contains 'source')")
    workflow.add_argument("--driving-node", metavar="ID",
                          help="id of the LoadVideo node that takes the driving video (default: the only "
                               "LoadVideo, or the one whose title contains 'driving')")
    workflow.add_argument("--seed", type=int, metavar="N",
                          help="seed for every node with a 'seed' or 'noise_seed' input, e.g. XPortraitSampler "
                               "or RandomNoise (default: keep the workflow's seeds)")
    workflow.add_argument("--seed-policy", choices=SEED_POLICIES, default="fixed",
                          help="fixed: every job gets the same seed; increment: job number i (from 0, in batch "
                               "order) gets seed + i (default: fixed)")

    run = parser.add_argument_group("results and resuming")
    run.add_argument("--output", type=Path, default=DEFAULT_QUEUE_OUTPUT, metavar="DIR",
                     help=f"folder for the downloaded outputs, one sub-folder per job (default: {DEFAULT_QUEUE_OUTPUT})")
    run.add_argument("--state", type=Path, metavar="FILE",
                     help=f"resumable state file (default: OUTPUT/{STATE_FILE_NAME})")
    run.add_argument("--max-attempts", type=positive_int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
                     help="tries per job before it is marked failed; a server going away does not count "
                          f"(default: {DEFAULT_MAX_ATTEMPTS})")
    run.add_argument("--on-interrupt", choices=INTERRUPT_POLICIES, default="ask",
                     help="what Ctrl-C does with this batch's prompts still queued or running on the servers: "
                          "ask (in a terminal; without one, e.g. in a script or cron, they are kept), keep (they "
                          "finish and the next run collects them), cancel (removed from the servers' queues, the "
                          "running one interrupted) (default: ask)")
    parser.set_defaults(func=_run_queue_lazily)


def _run_queue_lazily(args: argparse.Namespace) -> int:
    """Run the `queue` sub-command; returns the exit status. The batch queue (runner, HTTP client, state file) is
    imported only here, so building the parser and the other commands never load it."""
    from ..batch_queue.command import run_queue_command

    return run_queue_command(args)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), set up logging, run the sub-command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # Outputs are written to temporary files and renamed when complete, so stopping anywhere is safe.
        print("interrupted (Ctrl-C): stopped; no file was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
