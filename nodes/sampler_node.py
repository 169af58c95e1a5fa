"""The X-Portrait Sampler node: reference + motion + local patches -> LATENT frames for VAE Decode. A preset over the
path the X-Portrait Guider hands to core samplers: the same windowed denoiser in sigma space, driven by one of the
pack's sampler functions over the scheduler's sigmas (`xportrait_core.pipeline.sample_video`)."""
from __future__ import annotations

import logging
from typing import Any

from xportrait_core.options import Placement, Scheduler, StartMode

from . import host
from .errors import about_input, input_error
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


class Sampler(OptionNode):
    DISPLAY_NAME = "X-Portrait Sampler"
    DESCRIPTION = ("Animates the reference with the motion and local patches, window by window (16-frame windows "
                   "overlapping by 'overlap'), with classifier-free guidance. Outputs one latent per driving "
                   "frame; decode with VAE Decode and the VAE of Load X-Portrait Model.")
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The animation, one picture per driving frame, still in the model's compressed form: connect "
                       "it to VAE Decode with the model's vae to get the frames.",)
    REQUIRED_OPTIONS = (*ANIMATION_OPTIONS, "seed", "steps", "cfg", "scheduler", *WINDOW_OPTIONS, "start", "strength")
    OPTIONAL_OPTIONS = (*PROMPT_OPTIONS, "lora", "init_video")

    def sample(self, model: Any, reference: Any, motion: Any, local_patches: Any, seed: int, steps: int,
               cfg: float, scheduler: Scheduler, window: int, overlap: int, window_placement: Placement,
               start: StartMode, denoise: float, positive: Any = None, negative: Any = None, lora: Any = (),
               init_images: Any = None) -> tuple[dict]:
        from xportrait_core.pipeline import Framing, SamplerHooks, SamplerOptions, encode_init_video, sample_video

        from .comfy_types import to_comfy_latent

        with about_input(Sampler, "steps"):
            options = SamplerOptions(steps=steps, cfg=cfg, seed=seed, scheduler=scheduler, window=window,
                                     overlap=overlap, placement=window_placement, start=start, strength=denoise)
        if (init_images is not None) != (start == "init_video"):
            raise input_error(Sampler, "start", f"init_images are used only with start 'init_video' (and it needs "
                              f"them); start is '{start}' and init_images are "
                              f"{'connected' if init_images is not None else 'not connected'}.")
        conditioning = prepared_conditioning(Sampler, model.model, reference, motion, local_patches, positive,
                                             negative)
        with about_input(Sampler, "overlap"):
            options.check_video(conditioning.num_frames)
        init_latents = None
        if init_images is not None:
            # Through the graph's VAE object, as the Reference node encodes (one VAE, one encode path).
            with about_input(Sampler, "init_images"):
                init_latents = encode_init_video(model.vae.encode, init_images, Framing(reference.resolution),
                                                 conditioning.num_frames, model.model.config.vae.scale_factor)
        seam = host.current()
        progress = seam.sampling_progress(options.steps_run)
        hooks = SamplerHooks(on_step=progress.step_done, on_progress=progress.rows_done,
                             should_interrupt=seam.check_interrupt)
        with networks_with_loras(Sampler, model, lora or (), conditioning, options.window) as networks:
            # The options and inputs are checked above; what sampling itself can still report is about the model
            # (its precision going non-finite, above all).
            with about_input(Sampler, "model"):
                result = sample_video(networks, conditioning, options, init_latents=init_latents,
                                      compile_mode=compile_mode(model), hooks=hooks)
        log.info("X-Portrait sampled %d frames; network evaluations %s", result.latents.shape[0],
                 result.evaluation_counts)
        return (to_comfy_latent(result.latents, networks.config.vae.scale_factor),)
