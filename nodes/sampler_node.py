"""The X-Portrait Sampler node: reference + motion + local patches -> LATENT frames for VAE Decode."""
from __future__ import annotations

import logging
from typing import Any

from . import host
from .errors import XPortraitInputError, about_input, input_error
from .sampling_inputs import (
    MAX_CFG,
    animation_inputs,
    networks_with_loras,
    prepared_conditioning,
    prompt_inputs,
    sampling_model,
    window_inputs,
)
from .types import CATEGORY, LORA

log = logging.getLogger(__name__)

NODE = "X-Portrait Sampler"
MAX_SEED = 0xFFFFFFFFFFFFFFFF
MAX_STEPS = 1000  # the DDPM schedule has 1000 timesteps
# The node input that sets each SamplerOptions field, so that an error names what the user can change.
INPUT_OF_OPTION = {"steps": "steps", "cfg": "cfg", "seed": "seed", "scheduler": "scheduler", "window": "window",
                   "overlap": "overlap", "placement": "window_placement", "start": "start", "strength": "denoise"}


def _sampler_choices() -> dict[str, list[str]]:
    from xportrait_core.sampling.sampler import START_MODES
    from xportrait_core.sampling.schedulers import SCHEDULERS
    from xportrait_core.sampling.windows import PLACEMENTS

    return {"scheduler": list(SCHEDULERS), "placement": list(PLACEMENTS), "start": list(START_MODES)}


class Sampler:
    DESCRIPTION = ("Animates the reference with the motion and local patches, window by window (16-frame windows "
                   "overlapping by 'overlap'), with classifier-free guidance. Outputs one latent per driving "
                   "frame; decode with VAE Decode and the VAE of Load X-Portrait Model.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The animation, one picture per driving frame, still in the model's compressed form: connect "
                       "it to VAE Decode with the model's vae to get the frames.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from xportrait_core.sampling.sampler import DEFAULT_CFG, DEFAULT_STEPS

        choices = _sampler_choices()
        return {
            "required": {
                **animation_inputs(),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "The random seed. The same seed with the same inputs gives the same "
                                 "animation; change it for a different take."}),
                "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": MAX_STEPS, "tooltip": "How many "
                                  "denoising steps. More is slower and can be cleaner: 30 as the original, 4-8 "
                                  "with an LCM-LoRA."}),
                "cfg": ("FLOAT", {"default": DEFAULT_CFG, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01,
                                  "tooltip": "How closely the result follows the portrait and the motion. 5 as the "
                                  "original; 1 is twice as fast; 1-2 with an LCM-LoRA."}),
                "scheduler": (choices["scheduler"], {"default": "ddim", "tooltip": "The denoising method. ddim as "
                              "the original; euler and dpmpp_2m are alternatives; lcm only with an LCM-LoRA and "
                              "few steps."}),
                **window_inputs(),
                "window_placement": (choices["placement"], {"default": "random", "tooltip": "Where the groups of "
                                     "frames start. random: somewhere new every step, so joins do not show (as "
                                     "the original); fixed: the same places every step."}),
                "start": (choices["start"], {"default": "reference", "tooltip": "What the animation starts from. "
                          "reference: the portrait (as the original); noise: nothing; init_video: the video on "
                          "init_images."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "How much is redrawn: 1 everything; lower keeps more of what "
                                      "start begins with (e.g. 0.6 with an init video)."}),
            },
            "optional": {
                **prompt_inputs(),
                "lora": (LORA, {"tooltip": "Connect X-Portrait LoRA to use a LoRA, e.g. the LCM-LoRA."}),
                "init_images": ("IMAGE", {"tooltip": "A video to start from (frames of Get Video Components), "
                                "used when start is init_video: one frame per driving frame."}),
            },
        }

    def sample(self, model: Any, reference: Any, motion: Any, local_patches: Any, seed: int, steps: int,
               cfg: float, scheduler: str, window: int, overlap: int, window_placement: str, start: str,
               denoise: float, positive: Any = None, negative: Any = None, lora: Any = (),
               init_images: Any = None) -> tuple[dict]:
        from xportrait_core.sampling.sampler import SamplerOptions

        options = SamplerOptions(steps=steps, cfg=cfg, seed=seed, scheduler=scheduler, window=window,
                                 overlap=overlap, placement=window_placement, start=start, strength=denoise)
        _check_options(options)
        setup, conditioning = prepared_conditioning(NODE, model.model, reference, motion, local_patches, positive,
                                                    negative)
        steps_run = _check_options(options, setup.frames)
        init_latents = None
        if init_images is not None or start == "init_video":
            if start != "init_video" or init_images is None:
                raise XPortraitInputError(f"{NODE}, input 'start': init_images are used only with start "
                                          f"'init_video' (and it needs them); start is '{start}' and init_images "
                                          f"are {'connected' if init_images is not None else 'not connected'}.")
            with host.loaded(model), about_input(NODE, "init_images"):
                init_latents = setup.init_latents(init_images)
        progress = host.SamplingProgress(steps_run)
        return (self._run(model, conditioning, options, init_latents, progress, lora or ()),)

    @staticmethod
    def _run(model: Any, conditioning: Any, options: Any, init_latents: Any, progress: Any, loras: tuple) -> dict:
        from .comfy_types import to_comfy_latent
        from xportrait_core.sampling.sampler import SamplerHooks, sample

        hooks = SamplerHooks(on_step=progress.step_done, on_progress=progress.rows_done,
                             should_interrupt=host.check_interrupt)
        with networks_with_loras(NODE, model, loras, conditioning, options.window) as networks:
            # The options and inputs are checked above; what sampling itself can still report is about the model
            # (its precision going non-finite, above all).
            with about_input(NODE, "model"):
                result = sample(sampling_model(model, networks), conditioning, options, init_latents=init_latents,
                                hooks=hooks)
        log.info("X-Portrait sampled %d frames; network evaluations %s", result.latents.shape[0],
                 result.evaluation_counts)
        return to_comfy_latent(result.latents, networks.config.vae.scale_factor)


def _check_options(options: Any, frames: int | None = None) -> int:
    """The steps the scheduler will run, or an error naming the node input of the first option that cannot work."""
    from xportrait_core.sampling.option_checks import SamplerOptionError, check_sampler_options

    try:
        return check_sampler_options(options, frames)
    except SamplerOptionError as error:
        raise input_error(NODE, INPUT_OF_OPTION.get(error.option, error.option), error.detail) from error
