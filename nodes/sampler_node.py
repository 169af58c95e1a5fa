"""The X-Portrait Sampler node: reference + motion + local patches -> LATENT frames for VAE Decode."""
from __future__ import annotations

import contextlib
import logging
from typing import Any

from . import host
from .errors import XPortraitInputError, about_input, input_error
from .types import CATEGORY, LORA, MODEL, REFERENCE

log = logging.getLogger(__name__)

NODE = "X-Portrait Sampler"
MAX_SEED = 0xFFFFFFFFFFFFFFFF
MAX_STEPS = 1000  # the DDPM schedule has 1000 timesteps
MAX_CFG = 30.0
WINDOW_STEP = 16  # the motion modules see windows of a multiple of 16 frames
MAX_WINDOW = 64
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
    OUTPUT_TOOLTIPS = ("One latent per driving frame (frames as the batch), unscaled like ComfyUI's SD1.5 latents.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from xportrait_core.sampling.sampler import DEFAULT_CFG, DEFAULT_OVERLAP, DEFAULT_STEPS, DEFAULT_WINDOW

        choices = _sampler_choices()
        return {
            "required": {
                "model": (MODEL, {}),
                "reference": (REFERENCE, {}),
                "motion": ("IMAGE", {"tooltip": "Aligned driving frames from Motion Control."}),
                "local_patches": ("IMAGE", {"tooltip": "Local patch frames from Local Patches."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True}),
                "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": MAX_STEPS}),
                "cfg": ("FLOAT", {"default": DEFAULT_CFG, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance scale; 1 skips the unconditional pass (LCM: 1-2)."}),
                "scheduler": (choices["scheduler"], {"default": "ddim", "tooltip": "ddim is the original's; "
                              "lcm needs an LCM-LoRA and few steps."}),
                "window": ("INT", {"default": DEFAULT_WINDOW, "min": WINDOW_STEP, "max": MAX_WINDOW,
                                   "step": WINDOW_STEP, "tooltip": "Frames denoised together."}),
                "overlap": ("INT", {"default": DEFAULT_OVERLAP, "min": 0, "max": MAX_WINDOW - 1,
                                    "tooltip": "Frames shared by neighbouring windows (averaged)."}),
                "window_placement": (choices["placement"], {"default": "random", "tooltip": "random: the "
                                     "original's wrap-around windows at a new offset every step; fixed: the "
                                     "same windows every step."}),
                "start": (choices["start"], {"default": "reference", "tooltip": "reference: the source latent "
                          "noised (the original); noise: pure noise; init_video: the init_images noised."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "Below 1 keeps more of the start (reference or init video)."}),
            },
            "optional": {
                "positive": ("CONDITIONING", {"tooltip": "Text for the conditional pass; default the empty "
                             "prompt from the checkpoint's text encoder."}),
                "negative": ("CONDITIONING", {"tooltip": "Text for the unconditional pass; default the empty "
                             "prompt."}),
                "lora": (LORA, {}),
                "init_images": ("IMAGE", {"tooltip": "Another video to start from (start 'init_video'), one "
                                "frame per driving frame."}),
            },
        }

    def sample(self, model: Any, reference: Any, motion: Any, local_patches: Any, seed: int, steps: int,
               cfg: float, scheduler: str, window: int, overlap: int, window_placement: str, start: str,
               denoise: float, positive: Any = None, negative: Any = None, lora: Any = (),
               init_images: Any = None) -> tuple[dict]:
        from .comfy_types import SamplingSetup
        from xportrait_core.sampling.sampler import SamplerOptions

        options = SamplerOptions(steps=steps, cfg=cfg, seed=seed, scheduler=scheduler, window=window,
                                 overlap=overlap, placement=window_placement, start=start, strength=denoise)
        _check_options(options)
        networks = model.model
        setup = SamplingSetup(networks, reference)
        with about_input(NODE, "motion"):
            setup.add_hints(motion, local_patches)
        steps_run = _check_options(options, setup.frames)
        with about_input(NODE, "positive"):
            context = setup.context(positive, "positive conditioning")
        with about_input(NODE, "negative"):
            uncond_context = setup.context(negative, "negative conditioning")
        init_latents = None
        if init_images is not None or start == "init_video":
            if start != "init_video" or init_images is None:
                raise XPortraitInputError(f"{NODE}, input 'start': init_images are used only with start "
                                          f"'init_video' (and it needs them); start is '{start}' and init_images "
                                          f"are {'connected' if init_images is not None else 'not connected'}.")
            with host.loaded(model), about_input(NODE, "init_images"):
                init_latents = setup.init_latents(init_images)
        progress = self._progress(setup, options, steps_run)
        conditioning = setup.conditioning(context, uncond_context)
        return (self._run(model, conditioning, options, init_latents, progress, lora or ()),)

    @staticmethod
    def _progress(setup: Any, options: Any, steps_run: int) -> Any:
        from .comfy_types import windows_per_step

        with about_input(NODE, "overlap"):
            windows = windows_per_step(setup.frames, options)
        return host.SamplingProgress(steps_run, windows)

    @staticmethod
    def _run(model: Any, conditioning: Any, options: Any, init_latents: Any, progress: Any, loras: tuple) -> dict:
        from .comfy_types import to_comfy_latent
        from xportrait_core.pipeline import lora_applied
        from xportrait_core.sampling.sampler import SamplerHooks, sample

        hooks = SamplerHooks(on_step=progress.step_done, on_window=progress.window_done,
                             should_interrupt=host.check_interrupt)
        with host.loaded(model) as networks, contextlib.ExitStack() as merged:
            for choice in loras:
                with about_input(NODE, "lora"):
                    merged.enter_context(lora_applied(networks, choice.path, choice.strength))
            # The options and inputs are checked above; what sampling itself can still report is about the model
            # (its precision going non-finite, above all).
            with about_input(NODE, "model"):
                result = sample(networks, conditioning, options, init_latents=init_latents, hooks=hooks)
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
