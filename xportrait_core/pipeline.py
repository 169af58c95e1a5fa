"""The X-Portrait flow as the calls both front ends make: each ComfyUI node makes one of them, the command line all
of them in a row (`animate`).

    framing = Framing(512, "center_crop")
    references = encode_references(vae.encode, reference_images(source, extras, framing))  # X-Portrait Reference
    aligned = align_driving(driving, source, provider, framing, "auto")                     # Motion Control
    patches = local_patches(aligned.pose_hints, provider, "black")                          # Local Patches
    conditioning = build_conditioning(model, references, pose, local, context, context)     # Sampler, Guider
    result = sample_video(model, conditioning, SamplerOptions(), loras=...)                 # Sampler
    denoiser = windowed_denoiser(model, conditioning, options, sigmas)                      # Guider
    frames = decode_to_images(model, result.latents)                                        # VAE Decode

Every call checks the options it is given where they enter (OptionError naming the option). Images at this level are
ComfyUI IMAGE tensors: float (F, H, W, 3) in [0, 1]; hints are (F, 3, R, R) in [-1, 1]; reference latents follow
ComfyUI's LATENT convention (unscaled VAE space), sampling latents are scaled.

The front ends need nothing below this module but the option table (`options`) and the landmark providers: the
types its calls take are importable from here too (Framing, SamplerOptions, SamplerHooks, DenoiserHooks, FrameHooks,
LoraChoice, XPortraitModel; the image <-> hint conversions; the SD1.5 schedule's numbers, for hosts that rebuild it).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from .controls.driving_controls import (
    AlignedDriving,
    LocalPatches,
    alignment_work,
    local_patches_from_landmarks,
    moved_landmarks,
    patches_work,
)
from .controls.driving_controls import align_driving as align_frames
from .controls.driving_controls import local_patches as detect_local_patches
from .controls.face_framing import FaceCrop, crop_face
from .controls.face_tracking import FaceTrack, FaceTracking, crop_tracked, track_face, tracking_for, tracking_work
from .controls.frame_hooks import FrameCounter, FrameHooks
from .controls.landmarks import LandmarkProvider
from .media.box_preview import faces_preview, track_preview
from .media.crop_geometry import CropRecord
from .media.image_fit import Framing, hints_of_images, images_of_hints
from .media.paste_back import border_colour_step, paste_back, pasted_chunks
from .media.tensor_checks import check_device, check_tensor
from .media.video_io import side_by_side
from .model.checkpoint import load_model
from .model.compilation import accelerated, check_compile_mode, compile_blocks
from .model.lora import LoraChoice, LoraFileError, LoraPatch, apply_lora, lora_targets, read_lora
from .model.schedule import DDPM_TRAIN_STEPS, LINEAR_END, LINEAR_START
from .model.xportrait_model import XPortraitModel
from .networks.attention import AttentionFunction
from .networks.layer_ops import LayerOps
from .options import (
    VAE_DOWNSCALE,
    AttentionChoice,
    CompileMode,
    MissingFace,
    OptionError,
    Precision,
    check,
    check_best_frame,
    default,
)
from .sampling.finite_check import PRECISION_ADVICE, NonFiniteError, frame_ranges, non_finite_frames
from .sampling.guidance import Conditioning, DenoiserHooks, WindowedGuidedDenoiser
from .sampling.sampler import SamplerHooks, SamplerOptions, SamplerResult, guided_denoiser, sample

log = logging.getLogger(__name__)

__all__ = [  # the calls, and the types they take (see the module docstring)
    "AlignedDriving", "Animation", "CropRecord", "FaceCrop", "FaceTrack", "FaceTracking", "border_colour_step",
    "crop_face", "face_crop_preview", "paste_back", "pasted_chunks", "track_driving_face", "track_preview",
    "tracking_for",
    "AnimationInputs", "ControlOptions", "DDPM_TRAIN_STEPS", "DenoiserHooks",
    "DrivingControls", "FrameHooks", "Framing", "ImageVAE", "LINEAR_END", "LINEAR_START", "LocalPatches",
    "LoraChoice", "References", "SamplerHooks", "SamplerOptions", "align_driving", "animate", "build_conditioning",
    "check_compile_mode", "check_lora_file", "decode_to_images", "encode_init_video", "encode_references",
    "hints_of_images", "images_of_hints", "load_xportrait", "local_patches", "lora_patch_targets", "loras_merged",
    "prepare_controls",
    "reference_images", "sample_references", "sample_video", "side_by_side", "windowed_denoiser", "XPortraitModel",
]
ReferencePosterior = Literal["mean", "per_frame_samples"]
PatchLandmarks = Literal["detect_aligned", "transform"]


# ------------------------------------------------------------------------------------------------------ model
def load_xportrait(path: str | os.PathLike, *, device: torch.device | str, precision: Precision = "auto",
                   attention: AttentionChoice = "auto", text_num_heads: int | None = None,
                   compile_mode: CompileMode = "off", compute_device: torch.device | str | None = None,
                   ops: LayerOps | None = None, attention_function: AttentionFunction | None = None
                   ) -> XPortraitModel:
    """A checkpoint loaded for sampling (`model.checkpoint.load_model`), its blocks compiled when compile_mode is
    compile_blocks. The compile mode is checked against the device beforehand, by `check_compile_mode`, where the
    front end can say so before any work. attention_function: the host's attention (ComfyUI's), used when attention
    is "auto"; a backend named explicitly is the pack's own."""
    check_device(device)
    if compute_device is not None:
        check_device(compute_device, "compute_device")
    model, _ = load_model(path, device=device, precision=precision, attention_backend=attention,
                          text_num_heads=text_num_heads, ops=ops, compute_device=compute_device)
    if attention == "auto" and attention_function is not None:
        model.use_attention_function(attention_function, getattr(attention_function, "__name__", "host"))
    if compile_mode == "compile_blocks":
        compile_blocks(model)
    return model


def check_lora_file(path: str | os.PathLike) -> None:
    """LoraFileError, naming the file, unless it is a readable SD1.5 LoRA with finite values (before any work)."""
    read_lora(path)


# ------------------------------------------------------------------------------------------------ references
@dataclass(frozen=True)
class References:
    """The appearance references of one animation.

    latents: one UNSCALED latent per reference image, main (source) first: (1, 4, R/8, R/8) posterior means (their
        bank shared by all frames), or (F, 4, R/8, R/8) per-frame posterior samples, as the original draws them.
    images: (B, R, R, 3) in [0, 1], the references as fitted and resized for the model (what was encoded).
    """

    latents: tuple[torch.Tensor, ...]
    images: torch.Tensor

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])


def reference_images(source_fhwc: torch.Tensor, extra_references: Sequence[torch.Tensor], framing: Framing
                     ) -> torch.Tensor:
    """The portrait (one image) and any extra references, squared and resized: (B, R, R, 3) in [0, 1]."""
    if source_fhwc.ndim == 4 and source_fhwc.shape[0] != 1:
        raise OptionError("source", f"expected one image, got a batch of {source_fhwc.shape[0]}; pick one")
    images = []
    for option, what, image in [("source", "source image", source_fhwc)] + \
            [("extra_references", "extra reference", extra) for extra in extra_references]:
        try:
            images.append(framing.model_images(image, what))
        except (TypeError, ValueError) as error:
            raise OptionError(option, str(error), leads=False) from error
    return ((torch.cat(images) + 1) / 2).permute(0, 2, 3, 1).contiguous().cpu()


def encode_references(encode: Callable[[torch.Tensor], torch.Tensor], images_bhwc: torch.Tensor,
                      hooks: FrameHooks | None = None) -> References:
    """Each reference image through `encode` (IMAGE (1, R, R, 3) -> unscaled posterior mean (1, 4, R/8, R/8): the
    `ImageVAE` contract, which ComfyUI's VAE honours too), with progress and the interrupt check per image."""
    counter = FrameCounter(hooks, len(images_bhwc))
    latents = []
    for image in images_bhwc:
        counter.check()
        latents.append(encode(image[None]).float().cpu())
        counter.advance(1)
    return References(latents=tuple(latents), images=images_bhwc)


def sample_references(model: XPortraitModel, images_bhwc: torch.Tensor, frames: int,
                      generator: torch.Generator) -> References:
    """Per-frame posterior samples of each reference, as the original draws them: (frames, 4, R/8, R/8) each,
    unscaled (the appearance net then runs on every frame once per step)."""
    latents = []
    with torch.no_grad():
        for image in images_bhwc:
            batch = (image.permute(2, 0, 1)[None] * 2 - 1).expand(frames, -1, -1, -1)
            side = image.shape[0] // VAE_DOWNSCALE
            noise = torch.randn((frames, 4, side, side), generator=generator)
            latents.append(model.encode_images(batch, noise).float().cpu() / model.config.vae.scale_factor)
    return References(latents=tuple(latents), images=images_bhwc)


class ImageVAE:
    """ComfyUI's VAE contract (`comfy.sd.VAE`) over the checkpoint's own AutoencoderKL, for use without ComfyUI.

    encode: IMAGE (B, H, W, 3) in [0, 1] -> UNSCALED posterior mean (B, 4, H/8, W/8); H and W are centre-cropped
    to multiples of 8 first, as ComfyUI does. decode: UNSCALED (B, 4, h, w) -> IMAGE (B, 8h, 8w, 3) in [0, 1].
    """

    def __init__(self, model: XPortraitModel) -> None:
        self._model = model
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
            mean, _ = self._vae.encode_moments((pixels.movedim(-1, 1) * 2 - 1).to(device, dtype),
                                               self._model.vae_frames_per_call(crop_h, crop_w))
        return mean.float().cpu()

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        device, dtype = self._device_dtype()
        with torch.no_grad():
            images = self._vae.decoder(self._vae.post_quant_conv(samples.to(device, dtype)))
        return ((images.float() + 1) / 2).clamp(0, 1).movedim(1, -1).cpu()


# ---------------------------------------------------------------------------------------------------- controls
def _device(device: torch.device | str | None) -> torch.device:
    return check_device(device)


def align_driving(driving_fhwc: torch.Tensor, source_fhwc: torch.Tensor | None, provider: LandmarkProvider,
                  framing: Framing = Framing(), best_frame: str | int | None = "auto", *,
                  device: torch.device | str | None = None, hooks: FrameHooks | None = None,
                  tracking: FaceTracking | None = None) -> AlignedDriving:
    """The pose control: the driving video aligned to the source portrait (`controls.driving_controls`). best_frame:
    "auto", "off" (or None) or a frame index. device: where frames are resized and warped (default CUDA when there is
    one). hooks: progress per frame or group of frames, and the interrupt check before each. tracking: follow the
    face of a full-frame driving video and align its crops (`controls.face_tracking`)."""
    best_frame = check_best_frame(best_frame)
    counter = FrameCounter(hooks, alignment_work(len(driving_fhwc), best_frame, tracking is not None))
    return align_frames(driving_fhwc, source_fhwc, provider, framing, best_frame, device=_device(device),
                        counter=counter, tracking=tracking)


# ---------------------------------------------------------------------------------------------- full pictures
def face_crop_preview(picture_fhwc: torch.Tensor, face_crop: FaceCrop) -> torch.Tensor:
    """IMAGE (1, h, w, 3): the picture with every face found numbered and the chosen face and its crop boxed."""
    box = face_crop.record.box
    crop_box = (box.left, box.top, box.left + box.side - 1, box.top + box.side - 1)
    return faces_preview(picture_fhwc, [face.box for face in face_crop.faces], face_crop.chosen, crop_box)


def track_driving_face(driving_fhwc: torch.Tensor, provider: LandmarkProvider, tracking: FaceTracking,
                       resolution: int, *, hooks: FrameHooks | None = None) -> tuple[torch.Tensor, FaceTrack]:
    """The face of a full-frame driving video followed and cropped: (IMAGE (F, resolution, resolution, 3), the track)
    (what `align_driving` does first when given `tracking`)."""
    check("resolution", resolution)
    counter = FrameCounter(hooks, tracking_work(len(driving_fhwc)))
    track = track_face(driving_fhwc, provider, tracking, counter)
    return crop_tracked(driving_fhwc, track, resolution, counter), track


def local_patches(pose_hints_fchw: torch.Tensor, provider: LandmarkProvider, missing_face: MissingFace = "black",
                  *, hooks: FrameHooks | None = None) -> LocalPatches:
    """The local control of aligned frames (F, 3, R, R) in [-1, 1] (`image_fit.hints_of_images` turns Motion Control's
    IMAGE into them): landmarks detected on the aligned frames, as the original."""
    check("missing_face", missing_face)
    check_tensor(pose_hints_fchw, "motion", "(F, 3, R, R)", channels=3, square=True)
    counter = FrameCounter(hooks, patches_work(pose_hints_fchw.shape[0], detect=True))
    return detect_local_patches(pose_hints_fchw, provider, missing_face, counter=counter)


@dataclass(frozen=True)
class ControlOptions:
    """How the driving video becomes the two controls, checked when made. patch_landmarks: "detect_aligned" (detect
    the landmarks of the patches on the aligned frames, as the original) or "transform" (move the landmarks
    best_frame "auto" detected by the alignment affine instead: one detection pass fewer)."""

    framing: Framing = Framing()
    best_frame: str | int | None = default("best_frame")
    missing_face: MissingFace = default("missing_face")
    patch_landmarks: PatchLandmarks = "detect_aligned"
    tracking: FaceTracking | None = None  # follow the face of a full-frame driving video (driving_crop track_face)

    def __post_init__(self) -> None:
        object.__setattr__(self, "best_frame", check_best_frame(self.best_frame))
        check("missing_face", self.missing_face)
        if self.patch_landmarks not in ("detect_aligned", "transform"):
            raise ValueError(f"patch_landmarks must be detect_aligned or transform, got {self.patch_landmarks!r}")


@dataclass(frozen=True)
class DrivingControls:
    """Both controls of a driving video, for the command line and `animate`."""

    aligned: AlignedDriving
    patches: LocalPatches


def prepare_controls(driving_fhwc: torch.Tensor, source_fhwc: torch.Tensor | None, provider: LandmarkProvider,
                     options: ControlOptions = ControlOptions(), *, device: torch.device | str | None = None,
                     hooks: FrameHooks | None = None) -> DrivingControls:
    """`align_driving` then the local patches, with one progress count over both."""
    frames = len(driving_fhwc)
    best_frame = options.best_frame
    assert best_frame is not None, "ControlOptions turns None into off"
    reuse = options.patch_landmarks == "transform" and best_frame == "auto"
    counter = FrameCounter(hooks, alignment_work(frames, best_frame, options.tracking is not None)
                           + patches_work(frames, not reuse))
    aligned = align_frames(driving_fhwc, source_fhwc, provider, options.framing, best_frame,
                           device=_device(device), counter=counter, tracking=options.tracking)
    moved = moved_landmarks(aligned) if reuse else None
    if moved is None:
        patches = detect_local_patches(aligned.pose_hints, provider, options.missing_face, counter=counter)
    else:
        patches = local_patches_from_landmarks(aligned.pose_hints, moved, options.missing_face, counter=counter)
    return DrivingControls(aligned, patches)


# ---------------------------------------------------------------------------------------------------- sampling
def build_conditioning(model: XPortraitModel, references: References, pose_hints: torch.Tensor,
                       local_hints: torch.Tensor, context: torch.Tensor | None = None,
                       uncond_context: torch.Tensor | None = None) -> Conditioning:
    """The sampler's conditioning from the references, the two controls' hints (F, 3, R, R) and the text contexts
    (None: the empty prompt of the checkpoint's own text encoder, as the original). OptionError naming the input
    that does not fit."""
    if pose_hints.shape != local_hints.shape:
        raise OptionError("local_patches", f"are {tuple(local_hints.shape)} but the motion {tuple(pose_hints.shape)};"
                          " both come from the same driving video (the local patches are cut from the motion frames)")
    if pose_hints.shape[-1] != references.resolution:
        raise OptionError("motion", f"motion frames are {pose_hints.shape[-1]} px but the reference is "
                          f"{references.resolution} px; set the same {{resolution}}", leads=False)
    if context is None or uncond_context is None:
        empty = model.encode_empty_prompt().float().cpu()
        context = empty if context is None else context
        uncond_context = empty if uncond_context is None else uncond_context
    scale = model.config.vae.scale_factor
    return Conditioning(reference_latents=[latent.float().cpu() * scale for latent in references.latents],
                        pose_hints=pose_hints, local_hints=local_hints, context=context, uncond_context=uncond_context)


def encode_init_video(encode: Callable[[torch.Tensor], torch.Tensor], init_fhwc: torch.Tensor, framing: Framing,
                      frames: int, scale_factor: float) -> torch.Tensor:
    """IMAGE of another video (one frame per driving frame), squared and resized as the references, through `encode`
    (the VAE contract, as `encode_references`: the VAE object of the graph inside ComfyUI, `ImageVAE` alone) ->
    scaled posterior means (F, 4, R/8, R/8) on the CPU, the clean latents an "init_video" start noises."""
    images = framing.model_images(init_fhwc, "init video")
    if images.shape[0] != frames:
        raise OptionError("init_video", f"the init video has {images.shape[0]} frames but the driving video {frames}; "
                          "give one init frame per driving frame", leads=False)
    with torch.no_grad():
        return encode(((images + 1) / 2).permute(0, 2, 3, 1).cpu()).float().cpu() * scale_factor


def lora_patch_targets(model: XPortraitModel, choice: LoraChoice, prefix: str
                       ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A LoRA for a host that applies it as its own weight patches (ComfyUI: comfy.lora.load_lora, add_patches):
    the file's tensors (checked as `check_lora_file` does) and the map from its layer names to the main UNet's weight
    names under ``prefix`` (where the host's model object holds the UNet), for the layers that fit, as
    `loras_merged` merges them. LoraFileError naming the file when none fits."""
    tensors = read_lora(choice.path)
    shapes = {name: weight.shape for name, weight in model.unet.state_dict().items()}
    try:
        return tensors, lora_targets(shapes, tensors, prefix)
    except ValueError as error:  # no layer fits this UNet: a LoRA of another base model
        raise LoraFileError(f"LoRA file '{choice.name}': {error}") from error


@contextlib.contextmanager
def loras_merged(model: XPortraitModel, loras: Sequence[LoraChoice]) -> Iterator[list[LoraPatch]]:
    """Every LoRA merged into the main UNet, in order, for the duration of the block; the weights are restored when
    it ends, by an error or an interrupt too."""
    with contextlib.ExitStack() as merged:
        yield [merged.enter_context(_lora_applied(model, choice)) for choice in loras if choice.strength != 0]


@contextlib.contextmanager
def _lora_applied(model: XPortraitModel, choice: LoraChoice) -> Iterator[LoraPatch]:
    try:
        patch = apply_lora(model.unet, read_lora(choice.path), choice.strength)
    except LoraFileError:
        raise
    except ValueError as error:  # no layer fits this UNet: a LoRA of another base model
        raise LoraFileError(f"LoRA file '{choice.name}': {error}") from error
    log.info("LoRA %s: %d layers merged at strength %g", choice.name, len(patch.applied), choice.strength)
    try:
        yield patch
    finally:
        patch.undo()


def sample_video(model: XPortraitModel, conditioning: Conditioning, options: SamplerOptions = SamplerOptions(), *,
                 init_latents: torch.Tensor | None = None, loras: Sequence[LoraChoice] = (),
                 compile_mode: CompileMode = "off", hooks: SamplerHooks = SamplerHooks()) -> SamplerResult:
    """`sampling.sampler.sample` with the LoRAs merged for the run and the model run as `compile_mode` says (off,
    cuda_graphs; compile_blocks is applied to the model once, by whoever loads it)."""
    with loras_merged(model, loras):
        return sample(accelerated(model, compile_mode), conditioning, options, init_latents=init_latents,
                      hooks=hooks)


def windowed_denoiser(model: XPortraitModel, conditioning: Conditioning, options: SamplerOptions,
                      sigmas: Sequence[float] | torch.Tensor, *, compile_mode: CompileMode = "off",
                      hooks: DenoiserHooks = DenoiserHooks()) -> WindowedGuidedDenoiser:
    """The denoiser `(x, sigma) -> denoised` a core sampler drives over `sigmas`: the same windowed guided denoiser
    `sample_video` drives, with the options' cfg, windows and seed (which draws the random window offsets)."""
    options.check_video(conditioning.num_frames)
    return guided_denoiser(accelerated(model, compile_mode), conditioning, options, sigmas, hooks)


def decode_to_images(model: XPortraitModel, latents: torch.Tensor) -> torch.Tensor:
    """Latents (F, 4, h, w) -> IMAGE (F, 8h, 8w, 3) in [0, 1] on the CPU (clamped, as the original). NonFiniteError
    when the VAE's output holds NaN or inf (clamping would hide it as black frames)."""
    check_tensor(latents, "latents", "(F, 4, h, w)", channels=4)
    frames = []
    chunk = model.vae_frames_per_call(VAE_DOWNSCALE * latents.shape[-2], VAE_DOWNSCALE * latents.shape[-1])
    with torch.no_grad():
        for first, part in zip(range(0, latents.shape[0], chunk), latents.split(chunk)):
            images = model.decode_latents(part).float()
            bad = [first + index for index in non_finite_frames(images)]
            if bad:
                raise NonFiniteError(f"decoding went non-finite (NaN or infinite pixels) in frames {frame_ranges(bad)};"
                                     f" the result would be black, so nothing was written. {PRECISION_ADVICE}.", bad)
            frames.append(((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu())
    return torch.cat(frames)


# ---------------------------------------------------------------------------------------------- end to end
@dataclass(frozen=True)
class AnimationInputs:
    """What one animation is made of: the portrait (one IMAGE), the driving video (IMAGE frames), more photos of
    the person (each an IMAGE), and the frames of a video to start from (one per driving frame, or None)."""

    source: torch.Tensor
    driving: torch.Tensor
    extra_references: Sequence[torch.Tensor] = ()
    init_frames: torch.Tensor | None = None


@dataclass
class Animation:
    frames: torch.Tensor            # IMAGE (F, R, R, 3) in [0, 1]
    latents: torch.Tensor           # (F, 4, R/8, R/8)
    controls: DrivingControls
    result: SamplerResult


def animate(model: XPortraitModel, inputs: AnimationInputs, provider: LandmarkProvider, *,
            controls: ControlOptions = ControlOptions(), sampling: SamplerOptions = SamplerOptions(),
            loras: Sequence[LoraChoice] = (), reference_posterior: ReferencePosterior = "mean",
            compile_mode: CompileMode = "off", hooks: SamplerHooks = SamplerHooks(),
            prepared: DrivingControls | None = None) -> Animation:
    """Animate one portrait with a driving video, end to end, with the empty-prompt context.

    prepared: the driving controls when already prepared with these control options (e.g. by the command line
    before loading the model, so that a source without a face is reported at once)."""
    if prepared is None:
        prepared = prepare_controls(inputs.driving, inputs.source, provider, controls)
    pose, local = prepared.aligned.pose_hints.cpu(), prepared.patches.local_hints.cpu()
    frames = pose.shape[0]
    images = reference_images(inputs.source, inputs.extra_references, controls.framing)
    if reference_posterior == "per_frame_samples":
        references = sample_references(model, images, frames, torch.Generator().manual_seed(sampling.seed))
    else:
        references = encode_references(ImageVAE(model).encode, images)
    init_latents = None
    if inputs.init_frames is not None:
        init_latents = encode_init_video(ImageVAE(model).encode, inputs.init_frames, controls.framing, frames,
                                         model.config.vae.scale_factor)
        if sampling.start != "init_video":
            sampling = replace(sampling, start="init_video")
    conditioning = build_conditioning(model, references, pose, local)
    result = sample_video(model, conditioning, sampling, init_latents=init_latents, loras=loras,
                          compile_mode=compile_mode, hooks=hooks)
    return Animation(frames=decode_to_images(model, result.latents), latents=result.latents, controls=prepared,
                     result=result)
