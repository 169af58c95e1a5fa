"""ControlNet (pose and local-patch nets): encoder copy + hint block + zero convs, no motion modules,
no bank. Fed the window's noisy latents x_t (nothing concatenated); the hint features are added once,
after input block 0.

The hint block depends on the hint image alone - not on the latents, the timestep or the text - so a sampling run
can compute each frame's features once (`hint_features`) and pass them instead of the image at every step."""
from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch
import torch.nn as nn

from .config import HINT_CHANNELS, UNetConfig
from .layer_ops import LayerOps, TorchLayers
from .unet_layout import EncoderStem, UNetBlock


class ControlNet(EncoderStem):
    def __init__(self, cfg: UNetConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.config = cfg
        skip_channels = self.build_stem(cfg, HINT_CHANNELS, ops)
        self.zero_convs = nn.ModuleList(UNetBlock([ops.Conv2d(ch, ch, 1)]) for ch in skip_channels)
        middle_ch = cfg.model_channels * cfg.channel_mult[-1]
        self.middle_block_out = UNetBlock([ops.Conv2d(middle_ch, middle_ch, 1)])

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor,
                context: torch.Tensor) -> list[torch.Tensor]:
        """x (N, 4, h, w), hint (N, 3, 8h, 8w) in [-1, 1] (or its `hint_features`) -> 13 residuals:
        zero_convs.i(input block i) for the 12 input blocks, then middle_block_out(middle block)."""
        return list(self.residuals(x, hint, timesteps, context))

    def hint_features(self, hint: torch.Tensor) -> torch.Tensor:
        """The hint block's output (N, C, h, w) for hint images (N, 3, 8h, 8w); features pass through unchanged."""
        return self.input_hint_block(hint) if hint.shape[1] == HINT_CHANNELS else hint

    def residuals(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor,
                  context: torch.Tensor) -> Iterator[torch.Tensor]:
        """The 13 residuals of `forward`, one at a time: a consumer that adds each into its target as it comes
        never holds all 13 (the UNet does, see `MotionUNet.forward`)."""
        emb = self.time_embed(timesteps, x.dtype)
        hint_features = self.hint_features(hint)
        h = x
        for index, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if index == 0:
                h = h + hint_features
                del hint_features
            yield cast(UNetBlock, zero_conv)[0](h)  # torch types a ModuleList's item a Module
        h = self.middle_block(h, emb, context)
        yield self.middle_block_out[0](h)
