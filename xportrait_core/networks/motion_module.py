"""AnimateDiff "Vanilla" temporal motion module, as X-Portrait places it in the UNet.

Per spatial position, the 16 frames of a window attend to each other:
GroupNorm(32, eps 1e-6) per frame -> tokens (B*F, H*W, C) -> Linear proj_in -> one transformer block
[two temporal self-attentions, each x = attn(LayerNorm(x) + pe) + x, then x = GEGLU-FF(LayerNorm(x)) + x]
-> Linear proj_out -> + input. ``pe`` is the sinusoidal table pe[p, 2i] = sin(p / 10000^(2i/C)),
pe[p, 2i+1] = cos(...), added to the normed input so queries, keys and values all see the frame position.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..options import MAX_WINDOW
from .layer_ops import LayerOps, TorchLayers
from .spatial_transformer import AttentionLayers, FeedForward

MOTION_NORM_EPS = 1e-6
GROUPS = 32
PE_MAX_LEN = MAX_WINDOW      # temporal_position_encoding_max_len of the original config: the longest window
ATTENTIONS_PER_BLOCK = 2     # attention_block_types: [Temporal_Self, Temporal_Self]
PE_BASE = 10000.0


def sinusoidal_position_table(max_len: int, channels: int) -> torch.Tensor:
    """(1, max_len, C) table: sin at even channels, cos at odd channels."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(PE_BASE) / channels))
    table = torch.zeros(1, max_len, channels)
    table[0, :, 0::2] = torch.sin(position * inv_freq)
    table[0, :, 1::2] = torch.cos(position * inv_freq)
    return table


class PositionalEncoding(nn.Module):
    pe: torch.Tensor  # (1, max_len, C) buffer

    def __init__(self, channels: int, max_len: int = PE_MAX_LEN) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_position_table(max_len, channels))


class TemporalAttention(AttentionLayers):
    """Self-attention over the frame axis (to_q/k/v without bias, to_out.0 with bias), with the frame
    position table added to its input."""

    def __init__(self, channels: int, heads: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__(channels, channels, heads, channels // heads, ops)
        self.pos_encoder = PositionalEncoding(channels)

    def forward(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        """tokens (B*F, N, C) -> (B*F, N, C); attention runs over F for each of the B*N positions."""
        batch_frames, positions, channels = tokens.shape
        videos = batch_frames // frames
        seq = tokens.reshape(videos, frames, positions, channels).permute(0, 2, 1, 3)
        seq = seq.reshape(videos * positions, frames, channels)
        seq = seq + self.pos_encoder.pe[:, :frames].to(seq.device, seq.dtype)
        out = self.attend(seq)
        out = out.reshape(videos, positions, frames, channels).permute(0, 2, 1, 3)
        return out.reshape(batch_frames, positions, channels)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, channels: int, heads: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            TemporalAttention(channels, heads, ops) for _ in range(ATTENTIONS_PER_BLOCK))
        self.norms = nn.ModuleList(ops.LayerNorm(channels) for _ in range(ATTENTIONS_PER_BLOCK))
        self.ff = FeedForward(channels, ops)
        self.ff_norm = ops.LayerNorm(channels)

    def forward(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        for attend, norm in zip(self.attention_blocks, self.norms):
            tokens = attend(norm(tokens), frames) + tokens
        return self.ff(self.ff_norm(tokens)) + tokens


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.norm = ops.GroupNorm(GROUPS, channels, eps=MOTION_NORM_EPS)
        self.proj_in = ops.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, ops)])
        self.proj_out = ops.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B*F, C, H, W) -> same shape."""
        batch_frames, channels, height, width = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(batch_frames, height * width, channels)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, frames)
        tokens = self.proj_out(tokens)
        return tokens.reshape(batch_frames, height, width, channels).permute(0, 3, 1, 2) + x


class MotionModule(nn.Module):
    """VanillaTemporalModule: holds ``temporal_transformer`` (the checkpoint's key level)."""

    def __init__(self, channels: int, heads: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, ops)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        if x.shape[0] % frames:
            raise ValueError(f"motion modules need a batch that is a multiple of {frames} frames "
                             f"(one or more windows), got {x.shape[0]}")
        return self.temporal_transformer(x, frames)
