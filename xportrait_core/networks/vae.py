"""SD VAE (LDM ``AutoencoderKL`` key names under ``first_stage_model.``): images <-> latents.

Latents are ``scale_factor * z`` (0.18215 for SD1.5). The encoder gives a diagonal Gaussian; the
original SAMPLES it for every image it encodes (mean + std * noise), which :meth:`encode` reproduces
when given noise, while ``sample=False`` returns the mean (our default for the reference).
"""
from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention
from .config import VAEConfig
from .layer_ops import LayerOps, TorchLayers
from .unet_blocks import Upsample  # nearest x2 + 3x3 conv (key ``conv``), the same in the VAE

VAE_NORM_EPS = 1e-6
GROUPS = 32
LOGVAR_CLAMP = (-30.0, 20.0)   # DiagonalGaussianDistribution clamps the log-variance
ENCODE_CHUNK = 16              # default frames per VAE call (the original's chunking; bounds memory only)


def _norm(ops: LayerOps, channels: int) -> nn.GroupNorm:
    return ops.GroupNorm(GROUPS, channels, eps=VAE_NORM_EPS)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.norm1 = _norm(ops, in_channels)
        self.conv1 = ops.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(ops, out_channels)
        self.conv2 = ops.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = ops.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions with 1x1-conv q, k, v and proj_out."""

    def __init__(self, channels: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.backend = "sdpa"
        self.norm = _norm(ops, channels)
        self.q = ops.Conv2d(channels, channels, 1)
        self.k = ops.Conv2d(channels, channels, 1)
        self.v = ops.Conv2d(channels, channels, 1)
        self.proj_out = ops.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, channels, height * width).transpose(1, 2)

        out = attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)), 1, self.backend)
        return x + self.proj_out(out.transpose(1, 2).reshape(batch, channels, height, width))


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv without padding (LDM's asymmetric padding)."""

    def __init__(self, channels: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class MidBlock(nn.Module):
    def __init__(self, channels: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, ops)
        self.attn_1 = AttnBlock(channels, ops)
        self.block_2 = ResnetBlock(channels, channels, ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.conv_in = ops.Conv2d(cfg.image_channels, cfg.channels, 3, padding=1)
        self.down = nn.ModuleList()
        ch = cfg.channels
        for level, mult in enumerate(cfg.channel_mult):
            stage = nn.Module()
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(ch, cfg.channels * mult, ops))
                ch = cfg.channels * mult
            stage.block = nn.ModuleList(blocks)
            if level != len(cfg.channel_mult) - 1:
                stage.downsample = Downsample(ch, ops)
            self.down.append(stage)
        self.mid = MidBlock(ch, ops)
        self.norm_out = _norm(ops, ch)
        self.conv_out = ops.Conv2d(ch, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        # A stage is a bare Module holding its layers under LDM's key names: torch types them Tensor | Module.
        for stage in self.down:
            for block in cast(nn.ModuleList, stage.block):
                h = block(h)
            if hasattr(stage, "downsample"):
                h = cast(Downsample, stage.downsample)(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        ch = cfg.channels * cfg.channel_mult[-1]
        self.conv_in = ops.Conv2d(cfg.z_channels, ch, 3, padding=1)
        self.mid = MidBlock(ch, ops)
        stages: list[nn.Module] = []
        for level in reversed(range(len(cfg.channel_mult))):
            stage = nn.Module()
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(ch, cfg.channels * cfg.channel_mult[level], ops))
                ch = cfg.channels * cfg.channel_mult[level]
            stage.block = nn.ModuleList(blocks)
            if level != 0:
                stage.upsample = Upsample(ch, ops)
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = _norm(ops, ch)
        self.conv_out = ops.Conv2d(ch, cfg.image_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for block in cast(nn.ModuleList, stage.block):
                h = block(h)
            if hasattr(stage, "upsample"):
                h = cast(Upsample, stage.upsample)(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg: VAEConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg, ops)
        self.decoder = Decoder(cfg, ops)
        self.quant_conv = ops.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.post_quant_conv = ops.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def _dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def encode_moments(self, images: torch.Tensor,
                       frames_per_call: int = ENCODE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] -> posterior mean and clamped log-variance (B, 4, H/8, W/8), encoded
        ``frames_per_call`` images at a time (bounds memory; the result does not depend on it)."""
        means, logvars = [], []
        for chunk in images.split(frames_per_call):
            moments = self.quant_conv(self.encoder(_cpu_channels_last(chunk.to(self._dtype()))))
            mean, logvar = moments.chunk(2, dim=1)
            means.append(mean)
            logvars.append(logvar.clamp(*LOGVAR_CLAMP))
        return torch.cat(means), torch.cat(logvars)

    def encode(self, images: torch.Tensor, noise: torch.Tensor | None = None,
               frames_per_call: int = ENCODE_CHUNK) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8): the posterior mean, or
        the sample mean + std * noise when ``noise`` (B, 4, H/8, W/8) is given (as the original)."""
        mean, logvar = self.encode_moments(images, frames_per_call)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise.to(mean)
        return self.config.scale_factor * z

    def decode(self, latents: torch.Tensor, frames_per_call: int = ENCODE_CHUNK) -> torch.Tensor:
        """scaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w), nominally [-1, 1], not clamped."""
        images = []
        for chunk in latents.split(frames_per_call):
            z = _cpu_channels_last(chunk.to(self._dtype())) / self.config.scale_factor
            images.append(self.decoder(self.post_quant_conv(z)))
        return torch.cat(images)


def _cpu_channels_last(images: torch.Tensor) -> torch.Tensor:
    """On the CPU, the channels-last layout: oneDNN's convolutions run it faster (docs/performance.md). Elsewhere
    unchanged."""
    if images.device.type != "cpu":
        return images
    return images.contiguous(memory_format=torch.channels_last)
