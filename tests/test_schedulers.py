"""Schedulers: the original's DDIM exactly, and the diffusers adapters wired to diffusers' own step maths."""
from pathlib import Path

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler
from safetensors.torch import load_file

from xportrait_core.sampling.sampler import denoise_loop
from xportrait_core.model.schedule import ddpm_schedule, q_sample
from xportrait_core.sampling.schedulers import SD15_DIFFUSERS_CONFIG, make_scheduler, original_ddim_timesteps

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def cfg5():
    return load_file(GOLDEN / "sampling_cfg5.safetensors")


class RecordedEps:
    """A denoiser that returns the original's recorded, window-averaged eps of each step."""

    def __init__(self, eps_per_step):
        self.eps_per_step = eps_per_step
        self.seen_timesteps = []

    def __call__(self, latents_in, timestep, step_index):
        self.seen_timesteps.append(timestep)
        return self.eps_per_step[step_index]


def test_ddim_timesteps_equal_the_original(cfg5):
    assert make_scheduler("ddim", 4).timesteps == cfg5["timesteps"].tolist() == [751, 501, 251, 1]


def test_ddim_alphas_equal_the_original_exactly(cfg5):
    ddim = make_scheduler("ddim", 4)
    a_t, a_prev = zip(*(ddim.alphas(i) for i in range(4)))
    assert torch.equal(torch.stack(a_t).double(), cfg5["a_t"])
    assert torch.equal(torch.stack(a_prev).double(), cfg5["a_prev"])


def test_ddim_with_30_steps_runs_the_original_31_steps_from_t991():
    # 1000 // 30 = 33 and range(0, 1000, 33) has 31 entries; the original does not trim it.
    timesteps = original_ddim_timesteps(30)
    assert len(timesteps) == 31 and timesteps[0] == 991 and timesteps[-1] == 1


@pytest.mark.parametrize("steps, first, count", [(3, 667, 3), (9, 889, 9), (27, 963, 27), (105, 991, 111), (1000, 999, 999)])
def test_ddim_drops_the_timestep_1000_the_original_would_index_past_the_schedule(steps, first, count):
    # When 1000 // S divides 999, range(0, 1000, 1000 // S) + 1 ends at 1000 and the original crashes.
    timesteps = original_ddim_timesteps(steps)
    assert timesteps[0] == first and len(timesteps) == count and timesteps[-1] == 1


def test_ddim_replay_of_recorded_eps_reproduces_the_original_trajectory(cfg5):
    denoised = []
    final = denoise_loop(
        RecordedEps(cfg5["eps_per_step"]),
        make_scheduler("ddim", 4),
        cfg5["x_T"],
        on_step=lambda i, total, x0: denoised.append(x0),
    )
    assert (torch.stack(denoised) - cfg5["pred_x0_per_step"]).abs().max() < 1e-5
    assert (final - cfg5["x_per_step"][-1]).abs().max() < 1e-5
    assert (final - cfg5["final_latents"]).abs().max() < 1e-5


def test_ddim_each_recorded_step_matches_within_float32_rounding(cfg5):
    ddim = make_scheduler("ddim", 4)
    x = cfg5["x_T"]
    for i in range(4):
        out = ddim.step(x, cfg5["eps_per_step"][i], i, None)
        assert (out.latents - cfg5["x_per_step"][i]).abs().max() < 1e-5
        x = cfg5["x_per_step"][i]


def test_ddim_full_strength_start_noises_to_t999_like_the_original(cfg5):
    ddim = make_scheduler("ddim", 4)
    assert torch.equal(ddim.noise_latents(cfg5["z_pre"], cfg5["q_sample_noise"]), cfg5["x_T"])


def test_ddim_half_strength_skips_half_the_steps_and_noises_to_the_first_kept_one(cfg5):
    ddim = make_scheduler("ddim", 4, strength=0.5)
    assert ddim.timesteps == [251, 1]
    expected = q_sample(cfg5["z_pre"], cfg5["q_sample_noise"], 251)
    assert torch.equal(ddim.noise_latents(cfg5["z_pre"], cfg5["q_sample_noise"]), expected)


def test_ddim_pure_noise_start_is_the_noise_itself():
    noise = torch.randn(2, 4, 3, 3)
    assert torch.equal(make_scheduler("ddim", 4).noise_only(noise), noise)


@pytest.mark.parametrize("steps", [0, -1, 1001])
def test_steps_outside_1_to_1000_are_rejected(steps):
    for name in ("ddim", "euler"):
        with pytest.raises(ValueError, match="steps must be in"):
            make_scheduler(name, steps)


@pytest.mark.parametrize("strength", [0.0, 1.5, 0.1])
def test_a_strength_leaving_no_step_is_rejected(strength):
    with pytest.raises(ValueError, match="strength"):
        make_scheduler("ddim", 4, strength=strength)


def test_unknown_scheduler_is_rejected():
    with pytest.raises(ValueError, match="unknown scheduler 'heun'"):
        make_scheduler("heun", 4)


def test_diffusers_schedulers_use_the_sd15_schedule():
    for name in ("euler", "dpmpp_2m", "lcm"):
        inner = make_scheduler(name, 4)._inner
        # diffusers' scaled_linear is float32 maths on the same betas: equal to ~1e-6.
        assert (inner.alphas_cumprod - ddpm_schedule().alphas_cumprod).abs().max() < 1e-6


def test_euler_scales_the_model_input_and_noises_with_sigma():
    euler = make_scheduler("euler", 4)
    reference = EulerDiscreteScheduler(**SD15_DIFFUSERS_CONFIG)
    reference.set_timesteps(4)
    sigma = float(reference.sigmas[0])
    x, z, noise = torch.randn(3, 2, 4, 3, 3)
    assert euler.timesteps == [751, 501, 251, 1]
    assert torch.allclose(euler.model_input(x, 0), x / (sigma**2 + 1) ** 0.5)
    assert torch.allclose(euler.noise_latents(z, noise), z + sigma * noise)
    assert torch.allclose(euler.noise_only(noise), noise * (sigma**2 + 1) ** 0.5)


def test_euler_half_strength_starts_at_the_third_of_four_steps():
    euler = make_scheduler("euler", 4, strength=0.5)
    reference = EulerDiscreteScheduler(**SD15_DIFFUSERS_CONFIG)
    reference.set_timesteps(4)
    z, noise = torch.randn(2, 1, 4, 3, 3)
    assert euler.timesteps == [251, 1]
    assert torch.allclose(euler.noise_latents(z, noise), z + float(reference.sigmas[2]) * noise)
    assert torch.allclose(euler.model_input(z, 0), z / (float(reference.sigmas[2]) ** 2 + 1) ** 0.5)


@pytest.mark.parametrize(
    "name, diffusers_scheduler",
    [
        ("euler", lambda: EulerDiscreteScheduler(**SD15_DIFFUSERS_CONFIG)),
        ("dpmpp_2m", lambda: DPMSolverMultistepScheduler(
            **SD15_DIFFUSERS_CONFIG, algorithm_type="dpmsolver++", solver_order=2)),
        ("lcm", lambda: LCMScheduler(**SD15_DIFFUSERS_CONFIG)),
    ],
)
def test_adapter_steps_equal_the_diffusers_scheduler_driven_by_hand(name, diffusers_scheduler):
    torch.manual_seed(0)
    x_start = torch.randn(2, 4, 3, 3)
    eps_of = lambda x, t: 0.3 * x + 0.001 * t  # a stand-in network

    adapter = make_scheduler(name, 4)
    ours = denoise_loop(lambda x, t, i: eps_of(x, t), adapter, x_start, torch.Generator().manual_seed(1))

    scheduler = diffusers_scheduler()
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(1)
    x = x_start
    for t in scheduler.timesteps:
        eps = eps_of(scheduler.scale_model_input(x, t), int(t))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    assert torch.equal(ours, x)


def test_dpmpp_2m_reports_the_variance_preserving_x0_estimate():
    dpm = make_scheduler("dpmpp_2m", 4)
    x, eps = torch.randn(2, 2, 4, 3, 3)
    a_t = ddpm_schedule().alphas_cumprod[dpm.timesteps[0]]
    out = dpm.step(x, eps, 0, None)
    assert torch.allclose(out.denoised, (x - (1 - a_t).sqrt() * eps) / a_t.sqrt())
