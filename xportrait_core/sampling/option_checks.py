"""Checking sampling options before any work is spent, one option at a time, so that every error names the option the
user set (the command line's flag, the node's input) rather than the place deep in sampling where it would break.

    steps_run = check_sampler_options(options, frames=40)   # raises SamplerOptionError(option="cfg", ...) etc.

`SamplerOptionError.option` is the `SamplerOptions` field; `detail` says what is wrong and what is accepted, without
the option's name, for the caller to prefix with its own spelling (`--cfg`, input 'cfg').
"""
from __future__ import annotations

import math
import numbers

from ..model.schedule import DDPM_TRAIN_STEPS
from ..networks.unet import WINDOW_FRAMES
from .sampler import START_MODES, SamplerOptions
from .schedulers import SCHEDULERS, make_scheduler
from .windows import PLACEMENTS, check_window_geometry

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range (from 0)


class SamplerOptionError(ValueError):
    """A sampling option that cannot work: `option` names the SamplerOptions field, `detail` the problem."""

    def __init__(self, option: str, detail: str) -> None:
        self.option = option
        self.detail = detail
        super().__init__(f"{option} {detail}")


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_sampler_options(options: SamplerOptions, frames: int | None = None) -> int:
    """Raise SamplerOptionError for the first option that cannot work; return the number of steps the scheduler
    will run (what a progress display counts: the original's DDIM runs 31 steps for 30, a denoise below 1 fewer).

    frames: the driving video's frame count, when known, for the window checks that depend on it."""
    if not _is_whole(options.steps) or not 1 <= options.steps <= DDPM_TRAIN_STEPS:
        raise SamplerOptionError("steps", f"must be a whole number from 1 to {DDPM_TRAIN_STEPS}, got {options.steps!r}")
    if not _is_finite_number(options.cfg) or options.cfg < 0:
        raise SamplerOptionError("cfg", f"must be a finite number >= 0 (1 skips the unconditional pass; the original "
                                        f"uses 5), got {options.cfg!r}")
    if not _is_whole(options.seed) or not 0 <= options.seed <= MAX_SEED:
        raise SamplerOptionError("seed", f"must be a whole number from 0 to {MAX_SEED}, got {options.seed!r}")
    if options.scheduler not in SCHEDULERS:
        raise SamplerOptionError("scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {options.scheduler!r}")
    if options.start not in START_MODES:
        raise SamplerOptionError("start", f"must be one of {', '.join(START_MODES)}, got {options.start!r}")
    if not _is_finite_number(options.strength) or not 0 < options.strength <= 1:
        raise SamplerOptionError("strength", f"must be a number in (0, 1], got {options.strength!r}")
    if options.start == "noise" and options.strength != 1:
        raise SamplerOptionError("strength", f"must be 1 when starting from pure noise (there is nothing to keep), "
                                             f"got {options.strength!r}")
    _check_windows(options, frames)
    try:
        return len(make_scheduler(options.scheduler, options.steps, options.strength).timesteps)
    except ImportError as error:  # euler, dpmpp_2m and lcm need diffusers
        raise SamplerOptionError("scheduler", f"{options.scheduler!r} cannot be used: {error}") from error
    except ValueError as error:  # a strength that leaves no step of this many steps
        raise SamplerOptionError("strength", f"does not fit the steps: {error}") from error


def _check_windows(options: SamplerOptions, frames: int | None) -> None:
    if options.placement not in PLACEMENTS:
        raise SamplerOptionError("placement", f"must be one of {', '.join(PLACEMENTS)}, got {options.placement!r}")
    if not _is_whole(options.window) or options.window < WINDOW_FRAMES or options.window % WINDOW_FRAMES:
        raise SamplerOptionError("window", f"must be a multiple of {WINDOW_FRAMES} frames (the motion modules see "
                                           f"{WINDOW_FRAMES} frames at a time), got {options.window!r}")
    if not _is_whole(options.overlap) or not 0 <= options.overlap < options.window:
        raise SamplerOptionError("overlap", f"must be a whole number from 0 to {options.window - 1} (below the "
                                            f"window of {options.window}), got {options.overlap!r}")
    if frames is not None:
        try:
            check_window_geometry(frames, options.window, options.overlap, options.placement)
        except ValueError as error:  # with the placement and window valid, only the overlap can be at fault
            raise SamplerOptionError("overlap", f"does not fit the video: {error}") from error
