"""Schedules and step rules in sigma space: the original's DDIM exactly (as Euler over its sigmas), and euler,
dpmpp_2m and lcm against diffusers' schedulers, which the pack used before and which serve here as an independent
implementation of the same maths (diffusers is a test requirement only)."""
from pathlib import Path

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler
from safetensors.torch import load_file

from xportrait_core.model.schedule import ddpm_schedule, q_sample
from xportrait_core.options import OptionError
from xportrait_core.sampling.sampler import start_latents
from xportrait_core.sampling.samplers import SAMPLERS, dpmpp_2m, euler
from xportrait_core.sampling.sigmas import (
    dpm_solver_timesteps,
    lcm_timesteps,
    leading_timesteps,
    original_ddim_timesteps,
    sd15_sigmas,
    sigma_schedule,
    timestep_for_sigma,
    vp_scale,
)

GOLDEN = Path(__file__).parent / "golden"
SHAPE = (2, 4, 3, 3)
# SD1.5 as diffusers configures it (steps_offset 1, "leading" spacing; diffusers' "scaled_linear" is LDM's "linear").
SD15_DIFFUSERS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      timestep_spacing="leading", steps_offset=1)
DIFFUSERS = {
    "euler": lambda: EulerDiscreteScheduler(**SD15_DIFFUSERS),
    "dpmpp_2m": lambda: DPMSolverMultistepScheduler(**SD15_DIFFUSERS, algorithm_type="dpmsolver++", solver_order=2),
    "lcm": lambda: LCMScheduler(**SD15_DIFFUSERS),
}


@pytest.fixture(scope="module")
def cfg5():
    return load_file(GOLDEN / "sampling_cfg5.safetensors")


def eps_of(x_vp: torch.Tensor, timestep: int) -> torch.Tensor:
    """A stand-in network: eps of variance-preserving latents at a DDPM timestep."""
    return 0.3 * x_vp + 0.001 * timestep


def sigma_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """eps_of as a sigma-space denoiser, translated as the windowed denoiser translates."""
    return x - sigma * eps_of(x / vp_scale(sigma), timestep_for_sigma(float(sigma)))


# ----------------------------------------------------------------------------------------- the original's DDIM
def test_ddim_timesteps_equal_the_original(cfg5):
    assert list(sigma_schedule("ddim", 4).timesteps) == cfg5["timesteps"].tolist() == [751, 501, 251, 1]


def test_ddim_ends_at_the_sigma_of_the_originals_last_alpha():
    assert float(sigma_schedule("ddim", 4).sigmas[-1]) == float(sd15_sigmas()[0]) > 0


def test_ddim_with_30_steps_runs_the_original_31_steps_from_t991():
    # 1000 // 30 = 33 and range(0, 1000, 33) has 31 entries; the original does not trim it.
    timesteps = original_ddim_timesteps(30)
    assert len(timesteps) == 31 and timesteps[0] == 991 and timesteps[-1] == 1


@pytest.mark.parametrize("steps, first, count",
                         [(3, 667, 3), (9, 889, 9), (27, 963, 27), (105, 991, 111), (1000, 999, 999)])
def test_ddim_drops_the_timestep_1000_the_original_would_index_past_the_schedule(steps, first, count):
    # When 1000 // S divides 999, range(0, 1000, 1000 // S) + 1 ends at 1000 and the original crashes.
    timesteps = original_ddim_timesteps(steps)
    assert timesteps[0] == first and len(timesteps) == count and timesteps[-1] == 1


def test_euler_over_the_ddim_sigmas_replays_the_originals_recorded_ddim_trajectory(cfg5):
    """The original's DDIM is Euler in sigma space: fed the original's recorded, window-averaged eps of each step,
    Euler retraces the original's latents (x_sigma / sqrt(1 + sigma^2)) and x0 estimates step by step."""
    schedule = sigma_schedule("ddim", 4)
    sigmas = schedule.sigmas
    calls = iter(range(4))

    def recorded(x, sigma):
        return x - sigma * cfg5["eps_per_step"][next(calls)]

    steps = []
    final = euler(recorded, cfg5["x_T"] * vp_scale(sigmas[0]), sigmas,
                  on_step=lambda i, x, denoised: steps.append((x / vp_scale(sigmas[i + 1]), denoised)))
    for i, (x_vp, denoised) in enumerate(steps):
        assert (x_vp - cfg5["x_per_step"][i]).abs().max() < 1e-5
        assert (denoised - cfg5["pred_x0_per_step"][i]).abs().max() < 1e-5
    assert (final / vp_scale(sigmas[-1]) - cfg5["final_latents"]).abs().max() < 1e-5


def test_ddim_full_strength_start_noises_to_t999_like_the_original(cfg5):
    schedule = sigma_schedule("ddim", 4)
    start = start_latents(schedule, "reference", tuple(cfg5["x_T"].shape), cfg5["z_pre"], cfg5["q_sample_noise"])
    torch.testing.assert_close(start / vp_scale(schedule.sigmas[0]), cfg5["x_T"], rtol=1e-6, atol=1e-6)


def test_ddim_half_strength_skips_half_the_steps_and_noises_to_the_first_kept_one(cfg5):
    schedule = sigma_schedule("ddim", 4, strength=0.5)
    assert list(schedule.timesteps) == [251, 1]
    start = start_latents(schedule, "init_video", tuple(cfg5["z_pre"].shape), cfg5["z_pre"], cfg5["q_sample_noise"])
    torch.testing.assert_close(start, cfg5["z_pre"] + schedule.sigmas[0] * cfg5["q_sample_noise"], rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(start / vp_scale(schedule.sigmas[0]),
                               q_sample(cfg5["z_pre"], cfg5["q_sample_noise"], 251), rtol=1e-6, atol=1e-6)


def test_a_pure_noise_start_is_unit_noise_at_the_first_sigmas_scale():
    noise = torch.randn(SHAPE)
    for name in ("ddim", "euler"):
        schedule = sigma_schedule(name, 4)
        assert torch.equal(start_latents(schedule, "noise", SHAPE, None, noise), noise * vp_scale(schedule.sigmas[0]))


@pytest.mark.parametrize("name, strength", [("ddim", 0.01), ("ddim", 0.1), ("euler", 0.1), ("dpmpp_2m", 0.1),
                                            ("lcm", 0.01), ("lcm", 0.06)])  # lcm: int(50 x 0.06) = 3 timesteps < 4
def test_a_strength_leaving_no_step_is_an_error_of_the_strength(name, strength):
    with pytest.raises(OptionError, match="does not fit the steps") as raised:
        sigma_schedule(name, 4, strength=strength)
    assert raised.value.option == "strength"


def test_every_schedule_descends_and_ends_where_its_sampler_stops():
    for name in SAMPLERS:
        sigmas = sigma_schedule(name, 8).sigmas
        assert bool((sigmas[1:] <= sigmas[:-1]).all()) and len(sigmas) == 9
        assert float(sigmas[-1]) == (float(sd15_sigmas()[0]) if name == "ddim" else 0.0)


# ---------------------------------------------------------------------------------- against diffusers' schedulers
# diffusers' schedulers call np.array() on torch tensors, whose __array__ has no `copy` keyword yet: numpy 2 warns
# inside diffusers, about code that is not ours. Ignored for the tests that drive them, and only that warning (a
# mark, so that `-W error::DeprecationWarning` still turns every other deprecation into an error).
DIFFUSERS_UNDER_NUMPY_2 = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@DIFFUSERS_UNDER_NUMPY_2
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7, 8, 20, 30, 50, 999])
def test_euler_and_dpmpp_2m_visit_the_timesteps_diffusers_visits_for_sd15(steps):
    for name, ours in (("euler", leading_timesteps), ("dpmpp_2m", dpm_solver_timesteps)):
        reference = DIFFUSERS[name]()
        reference.set_timesteps(steps)
        assert [int(round(float(t))) for t in reference.timesteps] == ours(steps), name


@DIFFUSERS_UNDER_NUMPY_2
@pytest.mark.parametrize("steps, strength", [(1, 1.0), (2, 1.0), (4, 1.0), (6, 1.0), (8, 1.0), (4, 0.5), (3, 0.3)])
def test_lcm_visits_the_timesteps_diffusers_lcm_visits(steps, strength):
    reference = DIFFUSERS["lcm"]()
    reference.set_timesteps(steps, strength=strength)
    assert reference.timesteps.tolist() == lcm_timesteps(steps, strength)


def test_dpmpp_2m_with_a_thousand_steps_is_refused_as_its_timesteps_would_repeat():
    with pytest.raises(OptionError, match="dpmpp_2m runs at most 999 steps"):
        sigma_schedule("dpmpp_2m", 1000)


def _diffusers_run(name: str, steps: int, noise: torch.Tensor) -> torch.Tensor:
    """diffusers' scheduler driven by hand from pure noise, with eps_of as the network: variance-preserving (or, for
    Euler, sigma-space) latents after the last step."""
    scheduler = DIFFUSERS[name]()
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(0)
    torch.randn(SHAPE, generator=generator)  # the start noise, drawn from the same generator as ours
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = eps_of(scheduler.scale_model_input(x, t), int(round(float(t))))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


@DIFFUSERS_UNDER_NUMPY_2
@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "lcm"])
@pytest.mark.parametrize("steps", [1, 4, 9])
def test_each_sampler_function_equals_the_diffusers_scheduler_driven_by_hand(name, steps):
    """Same start noise, same network, same noise draws (lcm): the sigma-space functions land where diffusers'
    schedulers land (their final sigma is 0, where sigma-space and variance-preserving latents coincide), within
    float32 rounding; lcm also within diffusers' boundary-condition scalings (c_skip below 1e-5 at t >= 19)."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(SHAPE, generator=generator)
    schedule = sigma_schedule(name, steps)
    ours = SAMPLERS[name](sigma_denoiser, start_latents(schedule, "noise", SHAPE, None, noise), schedule.sigmas,
                          generator=generator)
    torch.testing.assert_close(ours, _diffusers_run(name, steps, noise), rtol=1e-4, atol=1e-4)


def test_dpmpp_2m_reports_each_steps_clean_latent_estimate():
    schedule = sigma_schedule("dpmpp_2m", 4)
    x = torch.randn(SHAPE) * vp_scale(schedule.sigmas[0])
    reported = []
    dpmpp_2m(sigma_denoiser, x, schedule.sigmas, on_step=lambda i, x_after, denoised: reported.append(denoised))
    assert len(reported) == 4
    torch.testing.assert_close(reported[0], sigma_denoiser(x, schedule.sigmas[0]))


def test_the_schedule_alphas_are_sd15s():
    # diffusers' scaled_linear is float32 maths on the same betas: equal to ~1e-6.
    for name in ("euler", "dpmpp_2m", "lcm"):
        assert (DIFFUSERS[name]().alphas_cumprod - ddpm_schedule().alphas_cumprod).abs().max() < 1e-6
