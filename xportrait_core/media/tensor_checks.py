"""Checks of what the library's public calls are given, made where it enters: a meta tensor, a wrong layout or
channel count, or a device this torch cannot use is an OptionError naming the input, not an error from deep inside
torch."""
from __future__ import annotations

import torch

from ..options import OptionError


def check_tensor(value: object, option: str, layout: str, channels: int | None = None,
                 channel_dim: int = 1, square: bool = False) -> torch.Tensor:
    """`value` as a tensor that holds data, of `len(layout)` dimensions (e.g. "(F, 3, R, R)", named in messages),
    with `channels` along `channel_dim` and, when `square`, equal last two sizes."""
    if not isinstance(value, torch.Tensor):
        raise OptionError(option, f"must be a torch tensor {layout}; got {type(value).__name__}")
    dims = layout.count(",") + 1
    shape = tuple(value.shape)
    if value.is_meta:
        raise OptionError(option, f"is a meta tensor {shape} (a shape without values); give one that holds data")
    if value.ndim != dims or 0 in shape:
        raise OptionError(option, f"must be shaped {layout} with no empty dimension; got {shape}")
    if channels is not None and shape[channel_dim] != channels:
        raise OptionError(option, f"must have {channels} channels, {layout}; got {shape[channel_dim]} in {shape}")
    if square and shape[-1] != shape[-2]:
        raise OptionError(option, f"must be square frames {layout} (as the X-Portrait control nodes make them); got "
                          f"{shape[-1]} wide and {shape[-2]} high")
    return value


def check_device(device: torch.device | str | None, option: str = "device") -> torch.device:
    """The torch device asked for (None: CUDA when available, else the CPU), or an OptionError when this torch
    cannot use it."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError(option, f"{device!r} is not a device name; use cpu, cuda, cuda:N or mps") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        why = "this torch is built without CUDA" if not torch.backends.cuda.is_built() else "no CUDA GPU is visible"
        raise OptionError(option, f"{str(chosen)!r} cannot be used: {why}; use 'cpu' (or install a CUDA build of "
                          "torch)")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise OptionError(option, f"{str(chosen)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(option, f"{str(chosen)!r} cannot be used: Apple's MPS is not available here; use 'cpu'")
    if chosen.type == "meta":
        raise OptionError(option, "'meta' holds no values; use 'cpu' or a GPU")
    return chosen
