"""The X-Portrait model: the five networks under their checkpoint prefixes, and the three evaluations
the sampler needs (appearance bank, conditional eps, unconditional eps).

Attribute names equal the checkpoint prefixes (``model.diffusion_model``, ``appearance_control_model``,
``pose_control_model``, ``local_pose_control_model``, ``first_stage_model``, ``cond_stage_model``), so
``state_dict()`` has exactly the original's keys.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn as nn

from ..networks.appearance_net import AppearanceNet
from ..networks.attention import AttentionFunction, UsesAttentionBackend, resolve_backend
from ..networks.config import XPortraitConfig
from ..networks.controlnet import ControlNet
from ..networks.layer_ops import CastingLayers, LayerOps, TorchLayers, keeps_float32
from ..networks.reference_attention import BankReader, ReferenceBank, concat_reference_banks
from ..networks.text_encoder import TextEncoder
from ..networks.unet import MotionUNet
from ..networks.vae import AutoencoderKL
from ..options import MAX_WINDOW, TRAINED_WINDOW, VAE_DOWNSCALE, AttentionChoice, Precision
from .device_memory import free_bytes
from .memory_estimate import window_activation_bytes
from .schedule import DDPM_TRAIN_STEPS, linear_betas_float64

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Weight storage narrower than compute: stored in fp8 (e4m3, ComfyUI's usual fp8), cast per layer at each call.
FP8_STORAGE = {"fp8_e4m3fn": torch.float8_e4m3fn}
WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)  # the layers whose weights fp8 storage narrows (norms, biases stay)
POSTERIOR_LOG_VARIANCE_FLOOR = 1e-20  # LDM clips the posterior variance before the log
# VAE memory per frame at its peak: about 8 activations of the full-resolution width; calls take at most 4 frames at
# 512 px, and on the CPU, where the free memory is not known, as many as fit in a small fixed budget: there, smaller
# calls are no slower and keep the decode's peak below the sampling's (docs/performance.md, "Numbers behind the
# code's constants").
VAE_PEAK_WIDTHS = 8
VAE_PIXELS_PER_CALL = 4 * 512 * 512
VAE_SHARE_OF_FREE_MEMORY = 0.6
CPU_VAE_BUDGET_BYTES = 128 * 1024**2


@dataclass(frozen=True)
class PrecisionPlan:
    """How a precision choice maps to dtypes: what the denoising networks compute in, how their Linear/Conv weights
    are stored (None: in the compute dtype), and what the VAE runs in."""

    compute: torch.dtype
    weight_storage: torch.dtype | None
    vae: torch.dtype

    def torch_layers(self) -> LayerOps:
        """The torch layer set the plan needs: layers that cast per call when weights are stored narrower."""
        return CastingLayers if self.weight_storage is not None else TorchLayers


def supports_bf16(device: torch.device) -> bool:
    """bf16 is worth using where the hardware computes it natively (CUDA Ampere and newer)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolved_precision(precision: Precision, device: torch.device) -> Precision:
    """auto: fp16 on CUDA, fp32 elsewhere; any other choice as it is."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def precision_plan(precision: Precision, device: torch.device | str) -> PrecisionPlan:
    """fp32 / fp16 / bf16, or fp8_e4m3fn (weights stored in fp8, computed in bf16 where the device has it, else
    fp16; fp32 on the CPU); auto: fp16 on CUDA, fp32 elsewhere. The VAE never runs in fp16 (SD1.5's VAE overflows
    there): bf16 where the device has it and the networks compute in half precision, else fp32."""
    device = torch.device(device)
    precision = resolved_precision(precision, device)
    half = torch.bfloat16 if supports_bf16(device) else torch.float16
    if precision in FP8_STORAGE:
        compute = half if device.type == "cuda" else torch.float32
        storage = FP8_STORAGE[precision]
    elif precision in PRECISIONS:
        compute, storage = PRECISIONS[precision], None
    else:
        raise ValueError(f"precision must be one of {[*PRECISIONS, *FP8_STORAGE]}, got {precision!r}")
    if compute == torch.float32:
        vae = torch.float32
    else:
        vae = torch.bfloat16 if compute == torch.bfloat16 or supports_bf16(device) else torch.float32
    return PrecisionPlan(compute=compute, weight_storage=storage, vae=vae)


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


EvaluationObserver = Callable[[str, int], None]  # (network, rows) after each network evaluation


class XPortraitModel(nn.Module):
    def __init__(self, config: XPortraitConfig, ops: LayerOps = TorchLayers) -> None:
        """``ops``: the layer classes to build from (see `networks.layer_ops`); layers that cast their weights per
        call (``ops.casts_weights``) allow fp8 weight storage and weights kept off the compute device."""
        super().__init__()
        self.config = config
        self.layers_cast_weights = bool(getattr(ops, "casts_weights", False))
        self.model = _DiffusionWrapper(MotionUNet(config.unet, ops))
        self.appearance_control_model = AppearanceNet(config.unet, ops)
        self.pose_control_model = ControlNet(config.unet, ops)
        self.local_pose_control_model = ControlNet(config.unet, ops)
        self.first_stage_model = AutoencoderKL(config.vae, ops)
        self.cond_stage_model = TextEncoder(config.text, ops) if config.text is not None else None
        for name, value in ldm_schedule_buffers().items():
            self.register_buffer(name, value)
        self.attention_backend = "sdpa"
        self.compute_dtype = torch.float32
        self.weight_storage: torch.dtype | None = None  # fp8 storage dtype, None when weights are compute dtype
        self.execution_device: torch.device | None = None  # set by a host that keeps weights elsewhere

    # ----------------------------------------------------------------------------------------- setup
    @property
    def unet(self) -> MotionUNet:
        return self.model.diffusion_model

    @property
    def denoising_networks(self) -> tuple[nn.Module, ...]:
        """The four networks evaluated at every step (what sampling needs on the device)."""
        return (self.unet, self.appearance_control_model, self.pose_control_model, self.local_pose_control_model)

    @property
    def device(self) -> torch.device:
        """Where the networks compute: the host's choice when it manages placement, else where the UNet is."""
        if self.execution_device is not None:
            return self.execution_device
        return cast(nn.Linear, self.unet.time_embed[0]).weight.device  # torch types a Sequential's item a Module

    def set_attention_backend(self, backend: AttentionChoice) -> str:
        """Choose the attention backend for every attention of the model ("auto", "sdpa", "xformers",
        "math"); returns the one in use."""
        resolved = resolve_backend(backend)
        for module in self.modules():
            if isinstance(module, UsesAttentionBackend):
                module.backend = resolved
        self.attention_backend = resolved
        return resolved

    def use_attention_function(self, function: AttentionFunction, name: str) -> None:
        """Compute every attention but the text encoder's causal one with a host's function (ComfyUI's
        optimized_attention, so that its attention flags apply); ``name`` is what logs call the backend."""
        for module in self.modules():
            if isinstance(module, UsesAttentionBackend):
                module.backend = function
        self.attention_backend = name

    def take_vae(self) -> AutoencoderKL:
        """Hand the VAE over to a host that runs it itself (ComfyUI's own VAE object): the model keeps no copy, and
        what needs the VAE (encode_images, decode_latents) is the host's to do from then on."""
        vae = self.first_stage_model
        del self.first_stage_model
        return vae

    def apply_precision_plan(self, plan: PrecisionPlan) -> None:
        self.set_precision(plan.compute, plan.vae, plan.weight_storage)

    def set_precision(self, precision: str | torch.dtype, vae_dtype: torch.dtype | None = None,
                      weight_storage: torch.dtype | None = None) -> None:
        """Cast the denoising networks to fp32 / fp16 / bf16 (the ResBlock norms stay float32, as the
        original's GroupNorm32). ``weight_storage`` fp8 keeps the Linear/Conv weights of the denoising networks
        in fp8 (needs layers that cast per call, see `networks.layer_ops`). The VAE runs in ``vae_dtype``
        (default: float32 under fp16 - SD1.5's VAE overflows fp16 and gives black or NaN frames - else the
        compute dtype); fp16 is refused for it. The text encoder runs once per run and stays float32, and so do
        the schedule buffers."""
        dtype = PRECISIONS.get(precision) if isinstance(precision, str) else precision
        if dtype is None or dtype not in PRECISIONS.values():
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        vae_dtype = vae_dtype or (torch.float32 if dtype == torch.float16 else dtype)
        if vae_dtype == torch.float16:
            raise ValueError("the SD1.5 VAE overflows in fp16 (black or NaN frames); run it in bf16 or fp32")
        if weight_storage is not None and weight_storage not in FP8_STORAGE.values():
            raise ValueError(f"weight storage must be one of {list(FP8_STORAGE)} or None, got {weight_storage!r}")
        if weight_storage is not None and not self.layers_cast_weights:
            raise ValueError("fp8 weight storage needs a model built with layers that cast their weights per "
                             "call (networks.layer_ops.CastingLayers, or ComfyUI's manual_cast ops)")
        for net in self.denoising_networks:
            net.to(dtype)
            for layer in net.modules():
                if keeps_float32(layer):
                    layer.float()
                elif weight_storage is not None and isinstance(layer, WEIGHT_LAYERS):
                    layer.weight.data = layer.weight.data.to(weight_storage)
        self.first_stage_model.to(vae_dtype)
        if self.cond_stage_model is not None:
            self.cond_stage_model.to(torch.float32)
        self.compute_dtype = dtype
        self.weight_storage = weight_storage

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
        frames = self.vae_frames_per_call(*images_bchw.shape[-2:])
        return self.first_stage_model.encode(images_bchw.to(self.device, self.vae_dtype), noise, frames)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w), nominally [-1, 1], not clamped."""
        frames = self.vae_frames_per_call(VAE_DOWNSCALE * latents.shape[-2], VAE_DOWNSCALE * latents.shape[-1])
        return self.first_stage_model.decode(latents.to(self.device, self.vae_dtype), frames)

    def vae_frames_per_call(self, height: int, width: int) -> int:
        """Frames the VAE takes per call at this image size: at most 4 at 512 px (as many pixels at other sizes),
        fewer when the device's free memory (or, on the CPU, a fixed budget) cannot hold their activations."""
        per_frame = VAE_PEAK_WIDTHS * self.config.vae.channels * height * width * self.vae_dtype.itemsize
        free = free_bytes(self.device)
        budget = CPU_VAE_BUDGET_BYTES if free is None else VAE_SHARE_OF_FREE_MEMORY * free
        return max(1, min(VAE_PIXELS_PER_CALL // (height * width), int(budget // per_frame)))

    # ------------------------------------------------------------------------------ the evaluations
    def _prepare(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Inputs on the compute device in the compute dtype; on the CPU images and latents in channels-last
        layout, which oneDNN's convolutions run faster and the transformers' token views need no copy for."""
        prepared = [t.to(self.device, self.compute_dtype) for t in tensors]
        if self.device.type != "cpu":  # elsewhere the default layout stays (docs/performance.md)
            return prepared
        return [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in prepared]

    def write_reference_bank(self, reference_latents: torch.Tensor, timesteps: torch.Tensor,
                             context: torch.Tensor, observer: EvaluationObserver | None = None) -> ReferenceBank:
        """Appearance net in write mode: reference_latents (B, 4, h, w) (not noised: the original's
        ``wonoise``), timesteps (B,), context (B or 1, 77, C) -> 16 entries (B, tokens, C)."""
        latents, context = self._prepare(reference_latents, context)
        bank = self.appearance_control_model(latents, timesteps.to(self.device), context)
        _tell(observer, "appearance", latents.shape[0])
        return bank

    concat_reference_banks = staticmethod(concat_reference_banks)

    @staticmethod
    def _check_videos(x_t: torch.Tensor, frames_per_video: int) -> None:
        # The window length is checked with the options; here it is an invariant of the caller.
        assert 1 <= frames_per_video <= MAX_WINDOW and x_t.shape[0] % frames_per_video == 0, \
            (tuple(x_t.shape), frames_per_video)

    def eps_conditional(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                        bank: ReferenceBank | None, pose_hint: torch.Tensor | None,
                        local_hint: torch.Tensor | None, frames_per_video: int = TRAINED_WINDOW,
                        observer: EvaluationObserver | None = None) -> torch.Tensor:
        """The conditional pass: pose and local ControlNets on x_t, then the UNet reading the bank and
        adding both residual sets. x_t (N, 4, h, w), N a multiple of frames_per_video (the motion modules see each
        frames_per_video consecutive rows as one video, at most MAX_WINDOW); timesteps (N,); context
        (N or 1, 77, C); bank entries (N or 1, tokens, C); hints (N, 3, 8h, 8w) in [-1, 1] (None leaves
        that ControlNet out; a hint may also be its features from `encode_control_hints`). Returns eps (N, 4, h, w)
        in float32. observer(network, rows) hears of each network evaluation as it ends."""
        self._check_videos(x_t, frames_per_video)
        x, context = self._prepare(x_t, context)
        timesteps = timesteps.to(self.device)
        residuals = self._control_residuals(x, timesteps, context, pose_hint, local_hint, observer)
        reader = self._bank_reader(bank, rows=None)
        eps = self.unet(x, timesteps, context, reader, residuals, frames_per_video)
        _tell(observer, "unet", x.shape[0])
        return eps.float()

    def eps_both_passes(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                        uncond_context: torch.Tensor, bank: ReferenceBank | None, pose_hint: torch.Tensor | None,
                        local_hint: torch.Tensor | None, frames_per_video: int = TRAINED_WINDOW,
                        observer: EvaluationObserver | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditional and the unconditional pass of the same latents as ONE UNet forward of 2N rows: rows
        [0, N) read the bank and receive the ControlNet residuals (computed on the N latents), rows [N, 2N) do
        neither, as `eps_unconditional`. Same arguments as `eps_conditional` plus the unconditional context;
        returns (eps_cond, eps_uncond), each (N, 4, h, w) float32, equal to the two separate passes within
        float noise. Costs twice a pass's activation memory, saves half the kernel launches."""
        self._check_videos(x_t, frames_per_video)
        x, context, uncond_context = self._prepare(x_t, context, uncond_context)
        timesteps = timesteps.to(self.device)
        rows = x.shape[0]
        residuals = self._control_residuals(x, timesteps, context, pose_hint, local_hint, observer)
        reader = self._bank_reader(bank, rows=rows)
        both_contexts = context if context is uncond_context else torch.cat([context, uncond_context])
        eps = self.unet(torch.cat([x, x]), torch.cat([timesteps, timesteps]), both_contexts, reader, residuals,
                        frames_per_video).float()
        _tell(observer, "unet", 2 * rows)
        return eps[:rows], eps[rows:]

    def _control_residuals(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                           pose_hint: torch.Tensor | None, local_hint: torch.Tensor | None,
                           observer: EvaluationObserver | None) -> list[Iterator[torch.Tensor]]:
        """Pose and local ControlNet residuals of x, as iterators the UNet consumes (a hint of None leaves that
        ControlNet out); the observer hears of each ControlNet when the UNet has taken its last residual."""
        residuals = []
        for net, hint, name in ((self.pose_control_model, pose_hint, "pose_control"),
                                (self.local_pose_control_model, local_hint, "local_control")):
            if hint is None:
                continue
            [prepared_hint] = self._prepare(hint)
            residuals.append(_told(observer, name, x.shape[0], net.residuals(x, prepared_hint, timesteps, context)))
        return residuals

    def encode_control_hints(self, pose_hint: torch.Tensor, local_hint: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both ControlNets' hint features (N, C, h, w) of hint images (N, 3, 8h, 8w): they depend on the images
        only, so a run computes them once per frame and passes them to the evaluations in place of the images."""
        pose, local = self._prepare(pose_hint, local_hint)
        with torch.no_grad():
            return (self.pose_control_model.hint_features(pose), self.local_pose_control_model.hint_features(local))

    def hint_feature_bytes(self, frames: int, latent_size: tuple[int, int]) -> int:
        """Memory of both ControlNets' hint features for that many frames."""
        return (2 * frames * self.config.unet.model_channels * latent_size[0] * latent_size[1]
                * self.compute_dtype.itemsize)

    def window_activation_bytes(self, latent_size: tuple[int, int], conditional_rows: int,
                                unconditional_rows: int, references: int = 1) -> int:
        """Estimated activation memory of one forward over these rows (see `model.memory_estimate`)."""
        return window_activation_bytes(self.config.unet, *latent_size, self.compute_dtype, conditional_rows,
                                       unconditional_rows, references)

    def _bank_reader(self, bank: ReferenceBank | None, rows: int | None) -> BankReader | None:
        if not bank:
            return None
        return BankReader([entry.to(self.device, self.compute_dtype) for entry in bank], rows=rows)

    def eps_unconditional(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                          frames_per_video: int = TRAINED_WINDOW,
                          observer: EvaluationObserver | None = None) -> torch.Tensor:
        """The unconditional pass: plain UNet + motion modules, no bank, no ControlNet."""
        self._check_videos(x_t, frames_per_video)
        x, context = self._prepare(x_t, context)
        eps = self.unet(x, timesteps.to(self.device), context, None, (), frames_per_video).float()
        _tell(observer, "unet", x.shape[0])
        return eps


def _tell(observer: EvaluationObserver | None, network: str, rows: int) -> None:
    if observer is not None:
        observer(network, rows)


def _told(observer: EvaluationObserver | None, network: str, rows: int,
          residuals: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield from residuals
    _tell(observer, network, rows)

