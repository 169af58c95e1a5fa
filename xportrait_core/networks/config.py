"""Network configurations, derived from a state dict's shapes.

The full SD1.5-sized checkpoint and the tiny golden model load through the same code: nothing here is
hard-coded to 320 channels. What the shapes cannot tell (head counts) has named defaults taken from the
original config and can be overridden.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

UNET_PREFIX = "model.diffusion_model."
APPEARANCE_PREFIX = "appearance_control_model."
POSE_PREFIX = "pose_control_model."
LOCAL_PREFIX = "local_pose_control_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."

SD15_UNET_HEADS = 8          # num_heads: 8 of the original config (a count, not a head width)
SD15_MOTION_HEADS = 8        # motion_module_kwargs.num_attention_heads
CLIP_HEAD_WIDTH = 64         # every OpenAI CLIP text tower uses 64-wide heads (ViT-L/14: 768 / 12)
LATENT_SCALE_FACTOR = 0.18215  # scale_factor of the SD1.5 VAE latents
HINT_CHANNELS = 3            # ControlNet hints are RGB images


@dataclass(frozen=True)
class UNetConfig:
    """Widths of the LDM UNet family (main UNet, appearance net, ControlNets share them)."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)  # levels with a spatial transformer after each ResBlock
    transformer_depth: int = 1
    context_dim: int = 768
    num_heads: int = SD15_UNET_HEADS
    motion_heads: int = SD15_MOTION_HEADS

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    @property
    def levels(self) -> int:
        return len(self.channel_mult)


@dataclass(frozen=True)
class VAEConfig:
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    image_channels: int = 3
    scale_factor: float = LATENT_SCALE_FACTOR


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 49408
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 77


@dataclass(frozen=True)
class XPortraitConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextEncoderConfig | None = field(default_factory=TextEncoderConfig)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor],
                        text_num_heads: int | None = None) -> XPortraitConfig:
        """Derive every width from the tensors' shapes. ``text_num_heads`` overrides the CLIP head
        count, which shapes cannot tell (default: hidden / 64, the CLIP convention)."""
        return cls(unet=unet_config_from_state_dict(state_dict, UNET_PREFIX),
                   vae=vae_config_from_state_dict(state_dict, VAE_PREFIX),
                   text=text_config_from_state_dict(state_dict, TEXT_PREFIX, text_num_heads))


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise KeyError(key)
    return tuple(state_dict[key].shape)


def _indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


def unet_config_from_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> UNetConfig:
    """LDM UNet widths: block 0 is the input conv; each level holds ``num_res_blocks`` ResBlocks and,
    except the last, one Downsample (``op``)."""
    p = re.escape(prefix)
    conv_in = _shape(state_dict, f"{prefix}input_blocks.0.0.weight")
    model_channels, in_channels = conv_in[0], conv_in[1]
    blocks = _indices(state_dict, rf"{p}input_blocks\.(\d+)\.")
    downsamples = [i for i in blocks if f"{prefix}input_blocks.{i}.0.op.weight" in state_dict]
    levels = len(downsamples) + 1
    num_res_blocks = (len(blocks) - 1 - len(downsamples)) // levels
    channel_mult, attention_levels = [], []
    block = 1
    for level in range(levels):
        out_ch = _shape(state_dict, f"{prefix}input_blocks.{block}.0.out_layers.3.weight")[0]
        channel_mult.append(out_ch // model_channels)
        if f"{prefix}input_blocks.{block}.1.proj_in.weight" in state_dict:
            attention_levels.append(level)
        block += num_res_blocks + (1 if level < levels - 1 else 0)
    first_attention = f"{prefix}input_blocks.1.1"
    depth = len(_indices(state_dict, rf"{re.escape(first_attention)}\.transformer_blocks\.(\d+)\."))
    context_key = f"{first_attention}.transformer_blocks.0.attn2.to_k.weight"
    context_dim = _shape(state_dict, context_key)[1] if context_key in state_dict else 768
    out_key = f"{prefix}out.2.weight"
    out_channels = _shape(state_dict, out_key)[0] if out_key in state_dict else in_channels
    return UNetConfig(in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
                      channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                      attention_levels=tuple(attention_levels), transformer_depth=max(depth, 1),
                      context_dim=context_dim)


def vae_config_from_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> VAEConfig:
    channels = _shape(state_dict, f"{prefix}encoder.conv_in.weight")[0]
    p = re.escape(prefix)
    levels = _indices(state_dict, rf"{p}encoder\.down\.(\d+)\.")
    mult = tuple(_shape(state_dict, f"{prefix}encoder.down.{i}.block.0.conv2.weight")[0] // channels
                 for i in levels)
    res_blocks = len(_indices(state_dict, rf"{p}encoder\.down\.0\.block\.(\d+)\."))
    z_channels = _shape(state_dict, f"{prefix}post_quant_conv.weight")[0]
    return VAEConfig(channels=channels, channel_mult=mult, num_res_blocks=res_blocks, z_channels=z_channels)


def text_config_from_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str,
                                num_heads: int | None = None) -> TextEncoderConfig | None:
    """None when the checkpoint carries no text encoder (a context must then be given)."""
    embed_key = f"{prefix}transformer.text_model.embeddings.token_embedding.weight"
    if embed_key not in state_dict:
        return None
    vocab, hidden = _shape(state_dict, embed_key)
    layers = _indices(state_dict, rf"{re.escape(prefix)}transformer\.text_model\.encoder\.layers\.(\d+)\.")
    inter = _shape(state_dict, f"{prefix}transformer.text_model.encoder.layers.0.mlp.fc1.weight")[0]
    positions = _shape(state_dict, f"{prefix}transformer.text_model.embeddings.position_embedding.weight")[0]
    if num_heads is None:
        if hidden % CLIP_HEAD_WIDTH or hidden < CLIP_HEAD_WIDTH:
            raise ValueError(
                f"the text encoder is {hidden} wide, which is not a multiple of CLIP's 64-wide heads; "
                "pass text_num_heads explicitly")
        num_heads = hidden // CLIP_HEAD_WIDTH
    return TextEncoderConfig(vocab_size=vocab, hidden_size=hidden, num_layers=len(layers),
                             num_heads=num_heads, intermediate_size=inter, max_positions=positions)
