"""The appearance reference net: a UNet copy whose only product is the attention bank.

It has input, middle and output blocks but no ``out`` layer; its ``input_hint_block`` exists in the
checkpoint but the original never uses it (hint=None), so it is built only so the keys load.
"""
from __future__ import annotations

import torch

from .config import HINT_CHANNELS, UNetConfig
from .layer_ops import LayerOps, TorchLayers
from .reference_attention import BankWriter, ReferenceBank
from .unet_layout import EncoderStem, build_output_blocks


class AppearanceNet(EncoderStem):
    def __init__(self, cfg: UNetConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.config = cfg
        skip_channels = self.build_stem(cfg, HINT_CHANNELS, ops)
        self.output_blocks, _ = build_output_blocks(cfg, skip_channels, ops)

    def forward(self, reference_latents: torch.Tensor, timesteps: torch.Tensor,
                context: torch.Tensor) -> ReferenceBank:
        """reference_latents (B, 4, h, w), timesteps (B,), context (B or 1, 77, C) -> bank: one entry
        (B, tokens, C) per spatial transformer, in forward order. The net's own output is discarded."""
        writer = BankWriter()
        emb = self.time_embed(timesteps, reference_latents.dtype)
        skips = []
        h = reference_latents
        for block in self.input_blocks:
            h = block(h, emb, context, writer)
            skips.append(h)
        h = self.middle_block(h, emb, context, writer)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, writer)
        return writer.entries
