"""The `queue` command's run: read the batch from the parsed arguments, run it on the servers, report it, and turn
the outcome into the command line's exit status. cli/main.py declares the arguments and imports this module only
when `queue` runs.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..options import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_JOBS_FAILED, EXIT_NO_SERVER, EXIT_OK, default
from .batch_plan import QueueInputError, collect_pairs, plan_jobs, read_pairs_file
from .folder_lock import FolderBusyError
from .queue_state import DONE, FAILED, STATE_FILE_NAME, Job, QueueStateError
from .runner import NoServerAvailableError, QueueInterrupted, QueueSettings, run_queue
from .workflow import load_workflow, locate_workflow_inputs


def run_queue_command(args: argparse.Namespace) -> int:
    """Run the `queue` sub-command; returns the exit status."""
    state_path = args.state or args.queue_output / STATE_FILE_NAME
    try:
        if args.pairs and (args.sources or args.drivings):
            raise QueueInputError("Give either --pairs or --sources with --drivings, not both.")
        if args.pairs:
            pairs = read_pairs_file(args.pairs)
        elif args.sources and args.drivings:
            pairs = collect_pairs(args.sources, args.drivings)
        else:
            raise QueueInputError("Say what to animate: --sources with --drivings, or --pairs.")
        workflow = load_workflow(args.workflow)
        settings = QueueSettings(
            workflow=workflow,
            inputs=locate_workflow_inputs(workflow, args.source_node, args.driving_node),
            servers=args.servers or [default("servers")],
            output_dir=args.queue_output,
            seed=args.queue_seed,
            seed_policy=args.seed_policy,
            max_attempts=args.max_attempts,
            max_queue=args.max_queue,
            poll_interval_s=args.poll_interval,
            request_timeout_s=args.timeout,
        )
        state = run_queue(settings, plan_jobs(pairs), state_path, _cancel_decision(args.on_interrupt))
    except (QueueInputError, QueueStateError, FolderBusyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NoServerAvailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_SERVER
    except QueueInterrupted as stop:
        print(_interrupted_message(stop), file=sys.stderr)
        return EXIT_INTERRUPTED

    failed = state.with_status(FAILED)
    print(f"{len(state.with_status(DONE))} done, {len(failed)} failed. Outputs in {args.queue_output}, "
          f"state in {state_path}.")
    for job in failed:
        print(f"failed: {job.folder} after {job.attempts} attempts: {job.error}", file=sys.stderr)
    return EXIT_JOBS_FAILED if failed else EXIT_OK


def _cancel_decision(policy: str) -> Callable[[list[Job]], bool]:
    """What Ctrl-C does with the prompts still on the servers: the --on-interrupt policy; "ask" asks only in a
    terminal (a script or a scheduled run is never left waiting for an answer: it keeps them)."""
    def decide(in_flight: list[Job]) -> bool:
        if policy != "ask":
            return policy == "cancel"
        if not sys.stdin.isatty():
            return False
        sys.stderr.write(f"\n{len(in_flight)} prompts of this batch are still queued or running on the servers. "
                         "Cancel them there? [y/N] ")
        sys.stderr.flush()
        try:
            return sys.stdin.readline().strip().lower() in ("y", "yes")
        except KeyboardInterrupt:  # a second Ctrl-C: leave them
            return False
    return decide


def _interrupted_message(stop: QueueInterrupted) -> str:
    kept = stop.in_flight - stop.cancelled
    parts = [f"\ninterrupted; progress is saved in {stop.state_path}."]
    if stop.cancelled:
        parts.append(f"Cancelled this batch's {stop.cancelled} prompts on the servers.")
    if kept:
        parts.append(f"{kept} prompts keep running on the servers and are collected by the next run "
                     "(--on-interrupt cancel cancels them instead).")
    parts.append("Run the same command again to resume.")
    return " ".join(parts)
