"""ComfyUI's data conventions, host-independent: what the node pack passes between its nodes and to core nodes.

- IMAGE: float (B, H, W, 3) in [0, 1]; the hints X-Portrait samples with are (F, 3, R, R) in [-1, 1].
- LATENT: {"samples": (B, 4, h, w)} UNSCALED, raw VAE space (ComfyUI's SD1.5 latent format multiplies by 0.18215
  inside its samplers, `comfy/latent_formats.py` SD15.process_in); the core samples SCALED latents.
- VAE: an object with `encode(IMAGE) -> unscaled posterior mean` and `decode(unscaled) -> IMAGE clamped to [0, 1]`,
  the contract of ComfyUI's `comfy.sd.VAE`. `StandaloneVAE` honours it without ComfyUI.
- CONDITIONING: a list of [context (1, tokens, C), options dict] pairs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from xportrait_core.controls.alignment import LANDMARK_GRID
from xportrait_core.controls.driving_controls import DEFAULT_CHUNK_FRAMES, MISSING_FACE_MODES, local_hints_in_chunks
from xportrait_core.controls.frame_hooks import FrameCounter, FrameHooks, detect_landmarks
from xportrait_core.controls.landmarks import LandmarkProvider
from xportrait_core.controls.local_patches import landmarks_for_patches, patch_centres
from xportrait_core.media.image_fit import check_resolution, images_to_fchw, resize_square_fchw, to_uint8_fhwc
from xportrait_core.model.xportrait_model import XPortraitModel
from xportrait_core.networks.config import VAEConfig
from xportrait_core.sampling.guidance import Conditioning

VAE_DOWNSCALE = 8  # SD1.5 VAE: pixels per latent cell, per side
VAE_PREFIX = "first_stage_model."


# ------------------------------------------------------------------------------------------- values passed on
@dataclass(frozen=True)
class XPortraitReference:
    """The appearance references of one animation.

    latents: one (1, 4, R/8, R/8) UNSCALED posterior mean per reference image, main (source) first.
    images: (B, R, R, 3) in [0, 1], the references as fitted and resized for the model (what was encoded).
    """

    latents: tuple[torch.Tensor, ...]
    images: torch.Tensor

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])


@dataclass(frozen=True)
class LoraChoice:
    """One SD1.5 LoRA file to merge into the main UNet while sampling, at `strength`."""

    path: str
    strength: float

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


# --------------------------------------------------------------------------------------------------- latents
def to_comfy_latent(scaled_latents: torch.Tensor, scale_factor: float) -> dict[str, torch.Tensor]:
    """Scaled latents (F, 4, h, w) from the core sampler -> ComfyUI LATENT {"samples": unscaled (F, 4, h, w)}."""
    return {"samples": (scaled_latents.float() / scale_factor).cpu()}


def image_hints(images_fhwc: torch.Tensor, what: str) -> torch.Tensor:
    """IMAGE (F, R, R, 3) in [0, 1] -> hints (F, 3, R, R) in [-1, 1] (square frames, as the control nodes make)."""
    frames = images_to_fchw(images_fhwc, what).float()
    if frames.shape[-1] != frames.shape[-2]:
        raise ValueError(f"The {what} must be square frames (from the X-Portrait control nodes); "
                         f"got {frames.shape[-1]}x{frames.shape[-2]}.")
    return frames * 2 - 1


def hint_images(hints_fchw: torch.Tensor) -> torch.Tensor:
    """Hints (F, 3, R, R) in [-1, 1] -> IMAGE (F, R, R, 3) in [0, 1] on the CPU."""
    return ((hints_fchw.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous().cpu()


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


# ------------------------------------------------------------------------------------------------------- VAE
def vae_state_dict(model: XPortraitModel) -> dict[str, torch.Tensor]:
    """The checkpoint's VAE in LDM key names without the `first_stage_model.` prefix (what comfy.sd.VAE takes)."""
    return {key: value.detach().float().cpu() for key, value in model.first_stage_model.state_dict().items()}


def comfy_vae_config(vae: VAEConfig) -> dict[str, Any]:
    """`config` for comfy.sd.VAE describing this checkpoint's AutoencoderKL (any width, not only SD1.5's)."""
    # "resolution" is a training-time field of LDM's ddconfig that shapes nothing; 256 is what SD1.5's config holds.
    ddconfig = {"double_z": True, "z_channels": vae.z_channels, "resolution": 256, "in_channels": vae.image_channels,
                "out_ch": vae.image_channels, "ch": vae.channels, "ch_mult": list(vae.channel_mult),
                "num_res_blocks": vae.num_res_blocks, "attn_resolutions": [], "dropout": 0.0}
    return {"params": {"embed_dim": vae.z_channels, "ddconfig": ddconfig}}


class StandaloneVAE:
    """ComfyUI's VAE contract over the checkpoint's own AutoencoderKL, for use without ComfyUI.

    encode: IMAGE (B, H, W, 3) in [0, 1] -> UNSCALED posterior mean (B, 4, H/8, W/8); H and W are centre-cropped
    to multiples of 8 first, as ComfyUI does. decode: UNSCALED (B, 4, h, w) -> IMAGE (B, 8h, 8w, 3) in [0, 1].
    """

    def __init__(self, model: XPortraitModel) -> None:
        self._vae = model.first_stage_model

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        weight = self._vae.quant_conv.weight
        return weight.device, weight.dtype

    def encode(self, pixels_bhwc: torch.Tensor) -> torch.Tensor:
        height, width = pixels_bhwc.shape[1:3]
        crop_h, crop_w = height // VAE_DOWNSCALE * VAE_DOWNSCALE, width // VAE_DOWNSCALE * VAE_DOWNSCALE
        top, left = (height % VAE_DOWNSCALE) // 2, (width % VAE_DOWNSCALE) // 2
        pixels = pixels_bhwc[:, top:top + crop_h, left:left + crop_w, :3]
        device, dtype = self._device_dtype()
        with torch.no_grad():
            mean, _ = self._vae.encode_moments((pixels.movedim(-1, 1) * 2 - 1).to(device, dtype))
        return mean.float().cpu()

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        device, dtype = self._device_dtype()
        with torch.no_grad():
            images = self._vae.decoder(self._vae.post_quant_conv(samples.to(device, dtype)))
        return ((images.float() + 1) / 2).clamp(0, 1).movedim(1, -1).cpu()


# --------------------------------------------------------------------------------------------- local patches
@dataclass(frozen=True)
class LocalPatches:
    """local_hints (F, 3, R, R) in [-1, 1]; face_found (F,) bool on the frames; centres (F, 3, 2) at R."""

    local_hints: torch.Tensor
    face_found: np.ndarray
    centres: torch.Tensor


def local_patches_of_aligned(aligned_fhwc: torch.Tensor, provider: LandmarkProvider, missing_face: str = "black",
                             hooks: FrameHooks | None = None) -> LocalPatches:
    """Local hints of frames that are already aligned (the pose hints as IMAGE): landmarks are detected on 256 px
    uint8 copies, as `prepare_driving_controls(patch_landmarks="detect_aligned")` does. hooks: progress per frame
    (detection, then patches) and the interrupt check before each frame or group of frames."""
    if missing_face not in MISSING_FACE_MODES:
        raise ValueError(f"missing_face must be one of {MISSING_FACE_MODES}; got {missing_face!r}.")
    pose_hints = image_hints(aligned_fhwc, "aligned frames")
    frames, resolution = pose_hints.shape[0], pose_hints.shape[-1]
    counter = FrameCounter(hooks, 2 * frames)
    copies = to_uint8_fhwc(resize_square_fchw((pose_hints + 1) / 2, LANDMARK_GRID))
    found = detect_landmarks(provider, copies, counter)
    points, usable = landmarks_for_patches(found.points_68, found.face_found, missing_face)
    centres = patch_centres(points, usable, resolution)
    local_hints = local_hints_in_chunks(pose_hints, centres, DEFAULT_CHUNK_FRAMES, counter)
    return LocalPatches(local_hints, np.asarray(found.face_found, dtype=bool), centres)


# -------------------------------------------------------------------------------------------------- progress
# --------------------------------------------------------------------------------------- sampler node inputs
class SamplingSetup:
    """Turns the sampler node's ComfyUI inputs into the core's: scaled reference latents, hints, contexts and the
    init video's latents, checking that they fit together (errors name the input to fix)."""

    def __init__(self, model: XPortraitModel, reference: XPortraitReference) -> None:
        self.model = model
        self.reference = reference
        self.pose_hints: torch.Tensor | None = None
        self.local_hints: torch.Tensor | None = None

    @property
    def scale_factor(self) -> float:
        return self.model.config.vae.scale_factor

    @property
    def frames(self) -> int:
        return int(self.pose_hints.shape[0])

    def add_hints(self, motion_fhwc: torch.Tensor, local_fhwc: torch.Tensor) -> None:
        pose, local = image_hints(motion_fhwc, "motion"), image_hints(local_fhwc, "local patches")
        check_resolution(pose.shape[-1], "the motion frames' size")
        if pose.shape != local.shape:
            raise ValueError(f"motion is {tuple(motion_fhwc.shape)} but local patches {tuple(local_fhwc.shape)}; "
                             "both come from the same driving video (Local Patches takes Motion Control's output).")
        if pose.shape[-1] != self.reference.resolution:
            raise ValueError(f"motion frames are {pose.shape[-1]} px but the reference is {self.reference.resolution}"
                             " px; set the same resolution on Motion Control and Reference.")
        self.pose_hints, self.local_hints = pose, local

    def context(self, conditioning: Sequence[Any] | None, what: str) -> torch.Tensor:
        """The conditioning's text context, or the empty prompt of the checkpoint's text encoder."""
        if conditioning is None:
            return self.model.encode_empty_prompt().float().cpu()
        return context_from_conditioning(conditioning, self.model.config.unet.context_dim, what)

    def init_latents(self, init_fhwc: torch.Tensor) -> torch.Tensor:
        """Scaled posterior means (F, 4, h, w) of the init video, fitted to the reference's resolution."""
        from xportrait_core.pipeline import encode_init_video

        return encode_init_video(self.model, init_fhwc, self.reference.resolution, self.frames)

    def conditioning(self, context: torch.Tensor, uncond_context: torch.Tensor) -> Conditioning:
        references = [latent.float().cpu() * self.scale_factor for latent in self.reference.latents]
        return Conditioning(reference_latents=references, pose_hints=self.pose_hints, local_hints=self.local_hints,
                            context=context, uncond_context=uncond_context)
