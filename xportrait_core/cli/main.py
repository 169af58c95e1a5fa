"""The command line: `python -m xportrait_core <command> ...`.

Each sub-command lives in an `add_<command>_parser(subparsers)` function that declares its arguments
and sets `func` (called with the parsed arguments, returns the exit status); `build_parser` lists them.
Imports here stay light (no torch) so `--help` answers at once; commands import heavy modules when run.
"""
from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import __version__
from ..options import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_JOBS_FAILED, EXIT_NO_SERVER, EXIT_OK
from .flags import add_flag, exit_statuses
from .local_commands import add_animate_parser, add_convert_parser, add_demo_parser

PROG = "python -m xportrait_core"
CONSOLE_PROG = "xportrait"  # the console command `pip install .` makes (pyproject.toml, [project.scripts])


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, with descriptions and epilogs wrapped paragraph by paragraph to the terminal's width; lines
    that start with spaces (commands, lists) are kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        prose: list[str] = []

        def flush() -> None:
            if prose:
                lines.extend(textwrap.wrap(" ".join(prose), width, initial_indent=indent, subsequent_indent=indent))
                prose.clear()

        for line in text.splitlines():
            if line.strip() and not line.startswith(" "):
                prose.append(line.strip())
                continue
            flush()
            lines.append(indent + line if line.strip() else "")
        flush()
        return "\n".join(lines)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, reporting a bad argument in one line (which argument, what is wrong, where help is) instead
    of the whole usage block; the sub-commands' parsers are of this class too. An option the command does not know
    is reported by that command's parser, so the message points to that command's help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (options: {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self.commands.get(getattr(parsed, "command", None) or "", self)
            command.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description="X-Portrait portrait animation: animate locally, try the pipeline with nothing downloaded, "
                    "convert checkpoints, batch-run on ComfyUI servers.",
        epilog=f"Each command has its own help: {prog} COMMAND --help.\n\n" + exit_statuses(),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Sub-commands, one registration function each.
    add_animate_parser(subparsers)
    add_demo_parser(subparsers)
    add_convert_parser(subparsers)
    add_queue_parser(subparsers)
    parser.commands = dict(subparsers.choices)
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
            "the same command again skips finished jobs, collects prompts still on the servers and retries failed\n"
            "ones; every job is rendered once. A server that stops answering keeps its prompts until it answers."
        ),
        epilog=(
            "examples:\n"
            "  python -m xportrait_core queue workflow_api.json --sources faces/ --drivings clips/\n"
            "  python -m xportrait_core queue workflow_api.json --pairs pairs.csv \\\n"
            "      --server http://gpu1:8188 --server http://gpu2:8188 --seed 42 --seed-policy increment\n"
            "\n"
            f"exit status: {EXIT_OK} all jobs done, {EXIT_JOBS_FAILED} some jobs failed, {EXIT_BAD_INPUT} bad "
            f"arguments or inputs, {EXIT_NO_SERVER} no server reachable, {EXIT_INTERRUPTED} interrupted by Ctrl-C "
            "(resume by running the same command)."
        ),
    )
    add_flag(parser, "workflow")
    add_flag(parser, "verbose")
    inputs = parser.add_argument_group("inputs (--sources with --drivings, or --pairs)")
    add_flag(inputs, "sources", metavar="PATH")
    add_flag(inputs, "drivings", metavar="PATH")
    add_flag(inputs, "pairs", metavar="FILE")
    servers = parser.add_argument_group("servers")
    add_flag(servers, "servers", action="append", metavar="URL")
    add_flag(servers, "max_queue", metavar="N")
    add_flag(servers, "poll_interval", metavar="S")
    add_flag(servers, "timeout", metavar="S")
    workflow = parser.add_argument_group("workflow patching")
    add_flag(workflow, "source_node", metavar="ID")
    add_flag(workflow, "driving_node", metavar="ID")
    add_flag(workflow, "queue_seed", metavar="N")
    add_flag(workflow, "seed_policy")
    run = parser.add_argument_group("results and resuming")
    add_flag(run, "queue_output", metavar="DIR")
    add_flag(run, "state", metavar="FILE")
    add_flag(run, "max_attempts", metavar="N")
    add_flag(run, "on_interrupt")
    parser.set_defaults(func=_run_queue_lazily)


def _run_queue_lazily(args: argparse.Namespace) -> int:
    """Run the `queue` sub-command; returns the exit status. The batch queue (runner, HTTP client, state file) is
    imported only here, so building the parser and the other commands never load it."""
    from ..batch_queue.command import run_queue_command

    return run_queue_command(args)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Parse `argv` (default: sys.argv[1:]), set up logging, run the sub-command; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # Outputs are written to temporary files and renamed when complete, so stopping anywhere is safe.
        print("interrupted (Ctrl-C): stopped; no file was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED


def console() -> int:
    """The `xportrait` console command (pyproject.toml, [project.scripts]): `main`, named as typed."""
    return main(prog=CONSOLE_PROG)
