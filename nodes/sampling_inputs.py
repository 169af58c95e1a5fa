"""What the X-Portrait Sampler and the X-Portrait Guider share: their common inputs, those inputs turned into the
core's conditioning, and the networks loaded for a run with the chosen LoRAs applied."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from xportrait_core.options import CompileMode

from . import host
from .errors import about_input
from .node_inputs import OptionNode

log = logging.getLogger(__name__)

ANIMATION_OPTIONS = ("model", "reference", "motion", "local_patches")  # the first inputs of both nodes
WINDOW_OPTIONS = ("window", "overlap", "placement")
PROMPT_OPTIONS = ("positive", "negative")


def prepared_conditioning(node: type[OptionNode], networks: Any, reference: Any, motion: Any, local_patches: Any,
                          positive: Any = None, negative: Any = None) -> Any:
    """The core's Conditioning from the reference, the motion and local-patch frames and the optional prompts;
    errors name the node input to fix."""
    from xportrait_core.pipeline import build_conditioning, hints_of_images

    from .comfy_types import context_from_conditioning

    with about_input(node, "motion"):
        pose = hints_of_images(motion, "motion")
    with about_input(node, "local_patches"):
        local = hints_of_images(local_patches, "local patches")
    contexts = []
    for input_name, conditioning in (("positive", positive), ("negative", negative)):
        with about_input(node, input_name):
            contexts.append(None if conditioning is None else context_from_conditioning(
                conditioning, networks.config.unet.context_dim, f"{input_name} conditioning"))
    with about_input(node, "motion"):
        return build_conditioning(networks, reference, pose, local, *contexts)


@contextlib.contextmanager
def networks_with_loras(node: type[OptionNode], model: Any, loras: Sequence[Any], conditioning: Any,
                        window: int) -> Iterator[Any]:
    """The networks on the sampling device with every LoRA applied (the host's `loaded`, with room for the
    activations of one window's two passes over this conditioning), for the block; the host restores the weights
    (standalone when the block ends, by an error or Cancel too; ComfyUI from its backups when the model is next
    loaded without these patches)."""
    activations = model.model.window_activation_bytes(conditioning.latent_size, window, window,
                                                      len(conditioning.reference_latents))
    with contextlib.ExitStack() as stack:
        with about_input(node, "lora"):
            networks = stack.enter_context(host.current().loaded(model, loras, activations))
        yield networks


def compile_mode(managed: Any) -> CompileMode:
    """How to run the networks: the loader's compile choice, except cuda_graphs when the weights are not all on the GPU
    (a low-VRAM load streams weights, which graphs cannot record: eager then)."""
    if managed.compile_mode == "cuda_graphs" and not host.current().fully_loaded(managed):
        log.info("cuda_graphs skipped for this run: the model is only partly on the GPU")
        return "off"
    return managed.compile_mode
