"""Face landmarks: the provider interface, the 68-point layout, and the providers.

`DlibLandmarkProvider` is the default (offline, true iBUG 68 points); `MediaPipeLandmarkProvider` is optional and
lives in `landmarks.mediapipe_provider` (import it only when mediapipe is installed).
"""

from . import ibug68
from .base import FaceLandmarks, LandmarkProvider, MultiFaceProvider, check_uint8_frames
from .dlib_provider import DlibLandmarkProvider, LandmarkModelNotFoundError, bundled_model_path, resolve_model_path

__all__ = [
    "DlibLandmarkProvider",
    "FaceLandmarks",
    "LandmarkModelNotFoundError",
    "LandmarkProvider",
    "MultiFaceProvider",
    "bundled_model_path",
    "check_uint8_frames",
    "ibug68",
    "resolve_model_path",
]
