"""LDM UNet building blocks (openaimodel.py key names): time embedding, ResBlock, down/upsampling."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

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


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 and cast back: keeps fp16/bf16 ResBlocks from losing precision."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class ResBlock(nn.Module):
    """in_layers (norm, SiLU, 3x3 conv) + emb_layers (SiLU, linear) -> out_layers (norm, SiLU, dropout,
    3x3 conv) + skip (identity or 1x1 conv when the width changes)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(GROUPS, channels, eps=RESBLOCK_NORM_EPS), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(GROUPS, out_channels, eps=RESBLOCK_NORM_EPS),
                                        nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """3x3 conv with stride 2 (key ``op``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimeEmbedding(nn.Sequential):
    """time_embed.0 (C -> 4C), SiLU, time_embed.2 (4C -> 4C)."""

    def __init__(self, model_channels: int) -> None:
        emb = model_channels * 4
        super().__init__(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.model_channels = model_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        t_emb = timestep_embedding(timesteps, self.model_channels).to(self[0].weight.dtype)
        return super().forward(t_emb)
