"""The windowed guided denoiser behind the k-diffusion interface: `denoise(x, sigma) -> x0` for any sampler.

k-diffusion style samplers (ComfyUI's core samplers among them) move latents in sigma space, x = latent + sigma *
noise with sigma = sqrt((1 - a_t) / a_t) on the DDPM schedule, and ask a denoiser for the clean-latent estimate at a
noise level. `WindowedGuidedDenoiser` speaks DDPM instead: `(latents_in, timestep, step_index) -> eps`. This module
translates the way ComfyUI does for its own SD1.5 models (eps prediction, discrete schedule;
`comfy/model_sampling.py` EPS + ModelSamplingDiscrete):

- timestep: the DDPM timestep whose sigma is nearest in log sigma. An integer, as the networks' timestep embedding
  is fed by the windowed denoiser (and as ComfyUI rounds for SD1.5); a sigma between two schedule values (Karras,
  exponential, AYS schedules) is evaluated at the nearer timestep.
- network input: x / sqrt(sigma^2 + 1), the variance-preserving latents the networks were trained on.
- output: denoised = x - sigma * eps.

Steps. The windowed denoiser plans a step's windows (and, with random placement, draws the step's window offset)
from the step index it is given, so every call must be placed in a sampler step. Most samplers call the denoiser
once per step (euler, ddim, dpmpp_2m, dpmpp_2m_sde, lcm, euler_ancestral, ddpm, uni_pc); others call it several
times (heun, dpm_2, dpmpp_2s_ancestral, dpmpp_sde: at a sigma inside the step, or heun's corrector at the next
step's sigma). The step of a call is read off the run's sigma schedule: a sigma in (sigmas[i + 1], sigmas[i]] is
step i, a sigma above sigmas[0] step 0. A step's windows are planned at its first call and reused by every other
call of that step, so a multi-stage step evaluates one consistent denoiser and draws one offset. Heun's corrector,
evaluated at exactly sigmas[i + 1], therefore shares the windows of step i + 1. With one call per step the offsets
are drawn exactly as `sampler.sample` draws them (one per step, in order), so replayed offsets line up step by step.

Equivalences (tests/test_sigma_denoiser.py): Euler over the schedule's sigmas at the original's DDIM timesteps is the
original's DDIM (eta 0) in sigma coordinates: x_sigma = x_vp / sqrt(a_t), and both update x_next = x0 + sigma_next
* eps. It therefore reproduces the golden windowed DDIM run once the start is given in sigma space and the last
step ends at the sigma of alphas_cumprod[0] (the original's last a_prev) instead of 0.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import numpy as np
import torch

from ..model.schedule import linear_betas_float64
from .guidance import Conditioning, GuidedModel, WindowedGuidedDenoiser
from .windows import WindowPlanner

# Samplers hand the schedule's own float32 sigmas back to the denoiser; a cast on the way may move them by an ulp.
SIGMA_MATCH_RTOL = 1e-5


@functools.lru_cache(maxsize=1)
def sd15_sigmas() -> torch.Tensor:
    """sigma_t = sqrt((1 - a_t) / a_t) for t = 0..999 on the SD1.5 schedule, (1000,) float32 on the CPU.

    Computed in float64 from the float64 betas and stored float32, as ComfyUI's ModelSamplingDiscrete does.
    """
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


class StepPlanner(WindowPlanner):
    """A WindowPlanner for samplers that may call the denoiser several times per step: a step's window starts are
    planned at its first call and reused by every later call of that step (the plain planner plans, and with random
    placement draws an offset, on every call). Same arguments as WindowPlanner."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._planned: dict[int, list[int]] = {}

    def starts_for_step(self, step_index: int) -> list[int]:
        if step_index not in self._planned:
            self._planned[step_index] = super().starts_for_step(step_index)
        return self._planned[step_index]


class SigmaSpaceDenoiser:
    """`denoiser(x, sigma) -> denoised` over the full video: x and the result (F, 4, h, w) scaled latents in sigma
    space; sigma a float or a tensor holding one noise level for all frames (ComfyUI passes one per frame).

    schedule: the run's sigmas (descending, as the sampler was given them), which place each call in a step.
    `calls` records (step index, timestep) per call, in call order.
    """

    def __init__(
        self,
        model: GuidedModel,
        conditioning: Conditioning,
        cfg: float,
        planner: StepPlanner,
        schedule: Sequence[float] | torch.Tensor,
        bank_mode: str = "once_per_step",
        on_window: Callable[[int, int, int], None] | None = None,
        should_interrupt: Callable[[], bool] | None = None,
    ) -> None:
        """on_window and should_interrupt: as for WindowedGuidedDenoiser (step indices are sampler steps)."""
        schedule = [float(s) for s in (schedule.tolist() if isinstance(schedule, torch.Tensor) else schedule)]
        if not schedule:
            raise ValueError("the sigma schedule is empty; give the sigmas the sampler runs over")
        if any(later > earlier for earlier, later in zip(schedule, schedule[1:])):
            raise ValueError(f"the sigma schedule must descend (noisiest first), got {schedule}")
        if not isinstance(planner, StepPlanner):
            raise TypeError("SigmaSpaceDenoiser needs a StepPlanner (one window plan per sampler step)")
        self.schedule = schedule
        self.planner = planner
        self.windowed = WindowedGuidedDenoiser(
            model, conditioning, cfg, planner, bank_mode, on_window, should_interrupt
        )
        self.calls: list[tuple[int, int]] = []

    @property
    def offsets_used(self) -> list[int]:
        """Random window offsets drawn (or replayed), one per sampler step that was evaluated."""
        return self.planner.offsets_used

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma_t.numel() not in (1, x.shape[0]) or bool((sigma_t != sigma_t[0]).any()):
            raise ValueError(
                f"every frame must be at the same noise level (one sigma for the video); got sigmas of shape "
                f"{tuple(sigma_t.shape)} for {x.shape[0]} frames"
            )
        sigma_t = sigma_t[0]
        value = float(sigma_t)
        timestep = timestep_for_sigma(value)
        step = step_for_sigma(self.schedule, value)
        self.calls.append((step, timestep))
        eps = self.windowed(x / (sigma_t**2 + 1) ** 0.5, timestep, step)
        return x - eps * sigma_t
