"""ComfyUI's data conventions, host-independent: how the pack's values become core ComfyUI types and back.

- IMAGE: float (B, H, W, 3) in [0, 1], the pipeline's own image convention (`xportrait_core.pipeline`).
- LATENT: {"samples": (B, 4, h, w)} UNSCALED, raw VAE space (ComfyUI's SD1.5 latent format multiplies by 0.18215
  inside its samplers, `comfy/latent_formats.py` SD15.process_in); the core samples SCALED latents.
- VAE: an object with `encode(IMAGE) -> unscaled posterior mean` and `decode(unscaled) -> IMAGE clamped to [0, 1]`,
  the contract of ComfyUI's `comfy.sd.VAE`; `xportrait_core.pipeline.ImageVAE` honours it without ComfyUI.
- CONDITIONING: a list of [context (1, tokens, C), options dict] pairs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from xportrait_core.pipeline import XPortraitModel


def to_comfy_latent(scaled_latents: torch.Tensor, scale_factor: float) -> dict[str, torch.Tensor]:
    """Scaled latents (F, 4, h, w) from the core sampler -> ComfyUI LATENT {"samples": unscaled (F, 4, h, w)}."""
    return {"samples": (scaled_latents.float() / scale_factor).cpu()}


def context_from_conditioning(conditioning: Sequence[Any], context_dim: int, what: str) -> torch.Tensor:
    """CONDITIONING [[context (1, tokens, C), dict], ...] -> its first context (1, tokens, C); C must be the
    UNet's cross-attention width (768 for SD1.5 CLIP). A core ControlNet attached to it is refused rather than
    silently dropped."""
    try:
        context = conditioning[0][0]
    except (IndexError, KeyError, TypeError) as error:
        raise ValueError(f"The {what} must be a ComfyUI CONDITIONING (e.g. from CLIP Text Encode); "
                         f"got {type(conditioning).__name__}.") from error
    if any(isinstance(entry[1], dict) and entry[1].get("control") is not None for entry in conditioning):
        raise ValueError(f"The {what} carries a core ControlNet (from a ControlNet apply node), which X-Portrait "
                         "does not run: its own pose and local ControlNets take Motion Control's and Local "
                         "Patches' frames. Connect the CLIP Text Encode output directly.")
    if not isinstance(context, torch.Tensor) or context.dim() != 3 or context.shape[-1] != context_dim:
        shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
        raise ValueError(f"The {what} must hold text embeddings of width {context_dim} (an SD1.5 CLIP, e.g. CLIP "
                         f"Text Encode with an SD1.5 checkpoint's CLIP); got {shape}.")
    return context[:1].float()


def vae_state_dict(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint's VAE (the networks' first_stage_model) in LDM key names without the `first_stage_model.`
    prefix (what comfy.sd.VAE takes); the tensors themselves where they are fp32 on the CPU already (no copy)."""
    return {key: value.detach().float().cpu() for key, value in vae.state_dict().items()}


def comfy_vae_config(model: XPortraitModel) -> dict[str, Any]:
    """`config` for comfy.sd.VAE describing this checkpoint's AutoencoderKL (any width, not only SD1.5's)."""
    vae = model.config.vae
    # "resolution" is a training-time field of LDM's ddconfig that shapes nothing; 256 is what SD1.5's config holds.
    ddconfig = {"double_z": True, "z_channels": vae.z_channels, "resolution": 256, "in_channels": vae.image_channels,
                "out_ch": vae.image_channels, "ch": vae.channels, "ch_mult": list(vae.channel_mult),
                "num_res_blocks": vae.num_res_blocks, "attn_resolutions": [], "dropout": 0.0}
    return {"params": {"embed_dim": vae.z_channels, "ddconfig": ddconfig}}
