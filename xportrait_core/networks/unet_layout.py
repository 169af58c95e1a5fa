"""The LDM block layout shared by the main UNet, the appearance net and the ControlNets.

``input_blocks``, ``middle_block`` and ``output_blocks`` keep the original key names (``input_blocks.4.1``
is the spatial transformer after the first ResBlock of level 1, and so on), so checkpoints load without
conversion tables.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import UNetConfig
from .layer_ops import LayerOps, TorchLayers
from .reference_attention import BankReader, BankWriter
from .spatial_transformer import SpatialTransformer
from .unet_blocks import Downsample, ResBlock, TimeEmbedding, Upsample

Bank = BankWriter | BankReader | None


class UNetBlock(nn.ModuleList):
    """One LDM ``TimestepEmbedSequential``: layers applied in order, each given what it needs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor,
                bank: Bank = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, bank)
            else:
                x = layer(x)
        return x


def build_input_blocks(cfg: UNetConfig, ops: LayerOps = TorchLayers) -> tuple[nn.ModuleList, list[int], list[int]]:
    """Returns (input_blocks, output channels of every input block (the skips), indices of the input
    blocks that end with a ResBlock/transformer (the ones followed by a motion module))."""
    blocks = nn.ModuleList([UNetBlock([ops.Conv2d(cfg.in_channels, cfg.model_channels, 3, padding=1)])])
    skip_channels = [cfg.model_channels]
    res_block_indices = []
    ch = cfg.model_channels
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            out_ch = cfg.model_channels * mult
            layers: list[nn.Module] = [ResBlock(ch, cfg.time_embed_dim, out_ch, ops)]
            ch = out_ch
            if level in cfg.attention_levels:
                layers.append(SpatialTransformer(ch, cfg.num_heads, cfg.context_dim, cfg.transformer_depth, ops))
            res_block_indices.append(len(blocks))
            blocks.append(UNetBlock(layers))
            skip_channels.append(ch)
        if level != cfg.levels - 1:
            blocks.append(UNetBlock([Downsample(ch, ops)]))
            skip_channels.append(ch)
    return blocks, skip_channels, res_block_indices


def build_middle_block(cfg: UNetConfig, ops: LayerOps = TorchLayers) -> UNetBlock:
    ch = cfg.model_channels * cfg.channel_mult[-1]
    return UNetBlock([ResBlock(ch, cfg.time_embed_dim, ch, ops),
                      SpatialTransformer(ch, cfg.num_heads, cfg.context_dim, cfg.transformer_depth, ops),
                      ResBlock(ch, cfg.time_embed_dim, ch, ops)])


def build_output_blocks(cfg: UNetConfig, skip_channels: list[int],
                        ops: LayerOps = TorchLayers) -> tuple[nn.ModuleList, list[int]]:
    """Returns (output_blocks, output channels of each output block)."""
    skips = list(skip_channels)
    blocks = nn.ModuleList()
    out_channels = []
    ch = cfg.model_channels * cfg.channel_mult[-1]
    for level in reversed(range(cfg.levels)):
        for i in range(cfg.num_res_blocks + 1):
            out_ch = cfg.model_channels * cfg.channel_mult[level]
            layers: list[nn.Module] = [ResBlock(ch + skips.pop(), cfg.time_embed_dim, out_ch, ops)]
            ch = out_ch
            if level in cfg.attention_levels:
                layers.append(SpatialTransformer(ch, cfg.num_heads, cfg.context_dim, cfg.transformer_depth, ops))
            if level and i == cfg.num_res_blocks:
                layers.append(Upsample(ch, ops))
            blocks.append(UNetBlock(layers))
            out_channels.append(ch)
    return blocks, out_channels


class EncoderStem(nn.Module):
    """What the appearance net and the ControlNets share: time embedding, the (ControlNet-style) hint
    block, the input blocks and the middle block. Returns the input blocks' output widths."""

    def build_stem(self, cfg: UNetConfig, hint_channels: int, ops: LayerOps = TorchLayers) -> list[int]:
        self.time_embed = TimeEmbedding(cfg.model_channels, ops)
        self.input_hint_block = build_hint_block(cfg, hint_channels, ops)
        self.input_blocks, skip_channels, _ = build_input_blocks(cfg, ops)
        self.middle_block = build_middle_block(cfg, ops)
        return skip_channels


def build_hint_block(cfg: UNetConfig, hint_channels: int, ops: LayerOps = TorchLayers) -> nn.Sequential:
    """ControlNet input hint block: 8 3x3 convs 3->16->16->32->32->96->96->256->C with SiLU between;
    the 3rd, 5th and 7th convs have stride 2 (hint pixels -> latent cells, x8)."""
    widths = [hint_channels, 16, 16, 32, 32, 96, 96, 256, cfg.model_channels]
    strided = {2, 4, 6}  # 0-based conv numbers with stride 2
    layers: list[nn.Module] = []
    for n, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(ops.Conv2d(cin, cout, 3, padding=1, stride=2 if n in strided else 1))
        if n < len(widths) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)
