"""The X-Portrait Guider node: X-Portrait's windowed, guided denoiser as a GUIDER, so that core SamplerCustomAdvanced
runs it with any core SAMPLER (KSamplerSelect), SIGMAS (BasicScheduler on the guider's `schedule`, KarrasScheduler,
AlignYourStepsScheduler, SplitSigmas) and NOISE (RandomNoise, DisableNoise).

The node prepares a `GuidedRun` (host-independent: conditioning, guidance settings, LoRAs); `host.core_guider` wraps
it in ComfyUI's guider protocol. X-Portrait's guidance lives inside the denoiser (the unconditional pass runs without
the appearance bank and the controls), so `cfg` is this node's own input, not core CFG.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from . import host
from .errors import XPortraitInputError, about_input
from .sampling_inputs import (
    MAX_CFG,
    animation_inputs,
    networks_with_loras,
    sampling_model,
    prepared_conditioning,
    prompt_inputs,
    window_inputs,
)
from .types import CATEGORY, LORA

log = logging.getLogger(__name__)

NODE = "X-Portrait Guider"
GUIDER, CORE_MODEL, LATENT = "GUIDER", "MODEL", "LATENT"
LATENT_CHANNELS = 4  # SD1.5 VAE latent channels


@dataclass(frozen=True)
class GuidedRun:
    """What one core sampler run through the guider needs.

    conditioning: the core's Conditioning (scaled reference latents, hints, text contexts) for F frames.
    scale_factor: the checkpoint's latent scale (LATENTs are unscaled, the sampler works on scaled latents).
    """

    model: Any  # host.ManagedModel
    conditioning: Any  # xportrait_core.sampling.guidance.Conditioning
    cfg: float
    window: int
    overlap: int
    placement: str
    loras: tuple
    scale_factor: float

    @property
    def frames(self) -> int:
        return self.conditioning.num_frames

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, LATENT_CHANNELS, *self.conditioning.latent_size)

    def check_latent(self, shape: Sequence[int]) -> None:
        """Refuse, before anything is loaded, a latent_image that is not one latent per driving frame."""
        if tuple(shape) != self.latent_shape:
            frames, _, height, width = self.latent_shape
            raise XPortraitInputError(
                f"{NODE}: SamplerCustomAdvanced's latent_image is {tuple(shape)} but the motion has {frames} frames "
                f"of {8 * height}x{8 * width} px, which need latents of shape {self.latent_shape}. Connect the "
                f"guider's start_latent, or an Empty Latent Image of {8 * width}x{8 * height} with batch_size "
                f"{frames}.")

    @contextlib.contextmanager
    def denoiser(self, sigmas: Sequence[float], seed: int | None) -> Iterator[Any]:
        """The sigma-space denoiser for one sampler run over `sigmas`, with the networks loaded and the LoRAs merged
        for the block (restored after it, also on an error or Cancel). `seed` (the NOISE's) draws the random window
        offsets, as the X-Portrait Sampler's seed does."""
        from xportrait_core.sampling.sigma_denoiser import SigmaSpaceDenoiser, StepPlanner

        planner = StepPlanner(self.frames, self.window, self.overlap, self.placement, 0 if seed is None else seed)
        log.info("X-Portrait guider: sampling %d frames over %d sigmas, cfg %g, windows of %d (overlap %d, %s)",
                 self.frames, len(sigmas), self.cfg, self.window, self.overlap, self.placement)
        with networks_with_loras(NODE, self.model, self.loras, self.conditioning, self.window) as networks:
            with about_input(NODE, "window"):
                denoiser = SigmaSpaceDenoiser(sampling_model(self.model, networks), self.conditioning, self.cfg,
                                              planner, sigmas,
                                              should_interrupt=host.check_interrupt)
            yield denoiser
        log.info("X-Portrait guider: %d frames, %d denoiser calls over %d sampler steps, window offsets %s",
                 self.frames, len(denoiser.calls), len({step for step, _ in denoiser.calls}), denoiser.offsets_used)


class Guider:
    DESCRIPTION = ("X-Portrait as a GUIDER for SamplerCustomAdvanced: any core sampler (KSamplerSelect), schedule "
                   "(BasicScheduler on 'schedule', KarrasScheduler, AlignYourStepsScheduler SD1, SplitSigmas) and "
                   "noise (RandomNoise, DisableNoise). The video is denoised window by window with X-Portrait's "
                   "guidance at this node's cfg; the noise seed also draws the window offsets. Decode the output "
                   "with VAE Decode and the VAE of Load X-Portrait Model.")
    CATEGORY = CATEGORY
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

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from xportrait_core.sampling.sampler import DEFAULT_CFG
        from xportrait_core.sampling.windows import PLACEMENTS

        return {
            "required": {
                **animation_inputs(),
                "cfg": ("FLOAT", {"default": DEFAULT_CFG, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01,
                                  "tooltip": "How closely the result follows the portrait and the motion "
                                             "(X-Portrait's own guidance, not a core CFG). 5 as the original; 1 "
                                             "is twice as fast."}),
                **window_inputs(),
                "window_placement": (list(PLACEMENTS), {"default": "random", "tooltip": "Where the groups of "
                                     "frames start. random: somewhere new every sampler step (from the noise "
                                     "seed), so joins do not show (as the original); fixed: the same places."}),
            },
            "optional": {
                **prompt_inputs(),
                "lora": (LORA, {"tooltip": "Connect X-Portrait LoRA to use a LoRA, e.g. the LCM-LoRA."}),
            },
        }

    def guide(self, model: Any, reference: Any, motion: Any, local_patches: Any, cfg: float, window: int,
              overlap: int, window_placement: str, positive: Any = None, negative: Any = None,
              lora: Any = ()) -> tuple[Any, Any, dict]:
        from xportrait_core.sampling.windows import WindowPlanner

        from .comfy_types import to_comfy_latent

        networks = model.model
        setup, conditioning = prepared_conditioning(NODE, networks, reference, motion, local_patches, positive,
                                                    negative)
        if window % networks.WINDOW_FRAMES:
            raise XPortraitInputError(f"{NODE}, input 'window': {window} frames is not a multiple of "
                                      f"{networks.WINDOW_FRAMES}, the frame count the motion modules work on.")
        with about_input(NODE, "overlap"):
            WindowPlanner(setup.frames, window, overlap, window_placement)
        run = GuidedRun(model=model, conditioning=conditioning, cfg=cfg, window=window, overlap=overlap,
                        placement=window_placement, loras=tuple(lora or ()), scale_factor=setup.scale_factor)
        guider, schedule = host.core_guider(run)
        start = conditioning.reference_latents[0].expand(run.latent_shape)
        return guider, schedule, to_comfy_latent(start, setup.scale_factor)
