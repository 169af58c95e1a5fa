"""Finding NaN and infinite values in weight files before they turn every frame black or into noise.

One `torch.isfinite` pass per floating-point tensor (integer and bool tensors cannot hold either), so a checkpoint is
read once more at most; the result names the tensors, so the message can say which part of the file is damaged.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

TENSORS_SHOWN = 3  # how many damaged tensors a message names before "and N more"


def non_finite_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """{name: how many NaN or infinite values} of the floating-point tensors that hold any, in file order."""
    damaged = {}
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            damaged[name] = int(finite.numel() - finite.sum())
    return damaged


def describe_non_finite(damaged: Mapping[str, int], tensors: Mapping[str, torch.Tensor]) -> str:
    """'tensor 'a.weight' holds 3 NaN or infinite values (of 1024), and 2 more tensors do too'."""
    names = list(damaged)
    shown = "; ".join(f"'{name}' holds {damaged[name]} NaN or infinite values (of {tensors[name].numel()})"
                      for name in names[:TENSORS_SHOWN])
    more = len(names) - TENSORS_SHOWN
    return shown + (f"; and {more} more tensors do too" if more > 0 else "")
