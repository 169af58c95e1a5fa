"""Nodes for a face in a whole picture: crop it for X-Portrait, follow the face of a full-frame driving video, and
paste the animation back into the picture at its own resolution (docs/face_framing.md). Each is one call of
`xportrait_core.pipeline`."""
from __future__ import annotations

import logging
from typing import Any

from . import host
from .errors import about_input
from .loader_nodes import landmark_provider
from .node_inputs import OptionNode
from .types import CROP_RECORD

log = logging.getLogger(__name__)


def landmark_provider_or_default(landmarks: Any) -> Any:
    """The provider connected, or the default dlib one (as Motion Control and Local Patches)."""
    return landmarks if landmarks is not None else landmark_provider("dlib")


class FaceCrop(OptionNode):
    DISPLAY_NAME = "X-Portrait Face Crop"
    DESCRIPTION = ("Finds every face in a whole picture, chooses one ('face') and cuts a square around its head, "
                   "resized to 'resolution', for X-Portrait Reference and Motion Control. The crop record says "
                   "where it came from, for X-Portrait Paste Back.")
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", CROP_RECORD, "IMAGE")
    RETURN_NAMES = ("crop", "crop_record", "preview")
    OUTPUT_TOOLTIPS = ("The chosen face's head, square, at the resolution: connect it where the portrait goes "
                       "(Reference's and Motion Control's source).",
                       "Where the crop sits in the picture: connect it to X-Portrait Paste Back.",
                       "The picture with every face found numbered (0 is the leftmost) and the chosen face and its "
                       "crop in yellow, to check the choice.")
    REQUIRED_OPTIONS = ("picture", "face", "face_margin", "resolution")
    OPTIONAL_OPTIONS = ("landmarks",)

    def crop(self, picture: Any, face: str, face_margin: float, resolution: int, landmarks: Any = None
             ) -> tuple[Any, Any, Any]:
        from xportrait_core.pipeline import crop_face, face_crop_preview

        with about_input(FaceCrop, "picture"):
            result = crop_face(picture, landmark_provider_or_default(landmarks), face, face_margin, resolution)
        log.info("%s: face %d of %d, crop %s", self.DISPLAY_NAME, result.chosen, len(result.faces),
                 result.record.box)
        return result.crop, result.record, face_crop_preview(picture, result)


class TrackFace(OptionNode):
    DISPLAY_NAME = "X-Portrait Track Face"
    DESCRIPTION = ("Follows the face through a full-frame driving video (a phone video in which the face is small "
                   "or moves) with a square crop that does not jitter; connect its crops to Motion Control's "
                   "driving. Frames without a face follow their neighbours and are marked red in the preview.")
    FUNCTION = "track"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("driving_crops", "preview")
    OUTPUT_TOOLTIPS = ("The face of every frame, square, at the resolution: Motion Control's driving.",
                       "Every frame with its crop: yellow where the face was found, red ('no face') where the crop "
                       "follows the nearest frames.")
    REQUIRED_OPTIONS = ("driving", "face_margin", "track_smoothing", "resolution")
    OPTIONAL_OPTIONS = ("landmarks",)

    def track(self, driving: Any, face_margin: float, smoothing: float, resolution: int, landmarks: Any = None
              ) -> tuple[Any, Any]:
        from xportrait_core.pipeline import FaceTracking, track_driving_face, track_preview

        with about_input(TrackFace, "driving"):
            crops, track = track_driving_face(driving, landmark_provider_or_default(landmarks),
                                              FaceTracking(face_margin, smoothing), resolution,
                                              hooks=host.current().frame_progress(self.DISPLAY_NAME))
        host.current().check_interrupt()  # the preview of a long clip takes a while too
        boxes = [(box.left, box.top, box.left + box.side - 1, box.top + box.side - 1)
                 for box in map(track.box, range(len(crops)))]
        return crops, track_preview(driving, boxes, track.face_found.tolist())


class PasteBack(OptionNode):
    DISPLAY_NAME = "X-Portrait Paste Back"
    DESCRIPTION = ("Puts the animated crop back into the whole picture, at the picture's resolution, through a soft "
                   "mask around the head (or the mask given): outside it the picture stays exactly as it was, and "
                   "colours the model shifted are matched at the mask's edge.")
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The animation in the whole picture, one frame per animated frame, at the picture's size.",)
    REQUIRED_OPTIONS = ("animated", "picture", "crop_record")
    OPTIONAL_OPTIONS = ("paste_mask",)

    def paste(self, frames: Any, picture: Any, crop_record: Any, mask: Any = None) -> tuple[Any]:
        from xportrait_core.pipeline import paste_back

        with about_input(PasteBack, "frames"):
            pasted = paste_back(frames, picture, crop_record, mask)
        return (pasted,)
