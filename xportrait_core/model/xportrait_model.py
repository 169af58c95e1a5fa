"""The X-Portrait model: the five networks under their checkpoint prefixes, and the three evaluations
the sampler needs (appearance bank, conditional eps, unconditional eps).

Attribute names equal the checkpoint prefixes (``model.diffusion_model``, ``appearance_control_model``,
``pose_control_model``, ``local_pose_control_model``, ``first_stage_model``, ``cond_stage_model``), so
``state_dict()`` has exactly the original's keys.
"""
from __future__ import annotations

from collections import Counter
import numpy as np
import torch
import torch.nn as nn

from ..networks.appearance_net import AppearanceNet
from ..networks.attention import resolve_backend
from ..networks.config import XPortraitConfig
from ..networks.controlnet import ControlNet
from ..networks.reference_attention import BankReader, ReferenceBank, concat_reference_banks
from ..networks.text_encoder import TextEncoder
from ..networks.unet import WINDOW_FRAMES, MotionUNet
from ..networks.vae import AutoencoderKL
from .schedule import DDPM_TRAIN_STEPS, linear_betas_float64

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
POSTERIOR_LOG_VARIANCE_FLOOR = 1e-20  # LDM clips the posterior variance before the log


def ldm_schedule_buffers() -> dict[str, torch.Tensor]:
    """The 12 DDPM buffers and ``logvar`` the original registers at the top level of its state dict
    (computed in float64, stored float32). Sampling does not read them; they make our state dict
    complete and let the loader check a checkpoint's schedule."""
    betas = linear_betas_float64()
    alphas = 1.0 - betas
    cumprod = np.cumprod(alphas)
    cumprod_prev = np.append(1.0, cumprod[:-1])
    posterior_variance = betas * (1.0 - cumprod_prev) / (1.0 - cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / cumprod - 1.0),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, POSTERIOR_LOG_VARIANCE_FLOOR)),
        "posterior_mean_coef1": betas * np.sqrt(cumprod_prev) / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - cumprod_prev) * np.sqrt(alphas) / (1.0 - cumprod),
        "logvar": np.zeros(DDPM_TRAIN_STEPS),
    }
    return {name: torch.tensor(array, dtype=torch.float32) for name, array in values.items()}


class _DiffusionWrapper(nn.Module):
    """The ``model.`` level of the key names (LDM's DiffusionWrapper holds ``diffusion_model``)."""

    def __init__(self, unet: MotionUNet) -> None:
        super().__init__()
        self.diffusion_model = unet


class XPortraitModel(nn.Module):
    WINDOW_FRAMES = WINDOW_FRAMES

    def __init__(self, config: XPortraitConfig) -> None:
        super().__init__()
        self.config = config
        self.model = _DiffusionWrapper(MotionUNet(config.unet))
        self.appearance_control_model = AppearanceNet(config.unet)
        self.pose_control_model = ControlNet(config.unet)
        self.local_pose_control_model = ControlNet(config.unet)
        self.first_stage_model = AutoencoderKL(config.vae)
        self.cond_stage_model = TextEncoder(config.text) if config.text is not None else None
        for name, value in ldm_schedule_buffers().items():
            self.register_buffer(name, value)
        self.evaluation_counts: Counter[str] = Counter()
        self.attention_backend = "sdpa"
        self.compute_dtype = torch.float32

    # ----------------------------------------------------------------------------------------- setup
    @property
    def unet(self) -> MotionUNet:
        return self.model.diffusion_model

    @property
    def device(self) -> torch.device:
        return self.unet.time_embed[0].weight.device

    def set_attention_backend(self, backend: str) -> str:
        """Choose the attention backend for every attention of the model ("auto", "sdpa", "xformers",
        "math"); returns the one in use."""
        resolved = resolve_backend(backend)
        for module in self.modules():
            if hasattr(module, "backend"):
                module.backend = resolved
        self.attention_backend = resolved
        return resolved

    def set_precision(self, precision: str | torch.dtype) -> None:
        """Cast the denoising networks to fp32 / fp16 / bf16. The VAE stays in float32 under fp16 (SD1.5's
        VAE decoder overflows fp16 and gives black or NaN frames) and follows bf16 otherwise; the text
        encoder runs once per run and always stays float32. Schedule buffers stay float32."""
        dtype = PRECISIONS.get(precision) if isinstance(precision, str) else precision
        if dtype not in PRECISIONS.values():
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        for net in (self.unet, self.appearance_control_model, self.pose_control_model,
                    self.local_pose_control_model):
            net.to(dtype)
        self.first_stage_model.to(torch.float32 if dtype == torch.float16 else dtype)
        if self.cond_stage_model is not None:
            self.cond_stage_model.to(torch.float32)
        self.compute_dtype = dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        return self.first_stage_model.quant_conv.weight.dtype

    # ------------------------------------------------------------------------------------ text, vae
    def encode_empty_prompt(self) -> torch.Tensor:
        """(1, 77, C) context of the empty prompt, from the checkpoint's own text encoder."""
        if self.cond_stage_model is None:
            raise ValueError("this checkpoint has no text encoder (cond_stage_model.*): "
                             "give a text context (e.g. a CONDITIONING from CLIP Text Encode) instead")
        with torch.no_grad():
            return self.cond_stage_model.encode_empty_prompt()

    def encode_images(self, images_bchw: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8) (mean, or sampled with noise)."""
        return self.first_stage_model.encode(images_bchw.to(self.device, self.vae_dtype), noise)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w), nominally [-1, 1], not clamped."""
        return self.first_stage_model.decode(latents.to(self.device, self.vae_dtype))

    # ------------------------------------------------------------------------------ the evaluations
    def _prepare(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return [t.to(self.device, self.compute_dtype) for t in tensors]

    def write_reference_bank(self, reference_latents: torch.Tensor, timesteps: torch.Tensor,
                             context: torch.Tensor) -> ReferenceBank:
        """Appearance net in write mode: reference_latents (B, 4, h, w) (not noised: the original's
        ``wonoise``), timesteps (B,), context (B or 1, 77, C) -> 16 entries (B, tokens, C)."""
        latents, context = self._prepare(reference_latents, context)
        self.evaluation_counts["appearance"] += latents.shape[0]
        return self.appearance_control_model(latents, timesteps.to(self.device), context)

    concat_reference_banks = staticmethod(concat_reference_banks)

    def _check_window(self, x_t: torch.Tensor) -> None:
        if x_t.shape[0] % self.WINDOW_FRAMES:
            raise ValueError(f"the motion modules take windows of {self.WINDOW_FRAMES} frames; "
                             f"got a batch of {x_t.shape[0]}")

    def eps_conditional(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                        bank: ReferenceBank | None, pose_hint: torch.Tensor | None,
                        local_hint: torch.Tensor | None) -> torch.Tensor:
        """The conditional pass: pose and local ControlNets on x_t, then the UNet reading the bank and
        adding both residual sets. x_t (N, 4, h, w) with N a multiple of 16; timesteps (N,); context
        (N or 1, 77, C); bank entries (N or 1, tokens, C); hints (N, 3, 8h, 8w) in [-1, 1] (None leaves
        that ControlNet out). Returns eps (N, 4, h, w) in float32."""
        self._check_window(x_t)
        x, context = self._prepare(x_t, context)
        timesteps = timesteps.to(self.device)
        residuals = []
        for net, hint, name in ((self.pose_control_model, pose_hint, "pose_control"),
                                (self.local_pose_control_model, local_hint, "local_control")):
            if hint is None:
                continue
            residuals.append(net(x, *self._prepare(hint), timesteps, context))
            self.evaluation_counts[name] += x.shape[0]
        reader = BankReader([entry.to(self.device, self.compute_dtype) for entry in bank]) if bank else None
        self.evaluation_counts["unet"] += x.shape[0]
        eps = self.unet(x, timesteps, context, reader, residuals, self.WINDOW_FRAMES)
        return eps.float()

    def eps_unconditional(self, x_t: torch.Tensor, timesteps: torch.Tensor,
                          context: torch.Tensor) -> torch.Tensor:
        """The unconditional pass: plain UNet + motion modules, no bank, no ControlNet."""
        self._check_window(x_t)
        x, context = self._prepare(x_t, context)
        self.evaluation_counts["unet"] += x.shape[0]
        return self.unet(x, timesteps.to(self.device), context, None, (), self.WINDOW_FRAMES).float()


def component_modules(model: XPortraitModel) -> dict[str, nn.Module | None]:
    """Checkpoint prefix -> network, in the order the original lists them."""
    return {
        "model.diffusion_model.": model.unet,
        "appearance_control_model.": model.appearance_control_model,
        "pose_control_model.": model.pose_control_model,
        "local_pose_control_model.": model.local_pose_control_model,
        "first_stage_model.": model.first_stage_model,
        "cond_stage_model.": model.cond_stage_model,
    }

