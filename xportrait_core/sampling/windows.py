"""Temporal windows over a video, and the per-frame average of what overlapping windows predict.

The motion modules only see a fixed number of frames, so a longer video is denoised window by window and the
windows' guided eps are averaged where they overlap. Two placements:

- `random` (the original): at every step an offset o = randint(0, F - 1) (inclusive, Python semantics) is drawn;
  windows start at range(o, o + F - overlap, window - overlap) and hold frames (start + arange(window)) % F, so
  they wrap around the end of the video and the seams move from step to step.
- `fixed`: windows start at 0, window - overlap, ... and the last one is aligned to the end of the video; the
  same windows every step, none wrapping (unless the video is shorter than one window).

A video shorter than the window is wrapped in both placements (the window repeats frames), as the original does.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from ..options import OptionError, Placement


def check_window_fit(num_frames: int, overlap: int, placement: Placement) -> None:
    """OptionError on the overlap when windows placed this way cannot cover `num_frames` frames (the window and
    overlap themselves are checked with the options)."""
    if placement == "random" and num_frames <= overlap:
        # The original divides by zero here: range(o, o + F - overlap, ...) is empty, no frame gets a prediction.
        raise OptionError("overlap", f"does not fit the video: random window placement needs more frames than the "
                          f"overlap: the video has {num_frames} frames and the overlap is {overlap}; lower the overlap "
                          f"below {num_frames} or use {{placement=fixed}}")


def window_frames(start: int, num_frames: int, window: int) -> torch.Tensor:
    """Frame indices (window,) int64 of the window starting at `start`: (start + arange(window)) % num_frames."""
    return (start + torch.arange(window)) % num_frames


def random_window_starts(offset: int, num_frames: int, window: int, overlap: int) -> list[int]:
    """Window starts of the original for one step: range(offset, offset + F - overlap, window - overlap)."""
    return list(range(offset, offset + num_frames - overlap, window - overlap))


def fixed_window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """Starts 0, window - overlap, ..., with the last window ending on the last frame (no wrap-around)."""
    if num_frames <= window:
        return [0]
    last = num_frames - window
    starts = list(range(0, last + 1, window - overlap))
    if starts[-1] != last:
        starts.append(last)
    return starts


class WindowPlanner:
    """Which windows to denoise at each step. A step's windows are planned at its first request and kept, so every
    call of a sampler within one step sees the same windows.

    For `random` placement the offsets come from `offsets` (replayed in step order, e.g. recorded from the
    original) or else from a Python `random.Random(seed)`, one randint(0, F - 1) per planned step.
    """

    def __init__(
        self,
        num_frames: int,
        window: int,
        overlap: int,
        placement: Placement = "random",
        seed: int = 0,
        offsets: Sequence[int] | None = None,
    ) -> None:
        # Checked where the options enter the library (SamplerOptions, the pipeline): here they are invariants.
        assert num_frames >= 1 and 0 <= overlap < window, (num_frames, window, overlap)
        assert not (placement == "random" and num_frames <= overlap), (num_frames, overlap)
        assert offsets is None or all(0 <= int(o) < num_frames for o in offsets), offsets
        self.num_frames = num_frames
        self.window = window
        self.overlap = overlap
        self.placement = placement
        self._offsets = None if offsets is None else [int(o) for o in offsets]
        self._rng = random.Random(seed)
        self._planned: dict[int, list[int]] = {}
        self.offsets_used: list[int] = []

    @property
    def windows_per_step(self) -> int:
        """How many windows every step has (random placement: the same count at any offset; nothing is drawn)."""
        if self.placement == "random":
            return len(random_window_starts(0, self.num_frames, self.window, self.overlap))
        return len(fixed_window_starts(self.num_frames, self.window, self.overlap))

    def starts_for_step(self, step_index: int) -> list[int]:
        """Window starts for the step `step_index` (0-based, in sampling order), planned at its first request."""
        if step_index not in self._planned:
            self._planned[step_index] = self._plan(step_index)
        return self._planned[step_index]

    def _plan(self, step_index: int) -> list[int]:
        if self.placement == "fixed":
            return fixed_window_starts(self.num_frames, self.window, self.overlap)
        if self._offsets is not None:
            if step_index >= len(self._offsets):
                raise ValueError(f"{len(self._offsets)} window offsets were given to replay, but step "
                                 f"{step_index + 1} needs one; give one offset per sampling step")
            offset = self._offsets[step_index]
        else:
            offset = self._rng.randint(0, self.num_frames - 1)
        self.offsets_used.append(offset)
        return random_window_starts(offset, self.num_frames, self.window, self.overlap)

    def windows_for_step(self, step_index: int) -> list[torch.Tensor]:
        """Frame indices of each window of the step, each (window,) int64."""
        return [window_frames(s, self.num_frames, self.window) for s in self.starts_for_step(step_index)]


class WindowAverager:
    """Sums per-window predictions per frame and divides by how many windows covered each frame.

    A window holding a frame twice (video shorter than the window) contributes to that frame once, with its last
    occurrence: the original accumulates with advanced indexing (`acc[idx] += eps; counts[idx] += 1`), where
    duplicate indices do not add up and one write wins. We make that deterministic (the last one).
    """

    def __init__(
        self, shape: Sequence[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        """shape: (F, ...) of the full-video prediction; the sums live on `device` in `dtype`."""
        self._sum = torch.zeros(tuple(shape), device=device, dtype=dtype)
        self._counts = torch.zeros(shape[0], device=device, dtype=dtype)

    def add(self, frames: torch.Tensor, values: torch.Tensor) -> None:
        """frames (window,) int64; values (window, ...) the window's prediction for those frames."""
        frames = frames.to(self._sum.device)
        positions = _last_occurrences(frames)
        unique_frames = frames[positions]
        self._sum[unique_frames] += values[positions.to(values.device)].to(self._sum.device, self._sum.dtype)
        self._counts[unique_frames] += 1

    def average(self) -> torch.Tensor:
        """(F, ...) per-frame mean over the windows that covered the frame."""
        if bool((self._counts == 0).any()):
            missing = torch.nonzero(self._counts == 0).flatten().tolist()
            raise RuntimeError(f"no window covered frames {missing}; the window plan must cover every frame")
        return self._sum / self._counts.reshape(-1, *([1] * (self._sum.dim() - 1)))


def _last_occurrences(frames: torch.Tensor) -> torch.Tensor:
    """Positions (K,) of the last occurrence of each distinct value of frames (window,), ascending."""
    last = {frame: position for position, frame in enumerate(frames.tolist())}
    return torch.tensor(sorted(last.values()), dtype=torch.long)
