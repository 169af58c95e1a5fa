"""ControlNet (pose and local-patch nets): encoder copy + hint block + zero convs, no motion modules,
no bank. Fed the window's noisy latents x_t (nothing concatenated); the hint features are added once,
after input block 0."""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import HINT_CHANNELS, UNetConfig
from .unet_layout import EncoderStem, UNetBlock


class ControlNet(EncoderStem):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.config = cfg
        skip_channels = self.build_stem(cfg, HINT_CHANNELS)
        self.zero_convs = nn.ModuleList(UNetBlock([nn.Conv2d(ch, ch, 1)]) for ch in skip_channels)
        middle_ch = cfg.model_channels * cfg.channel_mult[-1]
        self.middle_block_out = UNetBlock([nn.Conv2d(middle_ch, middle_ch, 1)])

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor,
                context: torch.Tensor) -> list[torch.Tensor]:
        """x (N, 4, h, w), hint (N, 3, 8h, 8w) in [-1, 1] -> 13 residuals: zero_convs.i(input block i)
        for the 12 input blocks, then middle_block_out(middle block)."""
        emb = self.time_embed(timesteps)
        hint_features = self.input_hint_block(hint)
        residuals = []
        h = x
        for index, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if index == 0:
                h = h + hint_features
            residuals.append(zero_conv[0](h))
        h = self.middle_block(h, emb, context)
        residuals.append(self.middle_block_out[0](h))
        return residuals
