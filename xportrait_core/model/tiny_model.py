"""Small random X-Portrait models in the real key layout, for tests, the demo and benchmarks.

A random model draws noise, not faces: it proves the plumbing (shapes, key names, the pipeline), not
the quality. The real weights are the original's ``model_state-415001.th``.
"""
from __future__ import annotations

import torch

from ..networks.config import TextEncoderConfig, UNetConfig, VAEConfig, XPortraitConfig
from .xportrait_model import XPortraitModel

# The golden data's tiny configuration: every key name of the real model, 32-wide.
TINY_CONFIG = XPortraitConfig(
    unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 1, 1), context_dim=32),
    vae=VAEConfig(channels=32, channel_mult=(1, 2, 1, 1)),
    text=TextEncoderConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128),
)

# A mid-size configuration for benchmarks: the SD1.5 structure at a fifth of its width.
MID_CONFIG = XPortraitConfig(
    unet=UNetConfig(model_channels=64, channel_mult=(1, 2, 4, 4), context_dim=128),
    vae=VAEConfig(channels=32, channel_mult=(1, 2, 4, 4)),
    text=TextEncoderConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
)


def build_random_model(config: XPortraitConfig = TINY_CONFIG, seed: int = 0) -> XPortraitModel:
    """A model with PyTorch's default random initialisation (seeded), in eval mode, fp32, CPU."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = XPortraitModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval().requires_grad_(False)
