"""Schedulers behind one small interface: the original's DDIM, and diffusers' LCM, Euler and DPM++ 2M.

Each adapter is built for one run (`make_scheduler`) and knows the DDPM timesteps it visits, how to noise clean
latents to its first step, what the network sees (`model_input`) and how to take a step from an eps prediction.
The diffusers schedulers keep their own step counters, so an adapter is used for one run, steps in order.

`ddim` reproduces the original's DDIM exactly (it is not diffusers' DDIMScheduler, whose timesteps and final
alpha differ): timesteps range(0, 1000, 1000 // S) + 1 visited in descending order, a_t = float32
alphas_cumprod[t], a_prev = that of the next lower timestep and alphas_cumprod[0] after t = 1, eta 0. When S does
not divide 1000 that range is longer than S (S = 30 gives 31 steps, 991 ... 1): the original runs those, and so
do we. When 1000 // S divides 999 (S = 3, 9, 27, 37, 101..111, ...) the first timestep would be 1000, past the
schedule: the original fails with an index error there; we drop that step (S = 3 runs 667, 334, 1). With
strength 1 the start latents are noised to t = 999, although the first step evaluates at
t = 1000 - 1000 // S + 1 (the original's quirk).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..model.schedule import DDPM_TRAIN_STEPS, LAST_TRAIN_TIMESTEP, LINEAR_END, LINEAR_START, ddpm_schedule, q_sample

SCHEDULERS: tuple[str, ...] = ("ddim", "euler", "dpmpp_2m", "lcm")
DIFFUSERS_REQUIREMENT = "diffusers>=0.27"  # as requirements.txt: the oldest with set_begin_index and LCM's strength

# SD1.5's own scheduler config (steps_offset 1, "leading" spacing); diffusers' "scaled_linear" is the LDM "linear".
SD15_DIFFUSERS_CONFIG = dict(
    num_train_timesteps=DDPM_TRAIN_STEPS,
    beta_start=LINEAR_START,
    beta_end=LINEAR_END,
    beta_schedule="scaled_linear",
    timestep_spacing="leading",
    steps_offset=1,
)


@dataclass(frozen=True)
class StepResult:
    """latents (F, 4, h, w) after the step, and the step's estimate of the clean latents (F, 4, h, w)."""

    latents: torch.Tensor
    denoised: torch.Tensor


class Scheduler(Protocol):
    """One sampling run's step rule. Step indices count from 0 over `timesteps`."""

    name: str
    timesteps: list[int]  # DDPM timesteps the network is evaluated at, in sampling order

    def noise_latents(self, clean_latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Start latents from clean latents (F, 4, h, w) and unit noise of the same shape."""

    def noise_only(self, noise: torch.Tensor) -> torch.Tensor:
        """Start latents from unit noise alone (F, 4, h, w)."""

    def model_input(self, latents: torch.Tensor, step_index: int) -> torch.Tensor:
        """What the network sees at this step (some schedulers rescale the latents)."""

    def step(
        self, latents: torch.Tensor, eps: torch.Tensor, step_index: int, generator: torch.Generator | None
    ) -> StepResult:
        """Advance latents (F, 4, h, w) given the network's eps (F, 4, h, w)."""


def first_step_for_strength(num_steps: int, strength: float) -> int:
    """How many of `num_steps` steps img2img skips for a denoise strength in (0, 1] (diffusers' rule)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"denoise strength must be in (0, 1], got {strength}")
    kept = min(int(num_steps * strength), num_steps)
    if kept < 1:
        raise ValueError(
            f"denoise strength {strength} with {num_steps} steps leaves no step to run; "
            f"raise the strength to at least {1.0 / num_steps:.3g} or use more steps"
        )
    return num_steps - kept


def original_ddim_timesteps(steps: int) -> list[int]:
    """The original's uniform DDIM timesteps, in sampling (descending) order."""
    if not 1 <= steps <= DDPM_TRAIN_STEPS:
        raise ValueError(f"steps must be in [1, {DDPM_TRAIN_STEPS}], got {steps}")
    stride = DDPM_TRAIN_STEPS // steps
    return [t + 1 for t in reversed(range(0, DDPM_TRAIN_STEPS, stride)) if t + 1 < DDPM_TRAIN_STEPS]


class OriginalDDIM:
    """The original's DDIM (eta 0), float32 coefficients as the original computes them."""

    name = "ddim"

    def __init__(self, steps: int, strength: float = 1.0) -> None:
        all_timesteps = original_ddim_timesteps(steps)
        first = first_step_for_strength(len(all_timesteps), strength)
        self._full_denoise = first == 0
        self.timesteps = all_timesteps[first:]
        alphas_cumprod = ddpm_schedule().alphas_cumprod
        alphas_prev = [alphas_cumprod[t] for t in all_timesteps[1:]] + [alphas_cumprod[0]]
        self._a_t = [alphas_cumprod[t] for t in self.timesteps]
        self._a_prev = alphas_prev[first:]

    def alphas(self, step_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, a_prev) of a step, float32 0-dim tensors."""
        return self._a_t[step_index], self._a_prev[step_index]

    def noise_latents(self, clean_latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        timestep = LAST_TRAIN_TIMESTEP if self._full_denoise else self.timesteps[0]
        return q_sample(clean_latents, noise, timestep)

    def noise_only(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def model_input(self, latents: torch.Tensor, step_index: int) -> torch.Tensor:
        return latents

    def step(
        self, latents: torch.Tensor, eps: torch.Tensor, step_index: int, generator: torch.Generator | None
    ) -> StepResult:
        a_t, a_prev = (a.to(latents.device, latents.dtype) for a in self.alphas(step_index))
        denoised = (latents - torch.sqrt(1.0 - a_t) * eps) / a_t.sqrt()
        return StepResult(latents=a_prev.sqrt() * denoised + torch.sqrt(1.0 - a_prev) * eps, denoised=denoised)


class DiffusersScheduler:
    """Adapter over a diffusers scheduler configured on the SD1.5 schedule; diffusers does the step maths."""

    def __init__(self, name: str, steps: int, strength: float = 1.0, device: torch.device | str = "cpu") -> None:
        if not 1 <= steps <= DDPM_TRAIN_STEPS:
            raise ValueError(f"steps must be in [1, {DDPM_TRAIN_STEPS}], got {steps}")
        # Imported here: only these schedulers need diffusers, so the original's DDIM (and the pack's node list)
        # work while it is missing.
        try:
            from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler
        except ImportError as error:
            raise ImportError(f"the {name} scheduler needs the Python package diffusers, which is not installed: "
                              f'pip install "{DIFFUSERS_REQUIREMENT}" (ddim needs nothing more)') from error

        self.name = name
        if name == "lcm":
            # LCM picks its own timesteps for a strength (from its 50 "original" steps), nothing to skip.
            self._inner = LCMScheduler(**SD15_DIFFUSERS_CONFIG)
            first_step_for_strength(steps, strength)
            self._inner.set_timesteps(steps, device=device, strength=strength)
            first = 0
        else:
            if name == "euler":
                self._inner = EulerDiscreteScheduler(**SD15_DIFFUSERS_CONFIG)
            elif name == "dpmpp_2m":
                self._inner = DPMSolverMultistepScheduler(
                    **SD15_DIFFUSERS_CONFIG, algorithm_type="dpmsolver++", solver_order=2
                )
            else:
                raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")
            self._inner.set_timesteps(steps, device=device)
            first = first_step_for_strength(len(self._inner.timesteps), strength)
            self._inner.set_begin_index(first)
        self._raw_timesteps = self._inner.timesteps[first:]
        # Euler's timesteps are floats; with "leading" spacing they are whole numbers, which the networks need.
        self.timesteps = [int(round(float(t))) for t in self._raw_timesteps]

    def noise_latents(self, clean_latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._inner.add_noise(clean_latents, noise, self._raw_timesteps[:1])

    def noise_only(self, noise: torch.Tensor) -> torch.Tensor:
        return noise * self._inner.init_noise_sigma

    def model_input(self, latents: torch.Tensor, step_index: int) -> torch.Tensor:
        return self._inner.scale_model_input(latents, self._raw_timesteps[step_index])

    def step(
        self, latents: torch.Tensor, eps: torch.Tensor, step_index: int, generator: torch.Generator | None
    ) -> StepResult:
        out = self._inner.step(eps, self._raw_timesteps[step_index], latents, generator=generator)
        denoised = getattr(out, "pred_original_sample", None)
        if denoised is None:
            denoised = getattr(out, "denoised", None)
        if denoised is None:  # DPM++ keeps its x0 internal; the latents are variance-preserving, so recompute it
            denoised = _denoised_vp(latents, eps, self.timesteps[step_index])
        return StepResult(latents=out.prev_sample, denoised=denoised)


def _denoised_vp(latents: torch.Tensor, eps: torch.Tensor, timestep: int) -> torch.Tensor:
    """x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t) for variance-preserving latents (F, 4, h, w)."""
    a_t = ddpm_schedule().alphas_cumprod[timestep].to(latents.device, latents.dtype)
    return (latents - torch.sqrt(1.0 - a_t) * eps) / a_t.sqrt()


def make_scheduler(name: str, steps: int, strength: float = 1.0, device: torch.device | str = "cpu") -> Scheduler:
    """A fresh scheduler for one run. `device`: where the full-video latents live."""
    if name == "ddim":
        return OriginalDDIM(steps, strength)
    if name in SCHEDULERS:
        return DiffusersScheduler(name, steps, strength, device)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")
