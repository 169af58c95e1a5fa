"""What the full-picture path adds per frame at 1080p and 4K: the face crop of the source picture, face tracking
of a full-frame driving video (search + crop), and paste-back (command line: uint8 chunks; node: one float IMAGE).

Each stage runs in a fresh process; its peak memory is the process's resident high-water mark during the stage
less the resident memory before it (inputs already made), read from /proc (Linux), so it is what the stage adds.
Scene: skimage's astronaut, scaled so the face is about 1/8 of the frame height, moving right and down a few
pixels a frame on a grey frame.

    python3 bench/bench_face_framing.py --frames 16
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xportrait_core.controls.landmarks import DlibLandmarkProvider  # noqa: E402
from xportrait_core.pipeline import FaceTracking, crop_face, paste_back, pasted_chunks, track_driving_face  # noqa: E402

SIZES = {"1080p": (1920, 1080), "4K": (3840, 2160)}
FACE_SHARE = 1 / 8  # face height / frame height
ASTRONAUT_FACE = 91  # px: the astronaut's 68-point box height in the 512 px photo
RESOLUTION = 512
GREY = 110


def scene(width: int, height: int, frames: int) -> torch.Tensor:
    """IMAGE (F, H, W, 3): the scaled astronaut moving on a grey frame."""
    scale = FACE_SHARE * height / ASTRONAUT_FACE
    side = round(512 * scale)
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.BICUBIC))
    clip = np.full((frames, height, width, 3), GREY, np.uint8)
    for frame in range(frames):
        left, top = width // 4 + 6 * frame, height // 8 + 2 * frame
        clip[frame, top:top + side, left:left + side] = photo[:height - top, :width - left]
    return torch.from_numpy(clip).float().div(255)


def _memory(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size


def _stage(stage: str, size: str, frames: int, queue: multiprocessing.Queue) -> None:
    torch.set_num_threads(2)
    width, height = SIZES[size]
    provider = DlibLandmarkProvider()
    if stage == "crop":
        picture = scene(width, height, 1)
        crop_face(picture, provider, resolution=RESOLUTION)  # warm-up: detector threads, allocator
        work, count = (lambda: crop_face(picture, provider, resolution=RESOLUTION)), 1
    elif stage == "tracking":
        clip = scene(width, height, frames)
        track_driving_face(clip[:2], provider, FaceTracking(), RESOLUTION)
        work, count = (lambda: track_driving_face(clip, provider, FaceTracking(), RESOLUTION)), frames
    else:
        picture = scene(width, height, 1)
        record = crop_face(picture, provider, resolution=RESOLUTION).record
        animated = torch.rand(frames, RESOLUTION, RESOLUTION, 3, generator=torch.Generator().manual_seed(0))
        if stage == "paste_uint8":
            picture_uint8 = (picture[0] * 255).round().to(torch.uint8)

            def work() -> None:
                for _ in pasted_chunks(animated, picture_uint8, record, as_uint8=True):
                    pass  # the video writer would encode the chunk here (encoding is not paste-back's cost)
        else:
            def work() -> None:
                paste_back(animated, picture, record)
        count = frames
    before = _memory("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    queue.put((1000 * seconds / count, (_memory("VmHWM") - before) / 2**20))


def measure(stage: str, size: str, frames: int) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_stage, args=(stage, size, frames, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="frames tracked and pasted per measurement")
    args = parser.parse_args()
    stages = [("crop", "source face crop (per picture)"), ("tracking", "driving face tracking + crop"),
              ("paste_uint8", "paste-back, uint8 chunks (command line)"),
              ("paste_float", "paste-back, one float IMAGE (node)")]
    print(f"{args.frames} frames, crops at {RESOLUTION} px, torch threads 2, face 1/8 of the frame height")
    print(f"{'stage':<44s} {'size':>6s} {'ms/frame':>10s} {'peak added MB':>14s}")
    for stage, label in stages:
        for size in SIZES:
            milliseconds, megabytes = measure(stage, size, args.frames)
            print(f"{label:<44s} {size:>6s} {milliseconds:10.1f} {megabytes:14.0f}", flush=True)


if __name__ == "__main__":
    main()
