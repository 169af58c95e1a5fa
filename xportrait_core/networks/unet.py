"""The main X-Portrait UNet: SD1.5 UNet + 20 temporal motion modules + reference-bank reading +
ControlNet residual inputs (LDM key names under ``model.diffusion_model.``)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
import torch.nn as nn

from ..options import TRAINED_WINDOW
from .config import UNetConfig
from .layer_ops import LayerOps, TorchLayers
from .motion_module import MotionModule
from .reference_attention import BankReader
from .unet_blocks import TimeEmbedding, float32_norm, group_norm_32
from .unet_layout import build_input_blocks, build_middle_block, build_output_blocks


class MotionUNet(nn.Module):
    """Motion modules follow every input block that holds a ResBlock (1, 2, 4, 5, 7, 8, 10, 11 for
    SD1.5) and every output block, the latter AFTER the block's Upsample (unlike diffusers'
    AnimateDiff). Skips are taken after the motion module."""

    def __init__(self, cfg: UNetConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.config = cfg
        self.time_embed = TimeEmbedding(cfg.model_channels, ops)
        self.input_blocks, skip_channels, res_blocks = build_input_blocks(cfg, ops)
        self.middle_block = build_middle_block(cfg, ops)
        self.output_blocks, output_channels = build_output_blocks(cfg, skip_channels, ops)
        self.out = nn.Sequential(group_norm_32(ops, cfg.model_channels), nn.SiLU(),
                                 ops.Conv2d(cfg.model_channels, cfg.out_channels, 3, padding=1))
        self._motion_after_input = {block: n for n, block in enumerate(res_blocks)}
        self.input_blocks_motion_module = nn.ModuleList(
            nn.ModuleList([MotionModule(skip_channels[block], cfg.motion_heads, ops)]) for block in res_blocks)
        self.output_blocks_motion_module = nn.ModuleList(
            nn.ModuleList([MotionModule(ch, cfg.motion_heads, ops)]) for ch in output_channels)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                bank: BankReader | None = None,
                control_residuals: Sequence[Iterable[torch.Tensor]] = (),
                frames: int = TRAINED_WINDOW) -> torch.Tensor:
        """x (N, 4, h, w) with N = videos * frames (the motion modules see each `frames` consecutive rows as one
        video); timesteps (N,); context (G, 77, C), one per group of N/G
        consecutive rows (G = 1: shared); bank: the appearance bank to read (None: plain self-attention, the
        unconditional pass; its ``rows`` limit reading to the leading rows); control_residuals: per ControlNet,
        its 13 residuals (12 input blocks + middle; a list, or an iterator that computes them one at a time, see
        `ControlNet.residuals`), added in the given order to the leading rows they were computed for (all N, or
        the conditional rows of a batch that also holds the unconditional pass). Residuals are added in place into
        the skips and the middle output as soon as the encoder has made them, so no residual set is held whole
        (the sums are the original's `skip + pose + local`, in that order). Returns eps (N, 4, h, w)."""
        emb = self.time_embed(timesteps, x.dtype)
        skips = []
        h = x
        for index, block in enumerate(self.input_blocks):
            h = block(h, emb, context, bank)
            if index in self._motion_after_input:
                h = _motion_module(self.input_blocks_motion_module[self._motion_after_input[index]])(h, frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, bank)
        targets = skips + [h]
        for residuals in control_residuals:
            given = iter(residuals)
            for target in targets:
                add_to_leading_rows(target, next(given))
            if next(given, None) is not None:  # also runs a lazy ControlNet to its end
                raise ValueError(f"a ControlNet gave more than the {len(targets)} residuals the UNet takes")
        for index, block in enumerate(self.output_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, bank)
            h = _motion_module(self.output_blocks_motion_module[index])(h, frames)
        norm, act, conv = self.out
        return conv(act(float32_norm(norm, h)))


def _motion_module(holder: nn.Module) -> MotionModule:
    """The motion module in its one-element ModuleList (the original's keys, ``*_motion_module.N.0.*``); torch types
    a ModuleList's item a Module."""
    return cast(MotionModule, cast(nn.ModuleList, holder)[0])


def add_to_leading_rows(target: torch.Tensor, residual: torch.Tensor) -> None:
    """target[:n] += residual (n, ...), in place: the targets are fresh activations nobody else reads (an
    input block's output already consumed by the next block, the middle output), and a copy would cost a whole
    activation. n < len(target) when the batch also holds the unconditional pass, which gets no control."""
    target[: residual.shape[0]] += residual
