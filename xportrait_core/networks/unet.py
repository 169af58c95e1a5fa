"""The main X-Portrait UNet: SD1.5 UNet + 20 temporal motion modules + reference-bank reading +
ControlNet residual inputs (LDM key names under ``model.diffusion_model.``)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .config import UNetConfig
from .motion_module import MotionModule
from .reference_attention import BankReader
from .unet_blocks import GROUPS, RESBLOCK_NORM_EPS, GroupNorm32, TimeEmbedding
from .unet_layout import build_input_blocks, build_middle_block, build_output_blocks

WINDOW_FRAMES = 16  # the motion modules were trained on 16-frame windows


class MotionUNet(nn.Module):
    """Motion modules follow every input block that holds a ResBlock (1, 2, 4, 5, 7, 8, 10, 11 for
    SD1.5) and every output block, the latter AFTER the block's Upsample (unlike diffusers'
    AnimateDiff). Skips are taken after the motion module."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.time_embed = TimeEmbedding(cfg.model_channels)
        self.input_blocks, skip_channels, res_blocks = build_input_blocks(cfg)
        self.middle_block = build_middle_block(cfg)
        self.output_blocks, output_channels = build_output_blocks(cfg, skip_channels)
        self.out = nn.Sequential(GroupNorm32(GROUPS, cfg.model_channels, eps=RESBLOCK_NORM_EPS), nn.SiLU(),
                                 nn.Conv2d(cfg.model_channels, cfg.out_channels, 3, padding=1))
        self._motion_after_input = {block: n for n, block in enumerate(res_blocks)}
        self.input_blocks_motion_module = nn.ModuleList(
            nn.ModuleList([MotionModule(skip_channels[block], cfg.motion_heads)]) for block in res_blocks)
        self.output_blocks_motion_module = nn.ModuleList(
            nn.ModuleList([MotionModule(ch, cfg.motion_heads)]) for ch in output_channels)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                bank: BankReader | None = None,
                control_residuals: Sequence[Sequence[torch.Tensor]] = (),
                frames: int = WINDOW_FRAMES) -> torch.Tensor:
        """x (N, 4, h, w) with N = videos * frames; timesteps (N,); context (N or 1, 77, C);
        bank: the appearance bank to read (None: plain self-attention, the unconditional pass);
        control_residuals: one list of 13 residuals (12 input blocks + middle) per ControlNet,
        each added in the given order. Returns eps (N, 4, h, w)."""
        emb = self.time_embed(timesteps)
        skips = []
        h = x
        for index, block in enumerate(self.input_blocks):
            h = block(h, emb, context, bank)
            if index in self._motion_after_input:
                h = self.input_blocks_motion_module[self._motion_after_input[index]][0](h, frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, bank)
        for residuals in control_residuals:
            h = h + residuals[-1]
        for index, block in enumerate(self.output_blocks):
            skip = skips.pop()
            for residuals in control_residuals:
                skip = skip + residuals[-2 - index]
            h = block(torch.cat([h, skip], dim=1), emb, context, bank)
            h = self.output_blocks_motion_module[index][0](h, frames)
        return self.out(h)
