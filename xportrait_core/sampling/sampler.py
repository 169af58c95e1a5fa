"""Sampling a whole video: start latents, a sigma schedule, a sampler function and the windowed guided denoiser.

    result = sample(model, conditioning, SamplerOptions(steps=30, cfg=5.0, seed=0))
    result.latents  # (F, 4, h, w) variance-preserving latents, on the device of conditioning.pose_hints

One path for every scheduler, the same one the X-Portrait Guider hands to ComfyUI's core samplers: the latents move
in sigma space (`sigmas`), the scheduler's function (`samplers`) steps them, and `guidance.WindowedGuidedDenoiser`
windows and guides every evaluation. Full-video tensors live where the caller keeps the per-frame inputs, typically
the CPU for long videos; only one batch of windows at a time goes to the model's device.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..model.schedule import q_sample
from ..options import LATENT_CHANNELS, OptionError, Placement, Scheduler, StartMode, check, default
from .finite_check import check_finite_latents
from .guidance import BankMode, Conditioning, DenoiserHooks, GuidedModel, WindowedGuidedDenoiser
from .samplers import SAMPLERS
from .sigmas import SigmaSchedule, sigma_schedule, vp_scale
from .windows import WindowPlanner, check_window_fit

logger = logging.getLogger(__name__)

SAMPLER_OPTIONS = ("steps", "cfg", "seed", "scheduler", "window", "overlap", "placement", "start", "strength")


@dataclass(frozen=True)
class SamplerOptions:
    """How to sample, checked when made (OptionError naming the first option that cannot work). Defaults are the
    original's, as `options.OPTIONS` declares them.

    steps, cfg, seed, scheduler, window, overlap, placement, start, strength, windows_per_batch: see
        `options.OPTIONS` (the seed draws the start noise, the random window offsets and LCM's per-step noise).
    offsets: replay these random-placement offsets (one per step) instead of drawing them.
    bank_mode: "once_per_step" (ours) or "per_window" (the original's cost: the appearance net in every window).
    batch_passes: run a window's conditional and unconditional pass as one forward (faster on a GPU, twice the
        activation memory; equal to the two passes within float noise). Turned off automatically when not even one
        window's two passes fit in the device's free memory, and on the CPU, where it does not pay.
    """

    steps: int = default("steps")
    cfg: float = default("cfg")
    seed: int = default("seed")
    scheduler: Scheduler = default("scheduler")
    window: int = default("window")
    overlap: int = default("overlap")
    placement: Placement = default("placement")
    offsets: Sequence[int] | None = None
    start: StartMode = default("start")
    strength: float = default("strength")
    bank_mode: BankMode = "once_per_step"
    batch_passes: bool = True
    windows_per_batch: int | None = None

    def __post_init__(self) -> None:
        for name in SAMPLER_OPTIONS:
            if name == "overlap" and isinstance(self.overlap, int) and self.overlap >= self.window:
                # Its bound is the window's, which is checked (it comes first): say so rather than the widest range.
                raise OptionError("overlap", f"must be a whole number from 0 to {self.window - 1} (less than the "
                                  f"{{window}} of {self.window}), got {self.overlap!r}")
            check(name, getattr(self, name))
        if self.windows_per_batch is not None:
            check("windows_per_batch", self.windows_per_batch)
        if self.start == "noise" and self.strength != 1:
            raise OptionError("strength", f"must be 1 when starting from pure noise (there is nothing to keep), got "
                              f"{self.strength!r}")
        if self.bank_mode not in ("once_per_step", "per_window"):
            raise ValueError(f"bank_mode must be once_per_step or per_window, got {self.bank_mode!r}")
        if self.offsets is not None and self.placement != "random":
            raise ValueError("window offsets can only be replayed with placement 'random'")
        schedule = self.schedule  # a strength that leaves no step is an error of the options, not of a run
        if self.offsets is not None and len(self.offsets) < schedule.steps:
            raise ValueError(f"{len(self.offsets)} window offsets were given to replay but the run has "
                             f"{schedule.steps} steps; give one offset per step")

    @property
    def schedule(self) -> SigmaSchedule:
        """The run's noise levels (`sigmas.sigma_schedule`)."""
        return sigma_schedule(self.scheduler, self.steps, self.strength)

    @property
    def steps_run(self) -> int:
        """The steps the scheduler runs, what a progress display counts (the original's DDIM runs 31 for 30)."""
        return self.schedule.steps

    def check_video(self, frames: int) -> None:
        """OptionError when these options cannot sample a video of `frames` frames."""
        check_window_fit(frames, self.overlap, self.placement)
        if self.offsets is not None and any(not 0 <= int(o) < frames for o in self.offsets):
            raise ValueError(f"window offsets must lie in [0, {frames - 1}] (the frame count), got "
                             f"{list(self.offsets)}")


@dataclass(frozen=True)
class SamplerHooks:
    """Callbacks for hosts: on_step(step_index, total_steps, denoised (F, 4, h, w)) after every step, with the
    clean-latent estimate for previews; on_window, on_progress and should_interrupt as `guidance.DenoiserHooks`."""

    on_step: Callable[[int, int, torch.Tensor], None] | None = None
    on_window: Callable[[int, int, int], None] | None = None
    on_progress: Callable[[int, int, int], None] | None = None
    should_interrupt: Callable[[], bool] | None = None

    @property
    def denoiser_hooks(self) -> DenoiserHooks:
        return DenoiserHooks(self.on_window, self.on_progress, self.should_interrupt)


@dataclass
class SamplerResult:
    """latents (F, 4, h, w) variance-preserving at the schedule's end; the DDPM timesteps evaluated and the window
    offsets used (offsets only for random placement); network evaluations of this run in frames, per net."""

    latents: torch.Tensor
    timesteps: list[int]
    offsets: list[int]
    evaluation_counts: dict[str, int] = field(default_factory=dict)


def guided_denoiser(model: GuidedModel, conditioning: Conditioning, options: SamplerOptions,
                    sigmas: Sequence[float] | torch.Tensor, hooks: DenoiserHooks
                    ) -> WindowedGuidedDenoiser:
    """The windowed guided denoiser these options describe, over the run's `sigmas`: what `sample` steps, and what
    the X-Portrait Guider hands to core samplers (the options already checked against the video)."""
    planner = WindowPlanner(conditioning.num_frames, options.window, options.overlap, options.placement,
                            options.seed, options.offsets)
    return WindowedGuidedDenoiser(model, conditioning, options.cfg, planner, sigmas, bank_mode=options.bank_mode,
                                  batch_passes=options.batch_passes, windows_per_batch=options.windows_per_batch,
                                  hooks=hooks)


def start_latents(schedule: SigmaSchedule, start: StartMode, shape: tuple[int, int, int, int],
                  clean_latents: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
    """Sigma-space start latents (F, 4, h, w): `clean_latents` (F or 1, 4, h, w) noised to the schedule's start
    timestep (variance-preserving, as the original's q_sample), or unit noise alone, brought to sigmas[0]'s scale."""
    scale = vp_scale(schedule.sigmas[0]).to(noise.device, noise.dtype)
    if start == "noise":
        return noise * scale
    assert clean_latents is not None, "the reference and init_video starts noise clean latents"
    clean = clean_latents.to(noise.device, noise.dtype).expand(shape)
    return q_sample(clean, noise, schedule.start_timestep) * scale


def sample(
    model: GuidedModel,
    conditioning: Conditioning,
    options: SamplerOptions = SamplerOptions(),
    *,
    init_latents: torch.Tensor | None = None,
    start_noise: torch.Tensor | None = None,
    hooks: SamplerHooks | None = None,
) -> SamplerResult:
    """Animate the reference with the driving hints.

    init_latents: the clean latents the start noises: (F, 4, h, w) of the init video for start "init_video"
        (required); for start "reference" optional, replacing the main reference latents (e.g. another set of
        per-frame VAE samples, as the original draws).
    start_noise: (F, 4, h, w) unit noise for the start instead of drawing it from the seed.
    Raises OptionError for options that do not fit the video, ValueError for inputs that do not fit together,
    SamplingInterrupted when the interrupt check fires, NonFiniteError at a step whose latents leave the finite range.
    """
    hooks = hooks or SamplerHooks()
    frames = conditioning.num_frames
    options.check_video(frames)
    shape = (frames, LATENT_CHANNELS, *conditioning.latent_size)
    _check_start(options.start, shape, init_latents, start_noise)
    storage = conditioning.pose_hints.device
    schedule = options.schedule
    denoiser = guided_denoiser(model, conditioning, options, schedule.sigmas, hooks.denoiser_hooks)
    generator = torch.Generator(device="cpu").manual_seed(options.seed)
    noise = start_noise if start_noise is not None else torch.randn(shape, generator=generator)
    noise = noise.to(storage, torch.float32)
    clean = init_latents if init_latents is not None else conditioning.reference_latents[0]
    x = start_latents(schedule, options.start, shape, clean, noise)

    def step_done(step_index: int, x_after: torch.Tensor, denoised: torch.Tensor) -> None:
        check_finite_latents(x_after, step_index, schedule.steps)
        if hooks.on_step is not None:
            hooks.on_step(step_index, schedule.steps, denoised)

    logger.info(
        "sampling %d frames, %s %d steps, cfg %g, windows of %d (overlap %d, %s), bank %s, %d window(s) per "
        "forward, passes %s", frames, options.scheduler, schedule.steps, options.cfg, options.window,
        options.overlap, options.placement, options.bank_mode, denoiser.windows_per_batch,
        "batched" if denoiser.batch_passes else "one after the other",
    )
    sigmas = schedule.sigmas.to(storage)
    with torch.no_grad():
        x = SAMPLERS[options.scheduler](denoiser, x, sigmas, on_step=step_done, generator=generator)
    return SamplerResult(latents=x / vp_scale(sigmas[-1]), timesteps=list(schedule.timesteps),
                         offsets=list(denoiser.offsets_used), evaluation_counts=dict(denoiser.evaluation_counts))


def _check_start(start: StartMode, shape: tuple[int, int, int, int], init_latents: torch.Tensor | None,
                 start_noise: torch.Tensor | None) -> None:
    if start == "init_video" and init_latents is None:
        raise OptionError("init_video", "is needed by start init_video: give the encoded frames of the init video")
    if init_latents is not None:
        if start == "noise":
            raise OptionError("start", "is noise, but init latents were given; use start init_video or reference")
        allowed = {shape[0], 1} if start == "reference" else {shape[0]}
        if init_latents.dim() != 4 or init_latents.shape[0] not in allowed or init_latents.shape[1:] != shape[1:]:
            raise OptionError("init_video", f"must be {shape} latents (one per frame of the hints), got "
                              f"{tuple(init_latents.shape)}; the init video needs as many frames as the driving video")
    if start_noise is not None and tuple(start_noise.shape) != shape:
        raise ValueError(f"start_noise must be {shape}, got {tuple(start_noise.shape)}")
