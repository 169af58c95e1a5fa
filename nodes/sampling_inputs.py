"""What the X-Portrait Sampler and the X-Portrait Guider share: their node inputs turned into the core's
conditioning, and the networks loaded for a run with the chosen LoRAs merged."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from . import host
from .errors import about_input


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
def networks_with_loras(node: str, model: Any, loras: Sequence[Any]) -> Iterator[Any]:
    """The networks on the sampling device (`host.loaded`) with every LoRA merged, for the block; the weights are
    restored when it ends, by an error or Cancel too."""
    from xportrait_core.pipeline import lora_applied

    with host.loaded(model) as networks, contextlib.ExitStack() as merged:
        for choice in loras:
            with about_input(node, "lora"):
                merged.enter_context(lora_applied(networks, choice.path, choice.strength))
        yield networks
