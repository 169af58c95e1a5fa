"""The whole X-Portrait flow as a few calls, shared by the command line and the ComfyUI nodes:
references -> latents, driving video -> controls, sampling, latents -> frames.

Images at this level are ComfyUI IMAGE tensors: float (F, H, W, 3) in [0, 1].
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .controls.driving_controls import DrivingControls, prepare_driving_controls
from .controls.landmarks import LandmarkProvider
from .media.image_fit import (DEFAULT_FIT, FitMode, check_resolution, fit_square_fchw, images_to_fchw,
                              resize_square_fchw)
from .model.compilation import accelerated
from .model.lora import LoraFileError, LoraPatch, apply_lora, read_lora
from .model.xportrait_model import XPortraitModel
from .sampling.finite_check import PRECISION_ADVICE, NonFiniteError, frame_ranges, non_finite_frames
from .sampling.guidance import Conditioning
from .sampling.option_checks import check_sampler_options
from .sampling.sampler import SamplerHooks, SamplerOptions, SamplerResult, sample

log = logging.getLogger(__name__)

REFERENCE_POSTERIOR = ("mean", "per_frame_samples")
LATENT_DOWNSAMPLE = 8  # VAE: 8 pixels per latent cell


def to_model_images(images_fhwc: torch.Tensor, resolution: int, fit: FitMode = DEFAULT_FIT,
                    what: str = "image") -> torch.Tensor:
    """IMAGE (B, H, W, 3) or (H, W, 3) in [0, 1] -> (B, 3, R, R) in [-1, 1], squared by ``fit``."""
    check_resolution(resolution)
    frames = fit_square_fchw(images_to_fchw(images_fhwc, what), fit)
    return resize_square_fchw(frames, resolution) * 2 - 1


def encode_references(model: XPortraitModel, images_bchw: torch.Tensor, frames: int = 1,
                      posterior: str = "mean", generator: torch.Generator | None = None
                      ) -> list[torch.Tensor]:
    """One latent set per reference image (B, 3, R, R) in [-1, 1].

    posterior "mean": each reference -> (1, 4, R/8, R/8), its bank shared by all frames (the appearance net
    runs once per step). "per_frame_samples": (frames, 4, R/8, R/8) independent posterior samples, as the
    original draws them (the appearance net then runs on every frame once per step)."""
    if posterior not in REFERENCE_POSTERIOR:
        raise ValueError(f"reference posterior must be one of {REFERENCE_POSTERIOR}, got {posterior!r}")
    latents = []
    with torch.no_grad():
        for image in images_bchw.split(1):
            if posterior == "mean":
                latents.append(model.encode_images(image).float().cpu())
                continue
            batch = image.expand(frames, -1, -1, -1)
            h, w = image.shape[-2] // LATENT_DOWNSAMPLE, image.shape[-1] // LATENT_DOWNSAMPLE
            noise = torch.randn((frames, 4, h, w), generator=generator)
            latents.append(model.encode_images(batch, noise).float().cpu())
    return latents


def encode_init_video(model: XPortraitModel, init_fhwc: torch.Tensor, resolution: int, frames: int,
                      fit: FitMode = DEFAULT_FIT) -> torch.Tensor:
    """IMAGE of another video (one frame per driving frame) -> scaled posterior means (F, 4, R/8, R/8) on the
    CPU, the clean latents an "init_video" start noises."""
    images = to_model_images(init_fhwc, resolution, fit, "init video")
    if images.shape[0] != frames:
        raise ValueError(f"the init video has {images.shape[0]} frames but the driving video has {frames}; "
                         "give one init frame per driving frame")
    chunk = model.vae_frames_per_call(resolution, resolution)
    with torch.no_grad():
        return torch.cat([model.encode_images(part).float().cpu() for part in images.split(chunk)])


def decode_to_images(model: XPortraitModel, latents: torch.Tensor) -> torch.Tensor:
    """Latents (F, 4, h, w) -> IMAGE (F, 8h, 8w, 3) in [0, 1] on the CPU (clamped, as the original). NonFiniteError
    when the VAE's output holds NaN or inf (clamping would hide it as black frames)."""
    frames = []
    chunk = model.vae_frames_per_call(LATENT_DOWNSAMPLE * latents.shape[-2], LATENT_DOWNSAMPLE * latents.shape[-1])
    with torch.no_grad():
        for first, part in zip(range(0, latents.shape[0], chunk), latents.split(chunk)):
            images = model.decode_latents(part).float()
            bad = [first + index for index in non_finite_frames(images)]
            if bad:
                raise NonFiniteError(f"decoding went non-finite (NaN or infinite pixels) in frames {frame_ranges(bad)};"
                                     f" the result would be black, so nothing was written. {PRECISION_ADVICE}.", bad)
            frames.append(((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu())
    return torch.cat(frames)


@contextlib.contextmanager
def lora_applied(model: XPortraitModel, lora_path: str | os.PathLike | None,
                 strength: float = 1.0) -> Iterator[LoraPatch | None]:
    """Merge an SD1.5 LoRA into the main UNet for the duration of the block, then restore the weights."""
    if not lora_path or strength == 0:
        yield None
        return
    try:
        patch = apply_lora(model.unet, read_lora(lora_path), strength)
    except LoraFileError:
        raise
    except ValueError as error:  # no layer fits this UNet: a LoRA of another base model
        raise LoraFileError(f"LoRA file '{os.path.basename(str(lora_path))}': {error}") from error
    log.info("LoRA %s: %d layers merged at strength %g", os.path.basename(str(lora_path)),
             len(patch.applied), strength)
    try:
        yield patch
    finally:
        patch.undo()


@dataclass
class Animation:
    frames: torch.Tensor            # IMAGE (F, R, R, 3) in [0, 1]
    latents: torch.Tensor           # (F, 4, R/8, R/8)
    controls: DrivingControls
    result: SamplerResult


def animate(model: XPortraitModel, source_fhwc: torch.Tensor, driving_fhwc: torch.Tensor,
            provider: LandmarkProvider, *, resolution: int = 512, best_frame: int | str | None = "auto",
            missing_face: str = "black", fit: FitMode = DEFAULT_FIT, patch_landmarks: str = "detect_aligned",
            options: SamplerOptions = SamplerOptions(), extra_references: Sequence[torch.Tensor] = (),
            reference_posterior: str = "mean", init_frames_fhwc: torch.Tensor | None = None,
            lora_path: str | os.PathLike | None = None, lora_strength: float = 1.0,
            hooks: SamplerHooks | None = None, controls: DrivingControls | None = None,
            compile_mode: str = "off") -> Animation:
    """Animate one portrait with a driving video, end to end, with the empty-prompt context.

    controls: the driving controls when already prepared (e.g. by the command line before loading the model, so that
    a source without a face is reported at once); otherwise they are prepared here from the arguments above.
    compile_mode: how sampling runs (`model.compilation`: off, cuda_graphs; compile_blocks is applied to the model
    once, by whoever loads it)."""
    check_resolution(resolution)
    if controls is None:
        controls = prepare_driving_controls(driving_fhwc, source_fhwc, provider, resolution=resolution,
                                            best_frame=best_frame, missing_face=missing_face, fit=fit,
                                            patch_landmarks=patch_landmarks)
    pose, local = controls.pose_hints.cpu(), controls.local_hints.cpu()
    frames = pose.shape[0]
    check_sampler_options(options, frames)
    generator = torch.Generator().manual_seed(options.seed)
    references = [controls.source_image.cpu()] + [to_model_images(image, resolution, fit, "extra reference")
                                                   for image in extra_references]
    reference_latents = [latent for images in references
                         for latent in encode_references(model, images, frames, reference_posterior, generator)]
    init_latents = None
    if init_frames_fhwc is not None:
        init_latents = encode_init_video(model, init_frames_fhwc, resolution, frames, fit)
    context = model.encode_empty_prompt()
    conditioning = Conditioning(reference_latents=reference_latents, pose_hints=pose, local_hints=local,
                                context=context, uncond_context=context)
    with lora_applied(model, lora_path, lora_strength):
        result = sample(accelerated(model, compile_mode), conditioning, options, init_latents=init_latents,
                        hooks=hooks)
    return Animation(frames=decode_to_images(model, result.latents), latents=result.latents,
                     controls=controls, result=result)
