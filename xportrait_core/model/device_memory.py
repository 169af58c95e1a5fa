"""What the compute device has room for, read from torch (no host API): free bytes and the peak of a piece of work.

On the CPU there is no separate memory to budget (the process's RAM is shared with everything else), so these
return None there and callers keep their memory-lean defaults.
"""
from __future__ import annotations

import torch


def free_bytes(device: torch.device) -> int | None:
    """Bytes the device can still allocate: free device memory plus what torch's caching allocator holds
    unused. None off CUDA."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached_unused)


class PeakMeter:
    """Peak bytes allocated on a CUDA device above what was allocated when the meter started (None elsewhere)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._start = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self._start = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)

    def peak_above_start(self) -> int | None:
        if self._start is None:
            return None
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device) - self._start)
