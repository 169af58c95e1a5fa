"""LDM UNet building blocks (openaimodel.py key names): time embedding, ResBlock, down/upsampling."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layer_ops import LayerOps, TorchLayers, mark_float32

GROUPS = 32
RESBLOCK_NORM_EPS = 1e-5  # LDM normalization(): GroupNorm32(32, eps=1e-5), computed in float32
MAX_PERIOD = 10000        # sinusoidal time embedding of the DDPM UNet


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [cos(t f_i), sin(t f_i)], f_i = exp(-ln(10000) i / (dim/2)); (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32,
                                                           device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def group_norm_32(ops: LayerOps, channels: int) -> nn.GroupNorm:
    """The ResBlock / UNet-output GroupNorm(32, eps 1e-5), whose parameters stay float32 (see `float32_norm`)."""
    return mark_float32(ops.GroupNorm(GROUPS, channels, eps=RESBLOCK_NORM_EPS))


def float32_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a float32-kept norm in float32 and cast back: keeps fp16/bf16 ResBlocks from losing precision
    (the original's GroupNorm32)."""
    return norm(x.float()).to(x.dtype)


class ResBlock(nn.Module):
    """in_layers (norm, SiLU, 3x3 conv) + emb_layers (SiLU, linear) -> out_layers (norm, SiLU, dropout,
    3x3 conv) + skip (identity or 1x1 conv when the width changes)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(group_norm_32(ops, channels), nn.SiLU(),
                                       ops.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(group_norm_32(ops, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        ops.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else ops.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        in_norm, in_act, in_conv = self.in_layers
        h = in_conv(in_act(float32_norm(in_norm, x)))
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        out_norm, out_act, _, out_conv = self.out_layers
        return self.skip_connection(x) + out_conv(out_act(float32_norm(out_norm, h)))


class Downsample(nn.Module):
    """3x3 conv with stride 2 (key ``op``)."""

    def __init__(self, channels: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.op = ops.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimeEmbedding(nn.Sequential):
    """time_embed.0 (C -> 4C), SiLU, time_embed.2 (4C -> 4C)."""

    def __init__(self, model_channels: int, ops: LayerOps = TorchLayers) -> None:
        emb = model_channels * 4
        super().__init__(ops.Linear(model_channels, emb), nn.SiLU(), ops.Linear(emb, emb))
        self.model_channels = model_channels

    def forward(self, timesteps: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """timesteps (B,) -> (B, 4C) in ``dtype``, the dtype the network computes in."""
        return super().forward(timestep_embedding(timesteps, self.model_channels).to(dtype))
