"""DDPM noise schedule of the original (LDM "linear" betas), and q_sample.

The original builds every buffer in float64 with numpy and stores it as float32; DDIM then reads the float32
`alphas_cumprod`, and q_sample the float32 square roots of the float64 values. Keeping that order of rounding is
what makes our start latents and DDIM coefficients bit-identical to the original's.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

DDPM_TRAIN_STEPS = 1000  # SD1.5 was trained with 1000 DDPM steps
LINEAR_START = 0.00085  # SD1.5 beta at t = 0
LINEAR_END = 0.012  # SD1.5 beta at t = 999
LAST_TRAIN_TIMESTEP = DDPM_TRAIN_STEPS - 1  # the original noises its start latents to this t


@dataclass(frozen=True)
class DDPMSchedule:
    """Schedule buffers, each (DDPM_TRAIN_STEPS,) float32 on the CPU."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor


def linear_betas_float64() -> np.ndarray:
    """LDM's "linear" betas of SD1.5: linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2, float64."""
    return np.linspace(LINEAR_START**0.5, LINEAR_END**0.5, DDPM_TRAIN_STEPS, dtype=np.float64) ** 2


@functools.lru_cache(maxsize=1)
def ddpm_schedule() -> DDPMSchedule:
    """The SD1.5 schedule from `linear_betas_float64`, all maths in float64, stored float32."""
    betas = linear_betas_float64()
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)

    def stored(values: np.ndarray) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)

    return DDPMSchedule(
        betas=stored(betas),
        alphas_cumprod=stored(alphas_cumprod),
        sqrt_alphas_cumprod=stored(np.sqrt(alphas_cumprod)),
        sqrt_one_minus_alphas_cumprod=stored(np.sqrt(1.0 - alphas_cumprod)),
    )


def q_sample(clean_latents: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
    """Forward diffusion to `timestep`: sqrt(a_t) * z + sqrt(1 - a_t) * noise.

    clean_latents, noise: (F, 4, h, w), same shape. The coefficients are the float32-stored buffers, so the
    result equals the original's `DDPM.q_sample` to the bit.
    """
    if clean_latents.shape != noise.shape:
        raise ValueError(
            f"q_sample: latents {tuple(clean_latents.shape)} and noise {tuple(noise.shape)} must have the same shape"
        )
    if not 0 <= timestep < DDPM_TRAIN_STEPS:
        raise ValueError(f"q_sample: timestep must be in [0, {DDPM_TRAIN_STEPS - 1}], got {timestep}")
    schedule = ddpm_schedule()
    signal = schedule.sqrt_alphas_cumprod[timestep].to(clean_latents.device, clean_latents.dtype)
    sigma = schedule.sqrt_one_minus_alphas_cumprod[timestep].to(clean_latents.device, clean_latents.dtype)
    return signal * clean_latents + sigma * noise
