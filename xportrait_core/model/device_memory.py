"""What the compute device has room for, read from torch (no host API): its free bytes.

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
