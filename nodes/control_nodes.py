"""Nodes that turn images into what X-Portrait samples with: the appearance reference, the aligned driving frames
(pose control) and their eye and mouth patches (local control). Each is one call of `xportrait_core.pipeline`."""
from __future__ import annotations

import logging
from typing import Any

from xportrait_core.options import BestFrameChoice, DrivingCrop, FitMode, MissingFace

from . import host
from .errors import XPortraitInputError, about_input, input_error
from .loader_nodes import landmark_provider
from .node_inputs import OptionNode
from .types import REFERENCE

log = logging.getLogger(__name__)

NOT_ALIGNED = -1  # the best_frame output when the driving frames were not aligned


def _provider(landmarks: Any) -> Any:
    return landmarks if landmarks is not None else landmark_provider("dlib")


class Reference(OptionNode):
    DISPLAY_NAME = "X-Portrait Reference"
    DESCRIPTION = ("The portrait to animate (and optional extra reference images of the same person), squared by "
                   "'fit', resized to 'resolution' and encoded with the VAE. The preview shows what was encoded.")
    FUNCTION = "encode"
    RETURN_TYPES = (REFERENCE, "IMAGE")
    RETURN_NAMES = ("reference", "preview")
    OUTPUT_TOOLTIPS = ("How the person looks, for the X-Portrait Sampler's reference input.",
                       "The photo(s) as the model sees them (squared and resized), to check the framing.")
    REQUIRED_OPTIONS = ("source", "vae", "resolution", "fit")
    OPTIONAL_OPTIONS = ("extra_references",)

    def encode(self, source: Any, vae: Any, resolution: int, fit: FitMode, extra_references: Any = None
               ) -> tuple[Any, Any]:
        from xportrait_core.pipeline import Framing, encode_references, reference_images

        with about_input(Reference, "resolution"):
            framing = Framing(resolution, fit)
        with about_input(Reference, "source"):
            images = reference_images(source, [] if extra_references is None else [extra_references], framing)
        references = encode_references(vae.encode, images, host.current().frame_progress(self.DISPLAY_NAME))
        return references, references.images


class MotionControl(OptionNode):
    DISPLAY_NAME = "X-Portrait Motion Control"
    DESCRIPTION = ("Aligns the driving video to the source portrait (pose control): every frame is squared, "
                   "resized and moved so the driving face in the best frame sits where the source face is. With "
                   "driving_crop track_face it first follows the face of a full-frame video (as X-Portrait Track "
                   "Face does with its default margin and smoothing; use that node to change them or see the track).")
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE", "INT", "IMAGE")
    RETURN_NAMES = ("motion", "best_frame", "preview")
    OUTPUT_TOOLTIPS = ("The driving video moved and scaled so its face sits where the portrait's face is: the "
                       "head motion the animation follows. Connect to the Sampler and to Local Patches.",
                       f"Number of the driving frame used to line the faces up ({NOT_ALIGNED}: not lined up).",
                       "Portrait and lined-up driving frame side by side, to check the alignment.")
    REQUIRED_OPTIONS = ("driving", "source", "best_frame", "best_frame_index", "fit", "resolution")
    # driving_crop is optional so that API graphs saved before it existed still run (absent: full_frame)
    OPTIONAL_OPTIONS = ("landmarks", "driving_crop")

    def align(self, driving: Any, source: Any, best_frame: BestFrameChoice, best_frame_index: int, fit: FitMode,
              resolution: int, landmarks: Any = None, driving_crop: DrivingCrop = "full_frame"
              ) -> tuple[Any, int, Any]:
        from xportrait_core.options import OptionError
        from xportrait_core.pipeline import Framing, align_driving, images_of_hints, side_by_side, tracking_for

        with about_input(MotionControl, "resolution"):
            framing = Framing(resolution, fit)
        with about_input(MotionControl, "driving_crop"):
            tracking = tracking_for(driving_crop)
        choice = int(best_frame_index) if best_frame == "index" else best_frame
        log.info("%s: aligning %d driving frames", self.DISPLAY_NAME, len(driving))
        try:
            with about_input(MotionControl, "driving"):
                seam = host.current()
                aligned = align_driving(driving, source, _provider(landmarks), framing, choice,
                                        device=seam.sampling_device(), hooks=seam.frame_progress(self.DISPLAY_NAME),
                                        tracking=tracking)
        except XPortraitInputError as error:
            cause = error.__cause__
            if best_frame == "index" and isinstance(cause, OptionError) and cause.option == "best_frame":
                raise input_error(MotionControl, "best_frame_index", cause.detail) from cause  # the index is at fault
            raise
        motion = images_of_hints(aligned.pose_hints)
        host.current().check_interrupt()  # the preview of a long clip takes a while too
        used = NOT_ALIGNED if aligned.best_frame is None else aligned.best_frame
        assert aligned.source_image is not None, "source is a required input, so it is aligned too"
        return motion, used, side_by_side([images_of_hints(aligned.source_image), motion])


class LocalPatches(OptionNode):
    DISPLAY_NAME = "X-Portrait Local Patches"
    DESCRIPTION = ("The local control: the eye and mouth squares of the aligned frames (from Motion Control), "
                   "black elsewhere. Landmarks are detected on the aligned frames.")
    FUNCTION = "extract"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("local_patches", "preview")
    OUTPUT_TOOLTIPS = ("The eyes and mouth of every lined-up frame on black: the expressions the animation "
                       "follows. Connect to the Sampler's local_patches.",
                       "Lined-up frame and its eye and mouth patches side by side, to check them.")
    REQUIRED_OPTIONS = ("motion", "missing_face")
    OPTIONAL_OPTIONS = ("landmarks",)

    def extract(self, motion: Any, missing_face: MissingFace, landmarks: Any = None) -> tuple[Any, Any]:
        from xportrait_core.pipeline import hints_of_images, images_of_hints, local_patches, side_by_side

        with about_input(LocalPatches, "motion"):
            patches = local_patches(hints_of_images(motion, "motion"), _provider(landmarks), missing_face,
                                    hooks=host.current().frame_progress(self.DISPLAY_NAME))
        local = images_of_hints(patches.local_hints)
        return local, side_by_side([motion, local])
