"""The step rules, each a short function over a denoiser in sigma space, k-diffusion style:

    x = SAMPLERS["euler"](denoise, x, sigmas, on_step=..., generator=...)

denoise(x, sigma) -> the clean-latent estimate (F, 4, h, w) of latents x (F, 4, h, w) at noise level sigma; sigmas
(S + 1,) descending, the last one where the run ends; on_step(i, x_after, denoised) after step i. The windowed
guided denoiser (`guidance.WindowedGuidedDenoiser`) is what they drive, so every rule windows and guides alike.

- euler: x_next = denoised + sigma_next * eps with eps = (x - denoised) / sigma. Over the original's DDIM sigmas this
  *is* the original's DDIM (eta 0): x_sigma = x_vp / sqrt(a_t), and both set x_next = x0 + sigma_next * eps.
- dpmpp_2m: DPM-Solver++(2M) (Lu et al. 2022) in log-sigma time t = -log sigma: the second-order multistep update
  from the last two estimates, first order at the first step and at the final step to sigma 0.
- lcm: the latent consistency model's rule: jump to the estimate, then noise it afresh to the next sigma.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from ..options import Scheduler

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


class SigmaDenoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """denoised (F, 4, h, w) of x (F, 4, h, w) at the noise level sigma (0-dim)."""


def euler(denoise: SigmaDenoiser, x: torch.Tensor, sigmas: torch.Tensor, on_step: StepCallback | None = None,
          generator: torch.Generator | None = None) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        if on_step is not None:
            on_step(i, x, denoised)
    return x


def dpmpp_2m(denoise: SigmaDenoiser, x: torch.Tensor, sigmas: torch.Tensor, on_step: StepCallback | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if sigma_next == 0:
            x = denoised
        else:
            h = torch.log(sigma) - torch.log(sigma_next)  # step length in t = -log sigma
            estimate = denoised
            if previous is not None:
                r = (torch.log(sigmas[i - 1]) - torch.log(sigma)) / h  # last step length over this one
                estimate = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * previous
            x = (sigma_next / sigma) * x - torch.expm1(-h) * estimate
        previous = denoised
        if on_step is not None:
            on_step(i, x, denoised)
    return x


def lcm(denoise: SigmaDenoiser, x: torch.Tensor, sigmas: torch.Tensor, on_step: StepCallback | None = None,
        generator: torch.Generator | None = None) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        x = denoised
        if sigmas[i + 1] > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
            x = denoised + sigmas[i + 1] * noise
        if on_step is not None:
            on_step(i, x, denoised)
    return x


Sampler = Callable[..., torch.Tensor]
SAMPLERS: dict[Scheduler, Sampler] = {"ddim": euler, "euler": euler, "dpmpp_2m": dpmpp_2m, "lcm": lcm}
