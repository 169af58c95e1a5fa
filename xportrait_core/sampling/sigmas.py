"""Noise levels in sigma space, the coordinates every sampler here (and ComfyUI's core samplers) works in, and the
schedule each of our schedulers runs.

Sigma space: x = latent + sigma * noise with sigma_t = sqrt((1 - a_t) / a_t) on SD1.5's DDPM schedule, so x_sigma =
x_vp / sqrt(a_t) = x_vp * sqrt(1 + sigma_t^2) where x_vp are the variance-preserving latents the networks were
trained on. The windowed denoiser translates as ComfyUI does for its SD1.5 models (`comfy/model_sampling.py`, EPS +
ModelSamplingDiscrete): a sigma is evaluated at the DDPM timestep nearest in log sigma.

Schedules (`sigma_schedule`), each descending sigmas (S + 1,) whose last entry is where the run ends:
- ddim, the original's: timesteps range(0, 1000, 1000 // S) + 1 visited in descending order. When S does not divide
  1000 that range is longer than S (S = 30 gives 31 steps, 991 ... 1): the original runs those, and so do we. When
  1000 // S divides 999 (S = 3, 9, 27, 37, 101..111, ...) the first timestep would be 1000, past the schedule: the
  original fails with an index error there; we drop that step (S = 3 runs 667, 334, 1). The run ends at the sigma of
  alphas_cumprod[0] (the original's last a_prev), not 0. With strength 1 its start latents are noised to t = 999,
  although the first step evaluates at t = 1000 - 1000 // S + 1 (the original's quirk, `start_timestep`).
- euler: SD1.5's "leading" spacing with steps_offset 1 (diffusers' EulerDiscreteScheduler as SD1.5 configures it):
  i * (1000 // S) + 1 for i < S, descending, ending at sigma 0.
- dpmpp_2m: the same spacing as diffusers' DPMSolverMultistepScheduler computes it for "leading": i * (1000 // (S +
  1)) + 1 for 1 <= i <= S, descending, ending at sigma 0.
- lcm: the latent consistency model's own (diffusers' LCMScheduler): of its 50 "original" timesteps 19, 39, ..., 999,
  the n = int(50 x strength) lowest, S of them evenly spaced from the top (index floor(k n / S)), ending at 0.
A denoise strength below 1 keeps the last int(S x strength) steps (img2img's rule) for ddim, euler and dpmpp_2m; lcm
picks its steps below the strength's timestep instead.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch

from ..model.schedule import DDPM_TRAIN_STEPS, LAST_TRAIN_TIMESTEP, linear_betas_float64
from ..options import OptionError, Scheduler

LCM_ORIGINAL_STEPS = 50  # the LCM distillation's schedule: 50 steps of 20 timesteps
# Samplers hand the schedule's own float32 sigmas back to the denoiser; a cast on the way may move them by an ulp.
SIGMA_MATCH_RTOL = 1e-5


@functools.lru_cache(maxsize=1)
def sd15_sigmas() -> torch.Tensor:
    """sigma_t = sqrt((1 - a_t) / a_t) for t = 0..999 on the SD1.5 schedule, (1000,) float32 on the CPU.

    Computed in float64 from the float64 betas and stored float32, as ComfyUI's ModelSamplingDiscrete does."""
    alphas_cumprod = np.cumprod(1.0 - linear_betas_float64())
    return torch.tensor(np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod), dtype=torch.float32)


@functools.lru_cache(maxsize=1)
def _log_sigmas() -> torch.Tensor:
    return sd15_sigmas().log()


def timestep_for_sigma(sigma: float) -> int:
    """The DDPM timestep whose sigma is nearest to `sigma` in log sigma (0 for sigma <= 0)."""
    if sigma <= 0:
        return 0
    return int(torch.argmin((_log_sigmas() - math.log(sigma)).abs()))


def step_for_sigma(schedule: Sequence[float], sigma: float) -> int:
    """Index of the sampler step a call at `sigma` belongs to: i for sigma in (schedule[i + 1], schedule[i]], 0 above
    schedule[0]. schedule: the run's sigmas, descending, the last one the end of the last step."""
    steps = max(len(schedule) - 1, 1)
    started = [s for s in schedule[1:steps] if s > sigma or math.isclose(s, sigma, rel_tol=SIGMA_MATCH_RTOL)]
    return len(started)


@overload
def vp_scale(sigma: float) -> float: ...
@overload
def vp_scale(sigma: torch.Tensor) -> torch.Tensor: ...
def vp_scale(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """sqrt(1 + sigma^2): x_sigma = x_vp * vp_scale(sigma)."""
    return (1 + sigma**2) ** 0.5


@dataclass(frozen=True)
class SigmaSchedule:
    """One run's noise levels.

    timesteps: the S DDPM timesteps evaluated, in sampling order. sigmas: (S + 1,) float32, their sigmas and, last,
    where the run ends. start_timestep: the DDPM timestep the start latents are noised to (variance-preserving),
    before they are brought to sigmas[0]'s scale.
    """

    timesteps: tuple[int, ...]
    sigmas: torch.Tensor
    start_timestep: int

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def kept_steps(num_steps: int, strength: float) -> int:
    """How many of `num_steps` steps a denoise strength in (0, 1] keeps (img2img's rule); OptionError on strength
    when none is left."""
    kept = min(int(num_steps * strength), num_steps)
    if kept < 1:
        raise OptionError("strength", f"does not fit the steps: denoise strength {strength} with {num_steps} steps "
                          f"leaves no step to run; raise the strength to at least {1.0 / num_steps:.3g} or use "
                          "more {steps}")
    return kept


def original_ddim_timesteps(steps: int) -> list[int]:
    """The original's uniform DDIM timesteps, in sampling (descending) order."""
    stride = DDPM_TRAIN_STEPS // steps
    return [t + 1 for t in reversed(range(0, DDPM_TRAIN_STEPS, stride)) if t + 1 < DDPM_TRAIN_STEPS]


def leading_timesteps(steps: int) -> list[int]:
    """SD1.5's "leading" spacing with steps_offset 1: i * (1000 // steps) + 1, descending."""
    stride = DDPM_TRAIN_STEPS // steps
    return [i * stride + 1 for i in reversed(range(steps))]


def dpm_solver_timesteps(steps: int) -> list[int]:
    """The "leading" spacing of DPM-Solver in diffusers: i * (1000 // (steps + 1)) + 1 for i = steps .. 1."""
    stride = DDPM_TRAIN_STEPS // (steps + 1)
    if stride < 1:
        raise OptionError("steps", f"dpmpp_2m runs at most {DDPM_TRAIN_STEPS - 1} steps (its timesteps would repeat), "
                          f"got {steps}")
    return [i * stride + 1 for i in reversed(range(1, steps + 1))]


def lcm_timesteps(steps: int, strength: float) -> list[int]:
    """`steps` evenly spaced picks (index floor(k * n / steps), from the top) of the n timesteps of the LCM schedule
    below the strength: 19, 39, ..., 20 * n - 1."""
    stride = DDPM_TRAIN_STEPS // LCM_ORIGINAL_STEPS
    available = int(LCM_ORIGINAL_STEPS * strength)
    if available < steps:
        raise OptionError("strength", f"does not fit the steps: lcm picks its {{steps}} from the {available} "
                          f"timesteps of its schedule below denoise strength {strength}; use at most {available} "
                          f"steps or a strength of at least {steps / LCM_ORIGINAL_STEPS:.3g}")
    origin = [i * stride - 1 for i in range(available, 0, -1)]
    return [origin[k * available // steps] for k in range(steps)]


def sigma_schedule(scheduler: Scheduler, steps: int, strength: float = 1.0) -> SigmaSchedule:
    """The noise levels of one run (see the module docstring); OptionError on strength when it leaves no step."""
    sigmas = sd15_sigmas()
    if scheduler == "lcm":
        timesteps = lcm_timesteps(steps, strength)
        return SigmaSchedule(tuple(timesteps), _with_end(timesteps, 0.0), timesteps[0])
    full = {"ddim": original_ddim_timesteps, "euler": leading_timesteps, "dpmpp_2m": dpm_solver_timesteps}[scheduler]
    all_timesteps = full(steps)
    timesteps = all_timesteps[len(all_timesteps) - kept_steps(len(all_timesteps), strength):]
    if scheduler != "ddim":
        return SigmaSchedule(tuple(timesteps), _with_end(timesteps, 0.0), timesteps[0])
    start = LAST_TRAIN_TIMESTEP if len(timesteps) == len(all_timesteps) else timesteps[0]
    return SigmaSchedule(tuple(timesteps), _with_end(timesteps, float(sigmas[0])), start)


def _with_end(timesteps: Sequence[int], end_sigma: float) -> torch.Tensor:
    sigmas = sd15_sigmas()
    return torch.cat([sigmas[list(timesteps)], torch.tensor([end_sigma], dtype=torch.float32)])
