"""The X-Portrait Guider node: X-Portrait's windowed, guided denoiser as a GUIDER, so that core SamplerCustomAdvanced
runs it with any core SAMPLER (KSamplerSelect), SIGMAS (BasicScheduler on the guider's `schedule`, KarrasScheduler,
AlignYourStepsScheduler, SplitSigmas) and NOISE (RandomNoise, DisableNoise).

The node prepares a `GuidedRun` (host-independent: conditioning, checked options, LoRAs); the host's `core_guider`
wraps it in ComfyUI's guider protocol. X-Portrait's guidance lives inside the denoiser (the unconditional pass runs
without the appearance bank and the controls), so `cfg` is this node's own input, not core CFG. The denoiser is the
one the X-Portrait Sampler drives (`xportrait_core.pipeline.windowed_denoiser`).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from xportrait_core.options import Placement

from . import host
from .errors import XPortraitInputError, about_input
from .node_inputs import OptionNode
from .sampling_inputs import (
    ANIMATION_OPTIONS,
    PROMPT_OPTIONS,
    WINDOW_OPTIONS,
    compile_mode,
    networks_with_loras,
    prepared_conditioning,
)

log = logging.getLogger(__name__)

GUIDER, CORE_MODEL, LATENT = "GUIDER", "MODEL", "LATENT"


@dataclass(frozen=True)
class GuidedRun:
    """What one core sampler run through the guider needs.

    conditioning: the core's Conditioning (scaled reference latents, hints, text contexts) for F frames.
    options: cfg and the windows (checked against the video); the NOISE's seed is set per run.
    scale_factor: the checkpoint's latent scale (LATENTs are unscaled, the sampler works on scaled latents).
    """

    model: Any  # host.ManagedModel
    conditioning: Any  # xportrait_core.sampling.guidance.Conditioning
    options: Any  # xportrait_core.sampling.sampler.SamplerOptions
    loras: tuple
    scale_factor: float

    @property
    def frames(self) -> int:
        return self.conditioning.num_frames

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        from xportrait_core.options import LATENT_CHANNELS

        return (self.frames, LATENT_CHANNELS, *self.conditioning.latent_size)

    def check_latent(self, shape: Sequence[int]) -> None:
        """Refuse, before anything is loaded, a latent_image that is not one latent per driving frame."""
        if tuple(shape) != self.latent_shape:
            frames, _, height, width = self.latent_shape
            raise XPortraitInputError(
                f"{Guider.DISPLAY_NAME}: SamplerCustomAdvanced's latent_image is {tuple(shape)} but the motion has "
                f"{frames} frames of {8 * height}x{8 * width} px, which need latents of shape {self.latent_shape}. "
                f"Connect the guider's start_latent, or an Empty Latent Image of {8 * width}x{8 * height} with "
                f"batch_size {frames}.")

    @property
    def window_plan(self) -> tuple[int, int]:
        """(window, reference images): what one window's activation memory depends on besides the latent size."""
        return self.options.window, len(self.conditioning.reference_latents)

    def make_denoiser(self, networks: Any, sigmas: Sequence[float], seed: int | None) -> Any:
        """The denoiser for one sampler run over `sigmas` with networks already loaded (LoRAs applied). `seed` (the
        NOISE's) draws the random window offsets, as the X-Portrait Sampler's seed does."""
        from xportrait_core.pipeline import DenoiserHooks, windowed_denoiser

        options = replace(self.options, seed=0 if seed is None else seed)
        log.info("X-Portrait guider: sampling %d frames over %d sigmas, cfg %g, windows of %d (overlap %d, %s)",
                 self.frames, len(sigmas), options.cfg, options.window, options.overlap, options.placement)
        return windowed_denoiser(networks, self.conditioning, options, sigmas, compile_mode=compile_mode(self.model),
                                 hooks=DenoiserHooks(should_interrupt=host.current().check_interrupt))

    def log_denoiser(self, denoiser: Any) -> None:
        log.info("X-Portrait guider: %d frames, %d denoiser calls over %d sampler steps, window offsets %s",
                 self.frames, len(denoiser.calls), len({step for step, _ in denoiser.calls}), denoiser.offsets_used)

    @contextlib.contextmanager
    def denoiser(self, sigmas: Sequence[float], seed: int | None) -> Iterator[Any]:
        """The denoiser for one run over `sigmas` with the networks loaded by the host and the LoRAs applied for the
        block (standalone, where the run is the guider; inside ComfyUI core's sampling loads them)."""
        with networks_with_loras(Guider, self.model, self.loras, self.conditioning, self.options.window) as networks:
            denoiser = self.make_denoiser(networks, sigmas, seed)
            yield denoiser
        self.log_denoiser(denoiser)


class Guider(OptionNode):
    DISPLAY_NAME = "X-Portrait Guider"
    DESCRIPTION = ("X-Portrait as a GUIDER for SamplerCustomAdvanced: any core sampler (KSamplerSelect), schedule "
                   "(BasicScheduler on 'schedule', KarrasScheduler, AlignYourStepsScheduler SD1, SplitSigmas) and "
                   "noise (RandomNoise, DisableNoise). The video is denoised window by window with X-Portrait's "
                   "guidance at this node's cfg; the noise seed also draws the window offsets. Decode the output "
                   "with VAE Decode and the VAE of Load X-Portrait Model.")
    FUNCTION = "guide"
    RETURN_TYPES = (GUIDER, CORE_MODEL, LATENT)
    RETURN_NAMES = ("guider", "schedule", "start_latent")
    OUTPUT_TOOLTIPS = (
        "Connect to the guider input of SamplerCustomAdvanced: it makes X-Portrait do the denoising there.",
        "X-Portrait's noise schedule, for BasicScheduler's model input (to use any core scheduler). It cannot "
        "animate by itself: KSampler stops with an error if you connect it there.",
        "Connect to SamplerCustomAdvanced's latent_image: the portrait repeated for every driving frame, where "
        "the original starts. For pure noise use an Empty Latent Image of the same size and frame count.",
    )
    REQUIRED_OPTIONS = (*ANIMATION_OPTIONS, "cfg", *WINDOW_OPTIONS)
    OPTIONAL_OPTIONS = (*PROMPT_OPTIONS, "lora")

    def guide(self, model: Any, reference: Any, motion: Any, local_patches: Any, cfg: float, window: int,
              overlap: int, window_placement: Placement, positive: Any = None, negative: Any = None,
              lora: Any = ()) -> tuple[Any, Any, dict]:
        from xportrait_core.pipeline import SamplerOptions

        from .comfy_types import to_comfy_latent

        with about_input(Guider, "cfg"):
            options = SamplerOptions(cfg=cfg, window=window, overlap=overlap, placement=window_placement)
        networks = model.model
        conditioning = prepared_conditioning(Guider, networks, reference, motion, local_patches, positive, negative)
        with about_input(Guider, "overlap"):
            options.check_video(conditioning.num_frames)
        scale_factor = networks.config.vae.scale_factor
        run = GuidedRun(model=model, conditioning=conditioning, options=options, loras=tuple(lora or ()),
                        scale_factor=scale_factor)
        guider, schedule = host.current().core_guider(run)
        start = conditioning.reference_latents[0].expand(run.latent_shape)
        return guider, schedule, to_comfy_latent(start, scale_factor)
