"""A provider that replays known landmarks: each frame gets those of the most similar recorded frame.

For synthetic clips whose landmarks are known exactly (the demo's head motions), so the pipeline can run
without any landmark model installed.
"""
from __future__ import annotations

import numpy as np

from .base import FaceLandmarks, check_uint8_frames


class ReplayLandmarkProvider:
    name = "replay"

    def __init__(self, frames_fhwc_uint8: np.ndarray, points_68: np.ndarray) -> None:
        """frames (N, H, W, 3) uint8 as they will be shown to ``detect``; points_68 (N, 68, 2) theirs."""
        self.frames = check_uint8_frames(frames_fhwc_uint8).astype(np.float32)
        self.points_68 = np.asarray(points_68, np.float32)

    def detect(self, frames_fhwc_uint8: np.ndarray) -> FaceLandmarks:
        frames = check_uint8_frames(frames_fhwc_uint8)
        result = FaceLandmarks.empty(len(frames))
        for index, frame in enumerate(frames.astype(np.float32)):
            if frame.shape != self.frames.shape[1:]:
                raise ValueError(f"replayed landmarks were recorded on {self.frames.shape[1:]} frames, "
                                 f"got {frame.shape}")
            nearest = np.abs(self.frames - frame).mean(axis=(1, 2, 3)).argmin()
            result.points_68[index] = self.points_68[nearest]
            result.face_found[index] = True
        return result
