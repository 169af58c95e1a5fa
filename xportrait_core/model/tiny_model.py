"""Small random X-Portrait models in the real key layout, for tests, the demo and benchmarks.

A random model draws noise, not faces: it proves the plumbing (shapes, key names, the pipeline), not
the quality. The real weights are the original's ``model_state-415001.th``.
"""
from __future__ import annotations

import torch

from ..networks.config import TextEncoderConfig, UNetConfig, VAEConfig, XPortraitConfig
from ..networks.layer_ops import LayerOps, TorchLayers
from ..networks.motion_module import PositionalEncoding, sinusoidal_position_table
from .xportrait_model import XPortraitModel, ldm_schedule_buffers

# The golden data's tiny configuration: every key name of the real model, 32-wide.
TINY_CONFIG = XPortraitConfig(
    unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 1, 1), context_dim=32),
    vae=VAEConfig(channels=32, channel_mult=(1, 2, 1, 1)),
    text=TextEncoderConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128),
)

# A mid-size configuration for benchmarks, issue 11's "mid" (its exact widths are not recorded; these are SD1.5's
# proportions at a quarter to a fifth of the width, 136.7 M parameters against the "about 139 M"): UNet family
# 320 -> 64 channels, channel_mult (1, 2, 4, 4), attention at levels 0-2 (attention_resolutions 4, 2, 1), 2 ResBlocks
# per level, 8 heads; context / CLIP text width 768 -> 192 (3 heads of CLIP's 64, 12 layers, MLP 4x as ViT-L/14);
# VAE 128 -> 32 channels (the narrowest GroupNorm(32) allows), ch_mult (1, 2, 4, 4).
MID_CONFIG = XPortraitConfig(
    unet=UNetConfig(model_channels=64, channel_mult=(1, 2, 4, 4), context_dim=192),
    vae=VAEConfig(channels=32, channel_mult=(1, 2, 4, 4)),
    text=TextEncoderConfig(hidden_size=192, num_layers=12, num_heads=3, intermediate_size=768),
)


def build_random_model(config: XPortraitConfig = TINY_CONFIG, seed: int = 0,
                       ops: LayerOps = TorchLayers) -> XPortraitModel:
    """A model with PyTorch's default random initialisation (seeded), in eval mode, fp32, CPU."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = XPortraitModel(config, ops)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval().requires_grad_(False)


def build_random_model_on_device(config: XPortraitConfig, device: torch.device | str, seed: int = 0,
                                 ops: LayerOps = TorchLayers) -> XPortraitModel:
    """A model of any size with random weights made directly on ``device`` (the full 3 B-parameter model in
    seconds on a GPU, without a CPU copy): weights ~ N(0, 1/fan_in), so activations stay O(1) and half precision
    neither overflows nor underflows; norm scales 1, biases 0; buffers (schedule, position tables) exact. Eval
    mode, fp32. For benchmarks: it measures cost, not quality."""
    with torch.device("meta"):
        model = XPortraitModel(config, ops)
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if tensor.dim() > 1:
                tensor.normal_(0.0, tensor[0].numel() ** -0.5, generator=generator)
            else:
                tensor.fill_(1.0 if name.endswith("weight") else 0.0)
        for name, value in ldm_schedule_buffers().items():
            getattr(model, name).copy_(value)
        for module in model.modules():
            if isinstance(module, PositionalEncoding):
                module.pe.copy_(sinusoidal_position_table(module.pe.shape[1], module.pe.shape[2]))
        if model.cond_stage_model is not None:
            embeddings = model.cond_stage_model.transformer.text_model.embeddings
            embeddings.position_ids.copy_(torch.arange(embeddings.position_ids.shape[1])[None])
    return model.eval().requires_grad_(False)
