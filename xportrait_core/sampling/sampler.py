"""The sampling loop: start latents, a scheduler, and the windowed guided denoiser, over a whole video.

    result = sample(model, conditioning, SamplerOptions(steps=30, cfg=5.0, seed=0))
    result.latents  # (F, 4, h, w), on the device of conditioning.pose_hints

The loop itself (`denoise_loop`) knows nothing about windows or guidance: it asks a denoiser callable for eps
and lets the scheduler step, as k-diffusion's samplers do. Full-video tensors (latents, eps, x0 estimates) live
where the caller keeps the per-frame inputs, typically the CPU for long videos; only one window at a time goes
to the model's device.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence

import torch

from .finite_check import check_finite_latents
from .guidance import LATENT_CHANNELS, Conditioning, GuidedModel, WindowedGuidedDenoiser, check_conditioning
from .schedulers import Scheduler, make_scheduler
from .windows import WindowPlanner

logger = logging.getLogger(__name__)

StartMode = Literal["reference", "noise", "init_video"]
START_MODES: tuple[str, ...] = ("reference", "noise", "init_video")
DEFAULT_STEPS = 30  # the original's shipped script
DEFAULT_CFG = 5.0  # the original's --uc_scale default
DEFAULT_WINDOW = 16  # the original's num_drivings; the motion modules' frame count
DEFAULT_OVERLAP = 4  # the original's num_mix
EVALUATED_NETS: tuple[str, ...] = ("appearance", "pose_control", "local_control", "unet")


class Denoiser(Protocol):
    def __call__(self, latents_in: torch.Tensor, timestep: int, step_index: int) -> torch.Tensor:
        """eps (F, 4, h, w) for the scheduler-scaled latents (F, 4, h, w) at DDPM `timestep`."""


@dataclass(frozen=True)
class SamplerOptions:
    """How to sample. Defaults are the original's.

    steps: requested scheduler steps (the original's DDIM runs len(range(0, 1000, 1000 // steps)) of them).
    cfg: guidance scale >= 0; 1 skips the unconditional pass, 0 the conditional one.
    seed: seeds the start noise (torch, CPU generator), the random window offsets (Python random) and LCM's
        per-step noise.
    scheduler: "ddim" (the original's), "euler", "dpmpp_2m" or "lcm" (diffusers).
    window, overlap, placement: see `xportrait_core.sampling.windows`; window must be a multiple of the model's
        WINDOW_FRAMES (16).
    offsets: replay these random-placement offsets (one per step) instead of drawing them.
    start: "reference" (the original: the reference latents noised to the first step; t = 999 for ddim),
        "noise" (pure noise) or "init_video" (latents of another video, e.g. the original's facevid2vid).
    strength: denoise strength in (0, 1] for "reference" and "init_video"; below 1 the run starts later in the
        schedule, as img2img does.
    bank_mode: "once_per_step" (ours) or "per_window" (the original's cost: the appearance net in every window).
    batch_passes: run a window's conditional and unconditional pass as one forward (faster on a GPU, twice the
        activation memory; equal to the two passes within float noise). Turned off automatically when not even one
        window's two passes fit in the device's free memory, and on the CPU, where it does not pay.
    windows_per_batch: windows per forward; None sizes it from the device's free memory (1 on the CPU); a number
        forces it, with batch_passes as given.
    """

    steps: int = DEFAULT_STEPS
    cfg: float = DEFAULT_CFG
    seed: int = 0
    scheduler: str = "ddim"
    window: int = DEFAULT_WINDOW
    overlap: int = DEFAULT_OVERLAP
    placement: str = "random"
    offsets: Sequence[int] | None = None
    start: str = "reference"
    strength: float = 1.0
    bank_mode: str = "once_per_step"
    batch_passes: bool = True
    windows_per_batch: int | None = None


@dataclass
class SamplerHooks:
    """Callbacks for hosts.

    on_step(step_index, total_steps, denoised (F, 4, h, w)) after every step, with the x0 estimate for previews.
    on_window(step_index, window_index, windows_in_step) after every window.
    on_progress(step_index, rows_done, rows_per_step) after every network evaluation (appearance net, each
        ControlNet, each UNet forward), counted in network rows: moves within the first window.
    should_interrupt() before every batch of windows and after every network evaluation; True (or an exception
        it raises) stops within one network evaluation.
    """

    on_step: Callable[[int, int, torch.Tensor], None] | None = None
    on_window: Callable[[int, int, int], None] | None = None
    on_progress: Callable[[int, int, int], None] | None = None
    should_interrupt: Callable[[], bool] | None = None


@dataclass
class SamplerResult:
    """latents (F, 4, h, w); the DDPM timesteps and window offsets used (offsets only for random placement);
    network evaluations of this run in frames, per net (appearance, pose_control, local_control, unet)."""

    latents: torch.Tensor
    timesteps: list[int]
    offsets: list[int]
    evaluation_counts: dict[str, int] = field(default_factory=dict)


def denoise_loop(
    denoiser: Denoiser,
    scheduler: Scheduler,
    latents: torch.Tensor,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run every step of `scheduler` from start latents (F, 4, h, w); returns the final latents (F, 4, h, w).
    Raises NonFiniteError at the first step whose latents hold NaN or inf (naming the step and the frames)."""
    total = len(scheduler.timesteps)
    for step_index, timestep in enumerate(scheduler.timesteps):
        eps = denoiser(scheduler.model_input(latents, step_index), timestep, step_index)
        result = scheduler.step(latents, eps, step_index, generator)
        latents = result.latents
        check_finite_latents(latents, step_index, total)
        if on_step is not None:
            on_step(step_index, total, result.denoised)
    return latents


def start_latents(
    scheduler: Scheduler,
    start: str,
    shape: tuple[int, int, int, int],
    clean_latents: torch.Tensor | None,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Start latents (F, 4, h, w): `clean_latents` (F or 1, 4, h, w) noised to the first step, or noise alone."""
    if start == "noise":
        return scheduler.noise_only(noise)
    if clean_latents is None:
        raise ValueError(f"start {start!r} needs clean latents to noise")
    return scheduler.noise_latents(clean_latents.to(noise.device, noise.dtype).expand(shape), noise)


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
    Raises ValueError for inputs that do not fit, SamplingInterrupted when the interrupt check fires.
    """
    hooks = hooks or SamplerHooks()
    check_conditioning(conditioning)
    storage = conditioning.pose_hints.device
    frames = conditioning.num_frames
    h, w = conditioning.latent_size
    shape = (frames, LATENT_CHANNELS, h, w)
    _check_start(options, shape, init_latents, start_noise)

    scheduler = make_scheduler(options.scheduler, options.steps, options.strength, storage)
    if options.offsets is not None and len(options.offsets) < len(scheduler.timesteps):
        raise ValueError(
            f"{len(options.offsets)} window offsets were given to replay but the run has "
            f"{len(scheduler.timesteps)} steps; give one offset per step"
        )
    planner = WindowPlanner(frames, options.window, options.overlap, options.placement, options.seed, options.offsets)
    denoiser = WindowedGuidedDenoiser(
        model, conditioning, options.cfg, planner, options.bank_mode, hooks.on_window, hooks.should_interrupt,
        batch_passes=options.batch_passes, windows_per_batch=options.windows_per_batch,
        on_progress=hooks.on_progress,
    )
    generator = torch.Generator(device="cpu").manual_seed(options.seed)
    noise = start_noise if start_noise is not None else torch.randn(shape, generator=generator)
    noise = noise.to(storage, torch.float32)
    clean = init_latents if init_latents is not None else conditioning.reference_latents[0]
    latents = start_latents(scheduler, options.start, shape, clean, noise)

    counts_before = dict(model.evaluation_counts)
    logger.info(
        "sampling %d frames, %s %d steps, cfg %g, windows of %d (overlap %d, %s), bank %s, %d window(s) per "
        "forward, passes %s",
        frames, options.scheduler, len(scheduler.timesteps), options.cfg,
        options.window, options.overlap, options.placement, options.bank_mode, denoiser.windows_per_batch,
        "batched" if denoiser.batch_passes else "one after the other",
    )
    with torch.no_grad():
        latents = denoise_loop(denoiser, scheduler, latents, generator, hooks.on_step)
    counts = {net: model.evaluation_counts.get(net, 0) - counts_before.get(net, 0) for net in EVALUATED_NETS}
    return SamplerResult(
        latents=latents, timesteps=list(scheduler.timesteps), offsets=list(planner.offsets_used), evaluation_counts=counts
    )


def _check_start(
    options: SamplerOptions,
    shape: tuple[int, int, int, int],
    init_latents: torch.Tensor | None,
    start_noise: torch.Tensor | None,
) -> None:
    if options.start not in START_MODES:
        raise ValueError(f"start must be one of {START_MODES}, got {options.start!r}")
    if options.start == "noise" and options.strength != 1.0:
        raise ValueError(f"start 'noise' has nothing to keep: denoise strength must be 1, got {options.strength}")
    if options.start == "init_video" and init_latents is None:
        raise ValueError("start 'init_video' needs init_latents (F, 4, h, w): the encoded frames of the init video")
    if init_latents is not None:
        if options.start == "noise":
            raise ValueError("init_latents were given but start is 'noise'; use start 'init_video' or 'reference'")
        allowed = {shape[0], 1} if options.start == "reference" else {shape[0]}
        if init_latents.dim() != 4 or init_latents.shape[0] not in allowed or tuple(init_latents.shape[1:]) != shape[1:]:
            raise ValueError(
                f"init_latents must be {shape} (one latent per frame of the hints), got {tuple(init_latents.shape)}; "
                "the init video needs as many frames as the driving video"
            )
    if start_noise is not None and tuple(start_noise.shape) != shape:
        raise ValueError(f"start_noise must be {shape}, got {tuple(start_noise.shape)}")
