"""How many CPU threads a local command gives torch (`--threads`), and setting them for the command's duration.

The default is what the machine has free: the cores this process may run on (its CPU affinity, which containers and
`taskset` narrow) less the one-minute load average (whole cores other work keeps busy), at least one. On a busy
machine, threads beyond the free cores do not finish sooner: they wait for each other at every parallel kernel and
spend more CPU time (the demo on the 2-core development machine: 20-23 CPU-seconds with 2 threads when quiet,
40-88 with 2 threads under heavy load, 15 with the 1 thread this default chose there). On a quiet machine the
default is every core, as torch's own.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """`cores` (default: usable_cores) less the whole cores the one-minute `load` average keeps busy, at least 1."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average (Windows): assume the machine is free
            load = 0.0
    return max(1, min(cores, cores - int(load)))


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """torch's intra-op threads set to `threads` (None: `free_cores()`) inside the block and restored after, so a
    command run in-process (tests, scripts) leaves the caller's setting as it was; yields the number used.

    Only the intra-op pool is set: the pipeline runs no inter-op work (no torch.jit.fork), and torch allows setting
    that pool once per process, before its first use."""
    import torch

    chosen = free_cores() if threads is None else threads
    before = torch.get_num_threads()
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(before)
