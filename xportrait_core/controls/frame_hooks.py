"""Progress and interrupt callbacks for work that goes frame by frame (landmarks, alignment, local patches).

A host passes `FrameHooks`; the control functions report frames done after every frame or small group of frames
and ask `should_interrupt()` before each, so a progress bar moves steadily and a Cancel lands within about one
frame's work. Without hooks nothing is reported and nothing interrupts.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .landmarks import FaceLandmarks, LandmarkProvider

# Frames handed to a landmark provider at once: dlib detects the frames of a call on its worker threads in parallel
# (at most 4), so a group of 4 takes about as long as one frame and an interrupt is seen within that time.
DETECT_GROUP_FRAMES = 4


class ControlsInterrupted(Exception):
    """The host asked to stop (its should_interrupt hook returned True) while controls were being prepared."""


@dataclass(frozen=True)
class FrameHooks:
    """on_progress(done, total): frames of work done so far out of the whole job (every pass over the frames
    counts). should_interrupt(): asked before each frame or group of frames; True stops the work with
    `ControlsInterrupted` (a host may also raise its own exception from it, which passes through)."""

    on_progress: Callable[[int, int], None] | None = None
    should_interrupt: Callable[[], bool] | None = None


class FrameCounter:
    """Counts the frames of one job across its passes and tells the hooks."""

    def __init__(self, hooks: FrameHooks | None, total: int) -> None:
        self.hooks = hooks or FrameHooks()
        self.total = max(total, 1)
        self.done = 0

    def check(self) -> None:
        if self.hooks.should_interrupt is not None and self.hooks.should_interrupt():
            raise ControlsInterrupted(f"stopped after {self.done} of {self.total} frames of work")

    def advance(self, frames: int) -> None:
        self.done = min(self.done + frames, self.total)
        if self.hooks.on_progress is not None:
            self.hooks.on_progress(self.done, self.total)


def detect_landmarks(provider: LandmarkProvider, frames_fhwc_uint8: np.ndarray,
                     counter: FrameCounter | None = None) -> FaceLandmarks:
    """provider.detect over (F, H, W, 3) uint8 frames in groups of DETECT_GROUP_FRAMES, checking for an interrupt
    before each group and counting the frames done."""
    counter = counter or FrameCounter(None, len(frames_fhwc_uint8))
    found = []
    for start in range(0, len(frames_fhwc_uint8), DETECT_GROUP_FRAMES):
        counter.check()
        group = frames_fhwc_uint8[start:start + DETECT_GROUP_FRAMES]
        found.append(provider.detect(group))
        counter.advance(len(group))
    if not found:
        return FaceLandmarks.empty(0)
    return FaceLandmarks(points_68=np.concatenate([item.points_68 for item in found]),
                         face_found=np.concatenate([item.face_found for item in found]),
                         face_boxes=np.concatenate([item.face_boxes for item in found]))
