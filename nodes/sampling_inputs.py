"""What the X-Portrait Sampler and the X-Portrait Guider share: the inputs they both declare, those inputs turned
into the core's conditioning, and the networks loaded for a run with the chosen LoRAs merged."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Sequence

from . import host
from .errors import about_input
from .types import MODEL, REFERENCE

log = logging.getLogger(__name__)

MAX_CFG = 30.0
WINDOW_STEP = 16  # the motion modules see windows of a multiple of 16 frames
MAX_WINDOW = 64


def animation_inputs() -> dict[str, tuple]:
    """The model and what it animates: the first required inputs of both nodes."""
    return {
        "model": (MODEL, {"tooltip": "Connect the model output of Load X-Portrait Model."}),
        "reference": (REFERENCE, {"tooltip": "Connect X-Portrait Reference: how the person looks."}),
        "motion": ("IMAGE", {"tooltip": "Connect the motion output of X-Portrait Motion Control: the head "
                   "motion to follow."}),
        "local_patches": ("IMAGE", {"tooltip": "Connect X-Portrait Local Patches: the eye and mouth "
                          "movements to follow."}),
    }


def window_inputs() -> dict[str, tuple]:
    from xportrait_core.sampling.sampler import DEFAULT_OVERLAP, DEFAULT_WINDOW

    return {
        "window": ("INT", {"default": DEFAULT_WINDOW, "min": WINDOW_STEP, "max": MAX_WINDOW, "step": WINDOW_STEP,
                           "tooltip": "How many frames are made together. 16 as the model was trained; larger "
                           "uses more GPU memory."}),
        "overlap": ("INT", {"default": DEFAULT_OVERLAP, "min": 0, "max": MAX_WINDOW - 1,
                            "tooltip": "How many frames neighbouring groups of frames share, for smooth joins in "
                            "long videos."}),
    }


def prompt_inputs() -> dict[str, tuple]:
    return {
        "positive": ("CONDITIONING", {"tooltip": "Optional text prompt (CLIP Text Encode with a Stable "
                     "Diffusion 1.5 CLIP). Without it no text is used, as the original."}),
        "negative": ("CONDITIONING", {"tooltip": "Optional text to steer away from (CLIP Text Encode with "
                     "a Stable Diffusion 1.5 CLIP)."}),
    }


def prepared_conditioning(node: str, networks: Any, reference: Any, motion: Any, local_patches: Any,
                          positive: Any = None, negative: Any = None) -> tuple[Any, Any]:
    """(SamplingSetup, Conditioning) from the reference, the motion and local-patch frames and the optional
    prompts; errors name the node input to fix."""
    from .comfy_types import SamplingSetup

    setup = SamplingSetup(networks, reference)
    with about_input(node, "motion"):
        setup.add_hints(motion, local_patches)
    with about_input(node, "positive"):
        context = setup.context(positive, "positive conditioning")
    with about_input(node, "negative"):
        uncond_context = setup.context(negative, "negative conditioning")
    return setup, setup.conditioning(context, uncond_context)


@contextlib.contextmanager
def networks_with_loras(node: str, model: Any, loras: Sequence[Any], conditioning: Any,
                        window: int) -> Iterator[Any]:
    """The networks on the sampling device (`host.loaded`, with room for the activations of one window's two
    passes over this conditioning) with every LoRA merged, for the block; the weights are restored when it ends,
    by an error or Cancel too."""
    from xportrait_core.pipeline import lora_applied

    activations = model.model.window_activation_bytes(conditioning.latent_size, window, window,
                                                      len(conditioning.reference_latents))
    with host.loaded(model, activations) as networks, contextlib.ExitStack() as merged:
        for choice in loras:
            with about_input(node, "lora"):
                merged.enter_context(lora_applied(networks, choice.path, choice.strength))
        yield networks


def sampling_model(managed: Any, networks: Any) -> Any:
    """What to sample with: the networks, or their CUDA-graphed wrapper when the loader asked for cuda_graphs and
    the weights are all on the GPU (a low-VRAM load streams weights, which graphs cannot record: eager then)."""
    from xportrait_core.model.compilation import accelerated

    mode = managed.compile_mode
    if mode == "cuda_graphs" and not host.fully_loaded(managed):
        log.info("cuda_graphs skipped for this run: the model is only partly on the GPU")
        mode = "off"
    return accelerated(networks, mode)
