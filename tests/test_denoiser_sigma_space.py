"""The windowed guided denoiser in sigma space, as every sampler calls it (ours and ComfyUI's core samplers): the
sigma <-> timestep translation, the placing of calls in sampler steps, and the golden windowed DDIM run reproduced by
Euler. Equality of the X-Portrait Sampler and the Guider with core samplers is tested through the nodes
(tests/test_nodes.py) and in a real ComfyUI (tests/test_comfyui_guider.py)."""
from __future__ import annotations

import pytest
import torch
from conftest import golden_hints

from xportrait_core.model.schedule import ddpm_schedule
from xportrait_core.sampling.guidance import Conditioning, WindowedGuidedDenoiser
from xportrait_core.sampling.samplers import euler as euler_steps
from xportrait_core.sampling.sigmas import sd15_sigmas, step_for_sigma, timestep_for_sigma
from xportrait_core.sampling.windows import WindowPlanner

GOLDEN_TOL = 1e-4  # manifest: full sampling max abs 1e-4 (fp32 noise ~2e-5)
GOLDEN_FRAMES = 20
GOLDEN_TIMESTEPS = [751, 501, 251, 1]  # the original's 4-step DDIM; also ComfyUI's ddim_uniform for 4 steps
FRAMES = 16


def euler(denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The pack's euler (k-diffusion's Euler without churn, as ComfyUI's `euler` and `ddim`), called with one sigma
    per frame as ComfyUI's samplers call a model. Returns the final x and the denoised estimate of every step."""
    denoised_per_step = []
    x = euler_steps(lambda x, sigma: denoiser(x, sigma * torch.ones(x.shape[0])), x, sigmas,
                    on_step=lambda i, x_after, denoised: denoised_per_step.append(denoised))
    return x, denoised_per_step


class AffineEpsModel:
    """A stand-in for XPortraitModel: eps = 0.5 * x_t + timestep / 1000, recording the timesteps it sees."""

    device = torch.device("cpu")
    compute_dtype = torch.float32

    def __init__(self) -> None:
        self.timesteps: list[int] = []

    def write_reference_bank(self, references, timesteps, context, observer=None):
        return [references.flatten(2).transpose(1, 2)]

    def hint_feature_bytes(self, frames, latent_size):
        return 0

    def encode_control_hints(self, pose_hint, local_hint):
        return pose_hint, local_hint

    def concat_reference_banks(self, banks):
        return [torch.cat(entries, dim=1) for entries in zip(*banks)]

    def eps_conditional(self, x_t, timesteps, context, bank, pose_hint, local_hint, frames_per_video, observer=None):
        self.timesteps.append(int(timesteps[0]))
        return 0.5 * x_t + timesteps.float().reshape(-1, 1, 1, 1) / 1000

    def eps_unconditional(self, x_t, timesteps, context, frames_per_video, observer=None):
        raise AssertionError("cfg 1 never runs the unconditional pass")


def affine_conditioning(frames: int) -> Conditioning:
    context = torch.zeros(1, 77, 8)
    return Conditioning(reference_latents=[torch.zeros(1, 4, 2, 2)], pose_hints=torch.zeros(frames, 3, 16, 16),
                        local_hints=torch.zeros(frames, 3, 16, 16), context=context, uncond_context=context)


def affine_denoiser(frames: int, schedule, offsets=None) -> tuple[WindowedGuidedDenoiser, AffineEpsModel]:
    model = AffineEpsModel()
    planner = WindowPlanner(frames, 16, 4, "random", seed=0, offsets=offsets)
    return WindowedGuidedDenoiser(model, affine_conditioning(frames), 1.0, planner, schedule), model


# --------------------------------------------------------------------------------------- sigma <-> timestep
def test_every_timesteps_sigma_maps_back_to_that_timestep():
    sigmas = sd15_sigmas()
    assert [timestep_for_sigma(float(s)) for s in sigmas] == list(range(1000))


def test_the_sigma_range_is_sd15s():
    """ComfyUI's KarrasScheduler defaults are SD1.5's sigma_max and sigma_min."""
    sigmas = sd15_sigmas()
    assert float(sigmas[-1]) == pytest.approx(14.614642, abs=1e-6)  # defaults rounded to 7 digits
    assert float(sigmas[0]) == pytest.approx(0.0291675, abs=1e-6)
    assert bool((sigmas[1:] > sigmas[:-1]).all())


def test_a_sigma_between_two_timesteps_goes_to_the_nearer_in_log_sigma():
    low, high = float(sd15_sigmas()[500]), float(sd15_sigmas()[501])
    assert timestep_for_sigma(low * (high / low) ** 0.4) == 500
    assert timestep_for_sigma(low * (high / low) ** 0.6) == 501
    assert timestep_for_sigma(100.0) == 999 and timestep_for_sigma(0.0) == 0


def test_a_call_belongs_to_the_schedule_step_whose_interval_holds_its_sigma():
    schedule = [10.0, 5.0, 2.0, 0.0]
    steps = [step_for_sigma(schedule, s) for s in (12.0, 10.0, 7.0, 5.0, 3.0, 2.0, 0.5, 0.0)]
    assert steps == [0, 0, 0, 1, 1, 2, 2, 2]


# ------------------------------------------------------------------------------------- one call of the model
def test_the_network_sees_variance_preserving_latents_at_the_nearest_timestep_and_x0_comes_back():
    sigmas = sd15_sigmas()
    sigma = float(sigmas[600]) * 1.001
    denoiser, model = affine_denoiser(FRAMES, [sigma, 0.0])
    x = torch.randn(FRAMES, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    denoised = denoiser(x, torch.full((FRAMES,), sigma))
    latents_in = x / (sigma**2 + 1) ** 0.5
    expected = x - sigma * (0.5 * latents_in + 600 / 1000)
    torch.testing.assert_close(denoised, expected, rtol=1e-6, atol=1e-6)
    assert model.timesteps == [600] and denoiser.calls == [(0, 600)]


def test_frames_at_different_noise_levels_are_refused():
    denoiser, _ = affine_denoiser(FRAMES, [1.0, 0.0])
    with pytest.raises(ValueError, match="same noise level"):
        denoiser(torch.zeros(FRAMES, 4, 2, 2), torch.linspace(1.0, 2.0, FRAMES))


def test_an_ascending_schedule_is_refused():
    with pytest.raises(ValueError, match="descend"):
        affine_denoiser(FRAMES, [0.0, 1.0])


# --------------------------------------------------------------------------------------- calls and steps
def test_one_call_per_step_draws_the_offsets_of_the_pack_sampler_in_order():
    schedule = [float(sd15_sigmas()[t]) for t in GOLDEN_TIMESTEPS] + [0.0]
    denoiser, _ = affine_denoiser(GOLDEN_FRAMES, schedule)
    euler(denoiser, torch.zeros(GOLDEN_FRAMES, 4, 2, 2), torch.tensor(schedule))
    pack = WindowPlanner(GOLDEN_FRAMES, 16, 4, "random", seed=0)
    for step in range(len(GOLDEN_TIMESTEPS)):
        pack.starts_for_step(step)
    assert denoiser.offsets_used == pack.offsets_used
    assert denoiser.calls == [(step, t) for step, t in enumerate(GOLDEN_TIMESTEPS)]


def test_a_midpoint_call_stays_in_its_step_and_shares_its_windows():
    """dpm_2 / dpmpp_2s_ancestral style: a second call at a sigma inside the step; one offset per step."""
    schedule = [float(sd15_sigmas()[t]) for t in (751, 501, 251)] + [0.0]
    denoiser, _ = affine_denoiser(GOLDEN_FRAMES, schedule)
    x = torch.zeros(GOLDEN_FRAMES, 4, 2, 2)
    for sigma, sigma_next in zip(schedule[:-1], schedule[1:]):
        denoiser(x, torch.tensor(sigma))
        denoiser(x, torch.tensor((sigma * sigma_next) ** 0.5 if sigma_next else sigma / 2))
    assert [step for step, _ in denoiser.calls] == [0, 0, 1, 1, 2, 2]
    assert len(denoiser.offsets_used) == 3


def test_heuns_corrector_at_the_next_sigma_shares_the_next_steps_windows():
    schedule = [float(sd15_sigmas()[t]) for t in (751, 501, 251)] + [0.0]
    denoiser, _ = affine_denoiser(GOLDEN_FRAMES, schedule)
    x = torch.zeros(GOLDEN_FRAMES, 4, 2, 2)
    for index, sigma in enumerate(schedule[:-1]):
        denoiser(x, torch.tensor(sigma))
        if schedule[index + 1] > 0:  # heun's last step is a plain Euler step
            denoiser(x, torch.tensor(schedule[index + 1]))
    assert [step for step, _ in denoiser.calls] == [0, 1, 1, 2, 2]
    assert len(denoiser.offsets_used) == 3


def test_a_step_plan_is_kept_when_a_later_call_returns_to_it():
    planner = WindowPlanner(GOLDEN_FRAMES, 16, 4, "random", seed=5)
    first = planner.starts_for_step(0)
    planner.starts_for_step(1)
    assert planner.starts_for_step(0) == first and len(planner.offsets_used) == 2


# ------------------------------------------------------------------------------------ the real networks
def test_euler_over_the_ddim_timesteps_reproduces_the_golden_windowed_ddim_run(golden, golden_model, golden_context):
    """The original's DDIM is Euler in sigma space: start at x_T * sqrt(sigma_751^2 + 1) (the original's start, noised
    to t = 999, evaluated at t = 751) and end the last step at the sigma of alphas_cumprod[0] (the original's last
    a_prev); the result divided by sqrt(sigma^2 + 1) is the golden final latents. Ending at sigma 0 instead (ComfyUI's
    ddim_uniform) returns the last step's x0 estimate, which the golden run holds implicitly."""
    run = golden("sampling_cfg5_shared_reference")
    pose, local = golden_hints(golden, range(GOLDEN_FRAMES))
    conditioning = Conditioning(reference_latents=[run["image_control"][:1]], pose_hints=pose, local_hints=local,
                                context=golden_context, uncond_context=golden_context)
    sigmas = sd15_sigmas()
    schedule = torch.stack([sigmas[t] for t in GOLDEN_TIMESTEPS] + [sigmas[0]])
    planner = WindowPlanner(GOLDEN_FRAMES, 16, 4, "random", offsets=run["offsets"].tolist())
    denoiser = WindowedGuidedDenoiser(golden_model, conditioning, 5.0, planner, schedule)
    with torch.no_grad():
        x, denoised = euler(denoiser, run["x_T"] * (schedule[0] ** 2 + 1) ** 0.5, schedule)
    final_vp = x / (schedule[-1] ** 2 + 1) ** 0.5
    assert (final_vp - run["final_latents"]).abs().max().item() <= GOLDEN_TOL
    a_1 = ddpm_schedule().alphas_cumprod[1]
    golden_x0 = (run["x_per_step"][2] - (1 - a_1).sqrt() * run["eps_per_step"][3]) / a_1.sqrt()
    assert (denoised[-1] - golden_x0).abs().max().item() <= GOLDEN_TOL
