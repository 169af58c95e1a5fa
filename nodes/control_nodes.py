"""Nodes that turn images into what X-Portrait samples with: the appearance reference, the aligned driving frames
(pose control) and their eye and mouth patches (local control)."""
from __future__ import annotations

import logging
from typing import Any

from . import host
from .errors import XPortraitInputError, about_input, input_error
from .loader_nodes import landmark_provider
from .types import CATEGORY, LANDMARKS, REFERENCE

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 512  # the released model was trained at 512 px
MIN_RESOLUTION = 64
MAX_RESOLUTION = 2048
RESOLUTION_STEP = 64  # latents must pass the UNet's three 2x downsamplings: 8 px per latent x 8
BEST_FRAME_CHOICES = ["auto", "index", "off"]
NOT_ALIGNED = -1  # the best_frame output when the driving frames were not aligned


def _fit_choices() -> list[str]:
    from xportrait_core.media.image_fit import FIT_MODES

    return list(FIT_MODES)


def _fit_tooltip() -> dict[str, Any]:
    return {"default": "center_crop", "tooltip": "How a photo or video that is not square is made square: "
            "center_crop cuts the sides, pad adds black borders, resize squeezes it (as the original X-Portrait)."}


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
    OUTPUT_TOOLTIPS = ("How the person looks, for the X-Portrait Sampler's reference input.",
                       "The photo(s) as the model sees them (squared and resized), to check the framing.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "source": ("IMAGE", {"tooltip": "The portrait to animate: one photo with a clearly visible face."}),
                "vae": ("VAE", {"tooltip": "Connect the vae output of Load X-Portrait Model."}),
                "resolution": _resolution_input("Size in pixels of the animation (square). 512 is what the model "
                                                "was trained for; set Motion Control to the same value."),
                "fit": (_fit_choices(), _fit_tooltip()),
            },
            "optional": {"extra_references": ("IMAGE", {"tooltip": "More photos of the same person (several "
                                                        "photos batched together); they help with details the "
                                                        "portrait does not show."})},
        }

    def encode(self, source: Any, vae: Any, resolution: int, fit: str, extra_references: Any = None
               ) -> tuple[Any, Any]:
        import torch

        from .comfy_types import XPortraitReference
        from xportrait_core.controls.frame_hooks import FrameCounter
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
        counter = FrameCounter(host.frame_progress(node), len(images_bhwc))
        latents = []
        for image in images_bhwc:
            counter.check()
            latents.append(vae.encode(image[None]))
            counter.advance(1)
        return XPortraitReference(latents=tuple(latents), images=images_bhwc), images_bhwc


class MotionControl:
    DESCRIPTION = ("Aligns the driving video to the source portrait (pose control): every frame is squared, "
                   "resized and moved so the driving face in the best frame sits where the source face is.")
    CATEGORY = CATEGORY
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE", "INT", "IMAGE")
    RETURN_NAMES = ("motion", "best_frame", "preview")
    OUTPUT_TOOLTIPS = ("The driving video moved and scaled so its face sits where the portrait's face is: the "
                       "head motion the animation follows. Connect to the Sampler and to Local Patches.",
                       f"Number of the driving frame used to line the faces up ({NOT_ALIGNED}: not lined up).",
                       "Portrait and lined-up driving frame side by side, to check the alignment.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "driving": ("IMAGE", {"tooltip": "The driving video's frames (images of Get Video Components): "
                            "whose head motion and expressions the portrait will follow."}),
                "source": ("IMAGE", {"tooltip": "The same portrait as X-Portrait Reference's source."}),
                "best_frame": (BEST_FRAME_CHOICES, {"default": "auto", "tooltip": "Which driving frame the faces "
                               "are lined up on. auto: the one whose face looks most like the portrait's; index: "
                               "the frame number below; off: no lining up (the video is framed like the portrait "
                               "already)."}),
                "best_frame_index": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                             "tooltip": "Frame number (0 is the first) to line up on when "
                                             "best_frame is index."}),
                "fit": (_fit_choices(), _fit_tooltip()),
                "resolution": _resolution_input("Size in pixels of the animation (square); set X-Portrait "
                                                "Reference to the same value."),
            },
            "optional": {"landmarks": (LANDMARKS, {"tooltip": "The face detector from X-Portrait Landmark "
                                       "Provider; dlib when nothing is connected."})},
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
        log.info("%s: aligning %d driving frames", node, len(driving))
        try:
            with about_input(node, input_name):
                # "transform": the local patches node detects on the aligned frames itself, so here the cheapest
                # landmark mode is enough (no second detection pass with best_frame "auto").
                controls = prepare_driving_controls(driving, source, _provider(landmarks), resolution=resolution,
                                                    best_frame=choice, fit=fit, patch_landmarks="transform",
                                                    device=host.sampling_device(), hooks=host.frame_progress(node))
        except XPortraitInputError as error:
            if isinstance(error.__cause__, SourceFaceNotFoundError):  # the source is at fault, not the driving video
                raise input_error(node, "source", error.__cause__.reworded("best_frame 'off'")) from error.__cause__
            raise
        motion = hint_images(controls.pose_hints)
        host.check_interrupt()  # the preview of a long clip takes a while too (0.4 s for 240 frames at 512 px)
        used = NOT_ALIGNED if controls.best_frame is None else controls.best_frame
        return motion, used, side_by_side([hint_images(controls.source_image), motion])


class LocalPatches:
    DESCRIPTION = ("The local control: the eye and mouth squares of the aligned frames (from Motion Control), "
                   "black elsewhere. Landmarks are detected on the aligned frames.")
    CATEGORY = CATEGORY
    FUNCTION = "extract"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("local_patches", "preview")
    OUTPUT_TOOLTIPS = ("The eyes and mouth of every lined-up frame on black: the expressions the animation "
                       "follows. Connect to the Sampler's local_patches.",
                       "Lined-up frame and its eye and mouth patches side by side, to check them.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "motion": ("IMAGE", {"tooltip": "Connect the motion output of X-Portrait Motion Control."}),
                "missing_face": (["black", "nearest"], {"default": "black", "tooltip": "What a frame gets where "
                                 "no face is found. black: no eye and mouth detail there (as the original); "
                                 "nearest: the eye and mouth positions of the closest frame with a face."}),
            },
            "optional": {"landmarks": (LANDMARKS, {"tooltip": "The face detector from X-Portrait Landmark "
                                       "Provider (the same as Motion Control's); dlib when nothing is connected."})},
        }

    def extract(self, motion: Any, missing_face: str, landmarks: Any = None) -> tuple[Any, Any]:
        from .comfy_types import hint_images, local_patches_of_aligned
        from xportrait_core.media.video_io import side_by_side

        node = "X-Portrait Local Patches"
        with about_input(node, "motion"):
            patches = local_patches_of_aligned(motion, _provider(landmarks), missing_face, host.frame_progress(node))
        local = hint_images(patches.local_hints)
        return local, side_by_side([motion, local])
