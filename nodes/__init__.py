"""The ComfyUI nodes of X-Portrait (classic V1 node classes). Heavy modules are imported inside node functions."""
from . import host, requirements_check
from .control_nodes import LocalPatches, MotionControl, Reference
from .face_nodes import FaceCrop, PasteBack, TrackFace
from .guider_node import Guider
from .loader_nodes import LandmarkProvider, LoadModel, LoRA
from .sampler_node import Sampler

requirements_check.report_missing()
host.current().register_model_folders()

NODE_CLASS_MAPPINGS = {
    "XPortraitLoadModel": LoadModel,
    "XPortraitLoRA": LoRA,
    "XPortraitLandmarkProvider": LandmarkProvider,
    "XPortraitReference": Reference,
    "XPortraitMotionControl": MotionControl,
    "XPortraitLocalPatches": LocalPatches,
    "XPortraitSampler": Sampler,
    "XPortraitGuider": Guider,
    "XPortraitFaceCrop": FaceCrop,
    "XPortraitTrackFace": TrackFace,
    "XPortraitPasteBack": PasteBack,
}

NODE_DISPLAY_NAME_MAPPINGS = {node_id: node.DISPLAY_NAME for node_id, node in NODE_CLASS_MAPPINGS.items()}
