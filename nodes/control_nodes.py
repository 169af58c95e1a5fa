"""Nodes that turn images into what X-Portrait samples with: the appearance reference, the aligned driving frames
(pose control) and their eye and mouth patches (local control)."""
from __future__ import annotations

from typing import Any

from . import host
from .errors import XPortraitInputError, about_input, input_error
from .loader_nodes import landmark_provider
from .types import CATEGORY, LANDMARKS, REFERENCE

DEFAULT_RESOLUTION = 512  # the released model was trained at 512 px
MIN_RESOLUTION = 64
MAX_RESOLUTION = 2048
RESOLUTION_STEP = 64  # latents must pass the UNet's three 2x downsamplings: 8 px per latent x 8
BEST_FRAME_CHOICES = ["auto", "index", "off"]
NOT_ALIGNED = -1  # the best_frame output when the driving frames were not aligned


def _fit_choices() -> list[str]:
    from xportrait_core.media.image_fit import FIT_MODES

    return list(FIT_MODES)


def _resolution_input(tooltip: str) -> tuple[str, dict[str, Any]]:
    return ("INT", {"default": DEFAULT_RESOLUTION, "min": MIN_RESOLUTION, "max": MAX_RESOLUTION,
                    "step": RESOLUTION_STEP, "tooltip": tooltip})


def _single_image(images: Any, node: str, input_name: str) -> Any:
    if getattr(images, "ndim", 0) == 4 and images.shape[0] != 1:
        raise XPortraitInputError(f"{node}, input '{input_name}': expected one image, got a batch of "
                                  f"{images.shape[0]}; pick one (e.g. with ImageFromBatch).")
    return images


def _provider(landmarks: Any) -> Any:
    return landmarks if landmarks is not None else landmark_provider("dlib")


class Reference:
    DESCRIPTION = ("The portrait to animate (and optional extra reference images of the same person), squared by "
                   "'fit', resized to 'resolution' and encoded with the VAE. The preview shows what was encoded.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (REFERENCE, "IMAGE")
    RETURN_NAMES = ("reference", "preview")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "source": ("IMAGE", {"tooltip": "The portrait to animate (one image)."}),
                "vae": ("VAE", {"tooltip": "The VAE from Load X-Portrait Model."}),
                "resolution": _resolution_input("Sampling resolution; must equal the Motion Control's."),
                "fit": (_fit_choices(), {"default": "center_crop", "tooltip": "How a non-square image becomes "
                        "square: centre crop, pad with black, or stretch (the original's behaviour)."}),
            },
            "optional": {"extra_references": ("IMAGE", {"tooltip": "More images of the same person; each image "
                                                        "of the batch is one more reference."})},
        }

    def encode(self, source: Any, vae: Any, resolution: int, fit: str, extra_references: Any = None
               ) -> tuple[Any, Any]:
        import torch

        from .comfy_types import XPortraitReference
        from xportrait_core.pipeline import to_model_images

        from xportrait_core.media.image_fit import check_resolution

        node = "X-Portrait Reference"
        with about_input(node, "resolution"):
            check_resolution(resolution)
        _single_image(source, node, "source")
        batches = [("source", source)] + ([("extra_references", extra_references)]
                                          if extra_references is not None else [])
        fitted = []
        for input_name, images in batches:
            with about_input(node, input_name):
                fitted.append((to_model_images(images, resolution, fit, input_name.replace("_", " ")) + 1) / 2)
        images_bhwc = torch.cat(fitted).permute(0, 2, 3, 1).contiguous().cpu()
        latents = tuple(vae.encode(image[None]) for image in images_bhwc)
        return XPortraitReference(latents=latents, images=images_bhwc), images_bhwc


class MotionControl:
    DESCRIPTION = ("Aligns the driving video to the source portrait (pose control): every frame is squared, "
                   "resized and moved so the driving face in the best frame sits where the source face is.")
    CATEGORY = CATEGORY
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE", "INT", "IMAGE")
    RETURN_NAMES = ("motion", "best_frame", "preview")
    OUTPUT_TOOLTIPS = ("Aligned driving frames (F, R, R, 3): the pose control.",
                       f"Driving frame the alignment was computed from; {NOT_ALIGNED} when not aligned.",
                       "Source | aligned frame, per frame.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "driving": ("IMAGE", {"tooltip": "The driving video as a batch of frames."}),
                "source": ("IMAGE", {"tooltip": "The portrait to animate (one image)."}),
                "best_frame": (BEST_FRAME_CHOICES, {"default": "auto", "tooltip": "auto: the frame whose face "
                               "is most like the source's; index: best_frame_index; off: no alignment (frames "
                               "already aligned)."}),
                "best_frame_index": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                             "tooltip": "Frame to align from when best_frame is 'index'."}),
                "fit": (_fit_choices(), {"default": "center_crop"}),
                "resolution": _resolution_input("Sampling resolution; must equal the Reference's."),
            },
            "optional": {"landmarks": (LANDMARKS, {"tooltip": "Landmark provider; dlib when not connected."})},
        }

    def align(self, driving: Any, source: Any, best_frame: str, best_frame_index: int, fit: str,
              resolution: int, landmarks: Any = None) -> tuple[Any, int, Any]:
        from .comfy_types import hint_images
        from xportrait_core.controls.driving_controls import SourceFaceNotFoundError, prepare_driving_controls
        from xportrait_core.media.image_fit import check_resolution
        from xportrait_core.media.video_io import side_by_side

        node = "X-Portrait Motion Control"
        with about_input(node, "resolution"):
            check_resolution(resolution)
        _single_image(source, node, "source")
        choice = {"auto": "auto", "index": int(best_frame_index), "off": None}[best_frame]
        input_name = "best_frame_index" if best_frame == "index" else "driving"
        try:
            with about_input(node, input_name):
                # "transform": the local patches node detects on the aligned frames itself, so here the cheapest
                # landmark mode is enough (no second detection pass with best_frame "auto").
                controls = prepare_driving_controls(driving, source, _provider(landmarks), resolution=resolution,
                                                    best_frame=choice, fit=fit, patch_landmarks="transform",
                                                    device=host.sampling_device())
        except XPortraitInputError as error:
            if isinstance(error.__cause__, SourceFaceNotFoundError):  # the source is at fault, not the driving video
                raise input_error(node, "source", error.__cause__.reworded("best_frame 'off'")) from error.__cause__
            raise
        motion = hint_images(controls.pose_hints)
        used = NOT_ALIGNED if controls.best_frame is None else controls.best_frame
        return motion, used, side_by_side([hint_images(controls.source_image), motion])


class LocalPatches:
    DESCRIPTION = ("The local control: the eye and mouth squares of the aligned frames (from Motion Control), "
                   "black elsewhere. Landmarks are detected on the aligned frames.")
    CATEGORY = CATEGORY
    FUNCTION = "extract"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("local_patches", "preview")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "motion": ("IMAGE", {"tooltip": "Aligned driving frames from Motion Control."}),
                "missing_face": (["black", "nearest"], {"default": "black", "tooltip": "A frame without a "
                                 "face: all-black patches (the original's intent) or the nearest frame's."}),
            },
            "optional": {"landmarks": (LANDMARKS, {"tooltip": "Landmark provider; dlib when not connected."})},
        }

    def extract(self, motion: Any, missing_face: str, landmarks: Any = None) -> tuple[Any, Any]:
        from .comfy_types import hint_images, local_patches_of_aligned
        from xportrait_core.media.video_io import side_by_side

        with about_input("X-Portrait Local Patches", "motion"):
            patches = local_patches_of_aligned(motion, _provider(landmarks), missing_face)
        local = hint_images(patches.local_hints)
        return local, side_by_side([motion, local])
