"""The sampling loop with a small fake X-Portrait model: guidance, the once-per-step bank, counters, hooks,
memory placement and input errors."""
from collections import Counter

import pytest
import torch

from xportrait_core.model.schedule import ddpm_schedule, q_sample
from xportrait_core.options import OptionError
from xportrait_core.sampling.guidance import Conditioning, SamplingInterrupted, WindowedGuidedDenoiser
from xportrait_core.sampling.sampler import SamplerHooks, SamplerOptions, sample, start_latents
from xportrait_core.sampling.sigmas import sigma_schedule, vp_scale
from xportrait_core.sampling.windows import WindowPlanner

LATENT = 4  # latent side of the fake video (hints are 32 px)
BANK_ENTRIES = 16  # the appearance net writes one entry per spatial transformer


class FakeXPortrait(torch.nn.Module):
    """Implements XPortraitModel's sampling interface with cheap, frame-wise-traceable maths.

    eps depends on the frame, the window it is evaluated in (like the motion modules: the mean over each
    frames_per_video rows), the bank, both hints and t, so any mistake in windowing, bank indexing or guidance changes
    the numbers. Records every call, and counts every row it evaluated in `rows` (whatever the observer).
    """

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones((), dtype=dtype))
        self.rows = Counter()
        self.calls = []  # (kind, batch, dtype)
        self.videos = []  # frames_per_video of every UNet pass
        self.hint_rows_encoded = 0

    @property
    def device(self):
        return self.weight.device

    @property
    def compute_dtype(self):
        return self.weight.dtype

    def _count(self, net, rows, observer):
        self.rows[net] += rows
        if observer is not None:
            observer(net, rows)

    def window_activation_bytes(self, latent_size, conditional_rows, unconditional_rows, references=1):
        return (conditional_rows + unconditional_rows) * latent_size[0] * latent_size[1] * 1000

    def hint_feature_bytes(self, frames, latent_size):
        return frames * 1000

    def encode_control_hints(self, pose_hint, local_hint):
        self.hint_rows_encoded += pose_hint.shape[0]
        return pose_hint, local_hint  # the fake's "features" are the images themselves

    def write_reference_bank(self, reference_latents, timesteps, context, observer=None):
        assert timesteps.shape == (reference_latents.shape[0],) and timesteps.dtype == torch.float32
        self._count("appearance", reference_latents.shape[0], observer)
        self.calls.append(("appearance", reference_latents.shape[0], reference_latents.dtype))
        per_row = reference_latents.mean(dim=(2, 3)) + 1e-3 * timesteps[:, None] + context.mean()
        return [(i + 1) * self.weight * per_row[:, None, :] for i in range(BANK_ENTRIES)]

    @staticmethod
    def concat_reference_banks(banks):
        return [torch.cat(entries, dim=1) for entries in zip(*banks)]

    def _temporal(self, x_t, frames_per_video):
        self.videos.append(frames_per_video)
        groups = x_t.reshape(-1, frames_per_video, *x_t.shape[1:])
        return groups.mean(dim=1, keepdim=True).expand_as(groups).reshape(x_t.shape)

    def eps_conditional(self, x_t, timesteps, context, bank, pose_hint, local_hint, frames_per_video, observer=None):
        n = x_t.shape[0]
        assert n % frames_per_video == 0 and timesteps.shape == (n,)
        assert pose_hint.shape == local_hint.shape == (n, 3, 8 * x_t.shape[2], 8 * x_t.shape[3])
        assert all(entry.shape[0] in (1, n) for entry in bank) and len(bank) == BANK_ENTRIES
        for net in ("pose_control", "local_control", "unet"):
            self._count(net, n, observer)
        self.calls.append(("cond", n, x_t.dtype))
        bank_term = bank[3].mean(dim=1) + 0.5 * bank[3][:, -1]  # (n or 1, 4): sees every reference
        return (
            0.1 * x_t + 0.05 * self._temporal(x_t, frames_per_video) + 0.01 * bank_term[:, :, None, None]
            + 0.02 * pose_hint.mean(dim=(1, 2, 3))[:, None, None, None]
            + 0.03 * local_hint.mean(dim=(1, 2, 3))[:, None, None, None]
            + 1e-4 * timesteps[:, None, None, None] + context.mean()
        ) * self.weight

    def eps_unconditional(self, x_t, timesteps, context, frames_per_video, observer=None):
        n = x_t.shape[0]
        assert n % frames_per_video == 0 and timesteps.shape == (n,)
        self._count("unet", n, observer)
        self.calls.append(("uncond", n, x_t.dtype))
        return (0.2 * x_t - 0.04 * self._temporal(x_t, frames_per_video) + 2e-4 * timesteps[:, None, None, None]
                + context.mean()) * self.weight

    def eps_both_passes(self, x_t, timesteps, context, uncond_context, bank, pose_hint, local_hint,
                        frames_per_video, observer=None):
        calls_before = len(self.calls)
        pair = (self.eps_conditional(x_t, timesteps, context, bank, pose_hint, local_hint, frames_per_video,
                                     observer),
                self.eps_unconditional(x_t, timesteps, uncond_context, frames_per_video, observer))
        del self.calls[calls_before:]
        self.calls.append(("both", x_t.shape[0], x_t.dtype))
        return pair


def make_conditioning(frames=20, references=1, per_frame=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = frames if per_frame else 1
    return Conditioning(
        reference_latents=[torch.randn(batch, 4, LATENT, LATENT, generator=generator) for _ in range(references)],
        pose_hints=torch.rand(frames, 3, 8 * LATENT, 8 * LATENT, generator=generator) * 2 - 1,
        local_hints=torch.rand(frames, 3, 8 * LATENT, 8 * LATENT, generator=generator) * 2 - 1,
        context=torch.randn(1, 77, 8, generator=generator) * 0.01,
        uncond_context=torch.randn(1, 77, 8, generator=generator) * 0.01,
    )


def run(frames=20, steps=4, model=None, hooks=None, cond=None, **options):
    model = model or FakeXPortrait()
    cond = cond or make_conditioning(frames)
    return sample(model, cond, SamplerOptions(steps=steps, **options), hooks=hooks), model


# --- the appearance bank ------------------------------------------------------------------------------

def test_appearance_net_runs_once_per_step_with_one_row_per_shared_reference():
    result, model = run(cond=make_conditioning(20, references=3), steps=4, cfg=5.0)
    appearance_calls = [batch for kind, batch, _ in model.calls if kind == "appearance"]
    assert appearance_calls == [3, 3, 3, 3]
    assert result.evaluation_counts["appearance"] == 12


def test_per_frame_references_run_the_appearance_net_once_per_step_on_all_frames():
    result, model = run(cond=make_conditioning(20, references=2, per_frame=True), steps=4)
    assert [batch for kind, batch, _ in model.calls if kind == "appearance"] == [40, 40, 40, 40]


def test_per_window_bank_mode_runs_the_appearance_net_in_every_window_like_the_original():
    result, model = run(cond=make_conditioning(20, references=2), steps=4, bank_mode="per_window")
    # 2 windows per step (F = 20, window 16, overlap 4), 16 frames x 2 references each.
    assert [batch for kind, batch, _ in model.calls if kind == "appearance"] == [32] * 8
    assert result.evaluation_counts["appearance"] == 4 * 2 * 16 * 2


def test_once_per_step_bank_equals_the_per_window_recomputation():
    cond = make_conditioning(20, references=2, per_frame=True)
    ours, _ = run(cond=cond, offsets=[13, 17, 18, 15])
    naive, _ = run(cond=cond, offsets=[13, 17, 18, 15], bank_mode="per_window")
    assert torch.allclose(ours.latents, naive.latents, atol=1e-6)


def test_shared_reference_equals_identical_per_frame_references():
    shared = make_conditioning(20, references=2)
    per_frame = Conditioning(
        [ref.expand(20, -1, -1, -1).clone() for ref in shared.reference_latents],
        shared.pose_hints, shared.local_hints, shared.context, shared.uncond_context,
    )
    a, _ = run(cond=shared, offsets=[13, 17, 18, 15])
    b, _ = run(cond=per_frame, offsets=[13, 17, 18, 15])
    assert torch.allclose(a.latents, b.latents, atol=1e-6)


def test_extra_references_change_the_result():
    one, _ = run(cond=make_conditioning(20, references=1, seed=3), offsets=[0, 0, 0, 0])
    two, _ = run(cond=make_conditioning(20, references=2, seed=3), offsets=[0, 0, 0, 0])
    assert (one.latents - two.latents).abs().max() > 1e-4


# --- guidance ------------------------------------------------------------------------------------------

def guided_denoiser(model, cond, cfg):
    planner = WindowPlanner(16, 16, 4, "random", offsets=[0])
    return WindowedGuidedDenoiser(model, cond, cfg, planner, [1.0, 0.0])


def test_guidance_is_uncond_plus_cfg_times_the_difference():
    model, cond = FakeXPortrait(), make_conditioning(16)
    x = torch.randn(16, 4, LATENT, LATENT)
    eps = guided_denoiser(model, cond, 5.0).eps(x, 501, 0)
    t = torch.full((16,), 501.0)
    bank = model.write_reference_bank(cond.reference_latents[0], torch.full((1,), 501.0), cond.context)
    eps_c = model.eps_conditional(x, t, cond.context, bank, cond.pose_hints, cond.local_hints, 16)
    eps_u = model.eps_unconditional(x, t, cond.uncond_context, 16)
    assert torch.allclose(eps, eps_u + 5.0 * (eps_c - eps_u), atol=1e-6)


def test_cfg_1_runs_only_the_conditional_pass():
    result, model = run(cfg=1.0, steps=4)
    assert {kind for kind, _, _ in model.calls} == {"appearance", "cond"}
    assert result.evaluation_counts == {"appearance": 4, "pose_control": 128, "local_control": 128, "unet": 128}


def test_cfg_0_runs_only_the_unconditional_pass_and_no_bank():
    result, model = run(cfg=0.0, steps=4)
    assert {kind for kind, _, _ in model.calls} == {"uncond"}
    assert result.evaluation_counts == {"appearance": 0, "pose_control": 0, "local_control": 0, "unet": 128}


def test_evaluation_counts_of_the_original_setting():
    # F = 20, 4 steps, 2 windows of 16 per step, cfg 5: both passes in every window, the bank once per step.
    result, _ = run(frames=20, steps=4, cfg=5.0)
    assert result.evaluation_counts == {"appearance": 4, "pose_control": 128, "local_control": 128, "unet": 256}


def test_counts_are_per_run_when_the_model_served_a_run_before():
    model = FakeXPortrait()
    first, _ = run(model=model, steps=1, cfg=1.0, offsets=[0])
    second, _ = run(model=model, steps=1, cfg=1.0, offsets=[0])
    assert first.evaluation_counts["unet"] == second.evaluation_counts["unet"] == 32 and model.rows["unet"] == 64


# --- hooks ---------------------------------------------------------------------------------------------

def test_interrupt_stops_before_the_next_window():
    checks = []

    def should_interrupt():
        checks.append(model.rows["unet"])
        return len(checks) > 1 and checks[-1] == checks[-2] == 32  # asked again with nothing new evaluated

    model = FakeXPortrait()
    with pytest.raises(SamplingInterrupted, match="step 1, before window 2"):
        run(model=model, hooks=SamplerHooks(should_interrupt=should_interrupt))
    assert model.rows["unet"] == 16 * 2  # the first window done, both passes


def test_interrupt_lands_within_one_network_evaluation():
    model = FakeXPortrait()
    with pytest.raises(SamplingInterrupted, match="step 1, during a window"):
        run(model=model, hooks=SamplerHooks(should_interrupt=lambda: model.rows["pose_control"] > 0))
    assert model.rows["pose_control"] == 16 and model.rows["unet"] == 0


def test_progress_moves_after_every_network_evaluation_and_fills_each_step():
    reports = []
    run(frames=20, steps=2, hooks=SamplerHooks(on_progress=lambda *report: reports.append(report)))
    # per step: the bank (1 row), then for each of 2 windows pose, local, cond UNet and uncond UNet (16 rows each)
    per_step = 1 + 2 * 4 * 16
    assert reports[0] == (0, 1, per_step) and reports[1] == (0, 17, per_step)
    assert [r for r in reports if r[1] == per_step] == [(0, per_step, per_step), (1, per_step, per_step)]
    assert len(reports) == 2 * (1 + 2 * 4)


def test_step_and_window_callbacks_report_progress_and_previews():
    steps, windows = [], []
    hooks = SamplerHooks(
        on_step=lambda i, total, x0: steps.append((i, total, tuple(x0.shape))),
        on_window=lambda step, window, count: windows.append((step, window, count)),
    )
    run(frames=20, steps=2, hooks=hooks)
    assert steps == [(i, 2, (20, 4, LATENT, LATENT)) for i in range(2)]
    assert windows == [(s, w, 2) for s in range(2) for w in range(2)]


# --- placement, devices, memory ------------------------------------------------------------------------

def test_model_sees_only_windows_in_its_own_dtype_while_the_video_stays_on_the_cpu():
    model = FakeXPortrait(dtype=torch.float64)
    result, _ = run(frames=40, model=model, steps=2)
    batches = {(kind, batch, dtype) for kind, batch, dtype in model.calls}
    assert batches == {("appearance", 1, torch.float64), ("cond", 16, torch.float64), ("uncond", 16, torch.float64)}
    assert result.latents.device.type == "cpu" and result.latents.dtype == torch.float32
    assert result.latents.shape == (40, 4, LATENT, LATENT)


def test_offsets_are_replayed_and_reported():
    result, _ = run(offsets=[13, 17, 18, 15])
    assert result.offsets == [13, 17, 18, 15] and result.timesteps == [751, 501, 251, 1]


def test_the_seed_fixes_noise_and_offsets():
    a, _ = run(seed=7)
    b, _ = run(seed=7)
    c, _ = run(seed=8)
    assert torch.equal(a.latents, b.latents) and a.offsets == b.offsets
    assert not torch.equal(a.latents, c.latents)


def test_fixed_placement_runs_the_same_windows_every_step():
    windows = []
    run(frames=41, steps=2, placement="fixed", hooks=SamplerHooks(on_window=lambda s, w, n: windows.append(n)))
    assert windows == [4] * 8  # starts 0, 12, 24, 25


def test_on_the_cpu_windows_and_passes_run_one_at_a_time_unless_asked():
    _, automatic = run(frames=40, steps=1)
    assert [kind for kind, _, _ in automatic.calls] == ["appearance"] + ["cond", "uncond"] * 3
    _, batched = run(frames=40, steps=1, windows_per_batch=2)
    assert [(kind, batch) for kind, batch, _ in batched.calls] == [("appearance", 1), ("both", 32), ("both", 16)]
    _, sequential = run(frames=40, steps=1, windows_per_batch=3, batch_passes=False)
    assert [(kind, batch) for kind, batch, _ in sequential.calls] == [("appearance", 1), ("cond", 48), ("uncond", 48)]


def test_the_hints_are_encoded_once_per_run_not_per_step_or_window():
    _, model = run(frames=40, steps=4)
    assert model.hint_rows_encoded == 40


def test_hints_too_large_for_the_budget_go_to_the_controlnets_as_images():
    class LargeFeatures(FakeXPortrait):
        def hint_feature_bytes(self, frames, latent_size):
            return 10**12

    _, model = run(frames=40, steps=1, model=LargeFeatures())
    assert model.hint_rows_encoded == 0 and model.rows["pose_control"] == 48


def test_batched_windows_and_passes_give_the_same_latents():
    plain, _ = run(frames=40, steps=2)
    batched, _ = run(frames=40, steps=2, windows_per_batch=3)
    assert torch.allclose(plain.latents, batched.latents, atol=1e-6)


def test_a_video_shorter_than_the_window_is_wrapped_into_one_window():
    result, model = run(frames=10, steps=2)
    assert [batch for kind, batch, _ in model.calls if kind == "cond"] == [16, 16]
    assert result.latents.shape[0] == 10


@pytest.mark.parametrize("scheduler", ["euler", "dpmpp_2m", "lcm"])
def test_every_scheduler_drives_the_windowed_denoiser(scheduler):
    result, _ = run(frames=20, steps=3, scheduler=scheduler, cfg=2.0)
    assert torch.isfinite(result.latents).all() and len(result.timesteps) == 3
    assert result.evaluation_counts["appearance"] == 3


# --- start latents -------------------------------------------------------------------------------------

def test_reference_start_is_the_reference_noised_to_t999_for_ddim():
    """In sigma space: the original's x_T (noised to t = 999) at the scale of the first step's sigma (t = 751)."""
    cond = make_conditioning(20)
    noise = torch.randn(20, 4, LATENT, LATENT)
    schedule = sigma_schedule("ddim", 4)
    x_T = start_latents(schedule, "reference", (20, 4, LATENT, LATENT), cond.reference_latents[0], noise)
    expected = q_sample(cond.reference_latents[0].expand(20, -1, -1, -1), noise, 999)
    torch.testing.assert_close(x_T / vp_scale(schedule.sigmas[0]), expected, rtol=1e-6, atol=1e-6)


def test_given_start_noise_and_init_latents_are_used():
    # With a network that predicts eps = 0, DDIM only rescales: x_final = x_T * sqrt(a_0 / a_751).
    model = FakeXPortrait()
    model.weight.data.zero_()
    init, noise = torch.randn(2, 20, 4, LATENT, LATENT)
    result = sample(model, make_conditioning(20), SamplerOptions(steps=4, start="init_video"),
                    init_latents=init, start_noise=noise)
    a = ddpm_schedule().alphas_cumprod
    assert torch.allclose(result.latents, q_sample(init, noise, 999) * (a[0] / a[751]).sqrt(), atol=1e-6)


def test_half_strength_runs_the_last_half_of_the_steps():
    cond = make_conditioning(20)
    result = sample(FakeXPortrait(), cond, SamplerOptions(steps=4, start="init_video", strength=0.5),
                    init_latents=torch.zeros(20, 4, LATENT, LATENT))
    assert result.timesteps == [251, 1] and result.evaluation_counts["appearance"] == 2


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "options, option, message",
    [
        (dict(overlap=16), "overlap", r"overlap: must be a whole number from 0 to 15 \(less than the window of 16\)"),
        (dict(steps=0), "steps", "steps: must be a whole number from 1 to 1000, got 0"),
        (dict(cfg=-1.0), "cfg", "cfg: must be a finite number from 0 to 30"),
        (dict(window=32, overlap=4), "window", "window: must be a whole number from 16 to 24 .*trained on 16"),
        (dict(scheduler="heun"), "scheduler", "scheduler: must be one of ddim, euler, dpmpp_2m, lcm, got 'heun'"),
        (dict(start="image"), "start", "start: must be one of reference, noise, init_video"),
        (dict(start="noise", strength=0.5), "strength", "strength: must be 1 when starting from pure noise"),
        (dict(start="init_video"), "init_video", "init_video: is needed by start init_video"),
    ],
)
def test_bad_options_are_clear_errors_naming_the_option(options, option, message):
    with pytest.raises(OptionError, match=message) as raised:
        run(**options)
    assert raised.value.option == option


def test_options_are_checked_when_made_before_any_model_is_asked():
    with pytest.raises(OptionError, match="steps"):
        SamplerOptions(steps=0)
    with pytest.raises(ValueError, match="bank_mode must be once_per_step or per_window"):
        SamplerOptions(bank_mode="per_frame")


def test_replayed_offsets_must_cover_every_step_before_anything_runs():
    model = FakeXPortrait()
    with pytest.raises(ValueError, match="2 window offsets were given to replay but the run has 4 steps"):
        run(model=model, offsets=[1, 2])
    assert model.calls == []


def test_random_placement_on_a_video_no_longer_than_the_overlap_is_an_error():
    with pytest.raises(OptionError, match="overlap: does not fit the video: .*needs more frames than the overlap"):
        run(frames=3)


def replace(cond, **changes):
    fields = dict(reference_latents=cond.reference_latents, pose_hints=cond.pose_hints,
                  local_hints=cond.local_hints, context=cond.context, uncond_context=cond.uncond_context)
    fields.update(changes)
    return Conditioning(**fields)


def test_pose_and_local_frame_counts_must_agree():
    cond = make_conditioning(20)
    with pytest.raises(ValueError, match="pose hints have 20 frames but local hints 19"):
        run(cond=replace(cond, local_hints=cond.local_hints[:19]))


def test_init_video_frame_count_must_match_the_hints():
    with pytest.raises(OptionError, match=r"init_video: must be \(20, 4, 4, 4\) latents"):
        sample(FakeXPortrait(), make_conditioning(20), SamplerOptions(start="init_video"),
               init_latents=torch.zeros(18, 4, LATENT, LATENT))


def test_hint_sides_must_be_divisible_by_8():
    cond = make_conditioning(20)
    with pytest.raises(ValueError, match="must be divisible by 8"):
        run(cond=replace(cond, pose_hints=cond.pose_hints[..., :30, :30], local_hints=cond.local_hints[..., :30, :30]))


def test_hints_must_be_8_times_the_latent_size():
    cond = make_conditioning(20)
    with pytest.raises(ValueError, match="hints must be exactly 8x the latent size"):
        run(cond=replace(cond, pose_hints=cond.pose_hints[..., :24, :24], local_hints=cond.local_hints[..., :24, :24]))


def test_per_frame_references_need_one_latent_per_frame():
    cond = make_conditioning(20)
    with pytest.raises(ValueError, match="expected 1 .* or 20"):
        run(cond=replace(cond, reference_latents=[torch.zeros(5, 4, LATENT, LATENT)]))


def test_start_noise_must_have_the_video_shape():
    with pytest.raises(ValueError, match="start_noise must be"):
        sample(FakeXPortrait(), make_conditioning(20), SamplerOptions(), start_noise=torch.zeros(16, 4, 4, 4))


# --- the window is what the motion modules see -----------------------------------------------------------

def test_a_window_of_24_is_one_video_of_24_frames_for_the_motion_modules():
    result, model = run(frames=24, steps=1, window=24, overlap=4, placement="fixed")
    assert set(model.videos) == {24} and [batch for kind, batch, _ in model.calls if kind == "cond"] == [24]
    assert result.latents.shape[0] == 24


def test_with_a_window_of_24_every_frame_sees_frames_16_positions_away():
    """Frame 0's result depends on frame 20's latents only when both sit in one motion-module video (window 24); with
    window 16 (fixed windows 0-15 and 8-23) frame 0 never shares a window with frame 20."""
    def frame0_change(window):
        options = SamplerOptions(steps=1, window=window, overlap=4, placement="fixed")
        cond = make_conditioning(24)
        noise = torch.randn(24, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(0))
        moved = noise.clone()
        moved[20] += 1.0
        a = sample(FakeXPortrait(), cond, options, start_noise=noise)
        b = sample(FakeXPortrait(), cond, options, start_noise=moved)
        return (a.latents[0] - b.latents[0]).abs().max().item()

    assert frame0_change(16) == 0.0 and frame0_change(24) > 1e-6


@pytest.mark.parametrize("window", [32, 48, 15])
def test_a_window_the_motion_modules_cannot_see_whole_is_refused(window):
    with pytest.raises(OptionError, match=f"window: must be a whole number from 16 to 24 .*got {window}"):
        SamplerOptions(window=window, overlap=4)


def test_an_overlap_beyond_its_window_is_refused_with_the_windows_own_bound():
    with pytest.raises(OptionError, match=r"overlap: must be a whole number from 0 to 19 \(less than the window of "
                                          r"20\), got 24"):
        SamplerOptions(window=20, overlap=24)
