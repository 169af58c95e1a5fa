"""Stopping a run whose numbers left the finite range (NaN or inf), at the step it happened, instead of writing black
or saturated frames with no error.

Half precision overflows where float32 does not (SD1.5's networks have activations beyond fp16's 65504 in places), a
very high guidance scale can blow up the latents, and damaged weights turn everything into NaN. One `isfinite` pass
over the (F, 4, h, w) latents per step is negligible beside the networks' work.
"""
from __future__ import annotations

import torch

from ..options import OptionError

# {name} mentions an option; each front end spells it its own way (`options.OptionError.render`).
PRECISION_ADVICE = "Try {precision=fp32}, or bf16 where the device has it, or a lower {cfg}"


class NonFiniteError(OptionError):
    """Latents or frames went NaN or infinite; `frames` lists the affected frame indices. A fault of the run, not of
    one option (`option` None); the message advises options."""

    def __init__(self, message: str, frames: list[int]) -> None:
        self.frames = frames
        super().__init__(None, message)


def non_finite_frames(frames_first: torch.Tensor) -> list[int]:
    """Indices along dim 0 of the frames holding any NaN or inf value."""
    finite = torch.isfinite(frames_first.reshape(frames_first.shape[0], -1)).all(dim=1)
    return torch.nonzero(~finite).flatten().tolist()


def frame_ranges(frames: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    runs: list[list[int]] = []
    for frame in frames:
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    return ", ".join(f"{first}-{last}" if last > first else f"{first}" for first, last in runs)


def check_finite_latents(latents: torch.Tensor, step_index: int, total_steps: int) -> None:
    """NonFiniteError naming the step (1-based, as progress shows it) and the frames, when latents (F, 4, h, w)
    hold NaN or inf after that step."""
    bad = non_finite_frames(latents)
    if bad:
        raise NonFiniteError(
            f"sampling went non-finite (NaN or infinite latents) at step {step_index + 1} of {total_steps}, in "
            f"{len(bad)} of {latents.shape[0]} frames ({frame_ranges(bad)}); the result would be black or noise, so it "
            f"was stopped there. {PRECISION_ADVICE}.", bad)
