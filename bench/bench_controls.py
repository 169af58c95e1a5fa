"""Throughput of driving-video preparation, stage by stage: landmark detection, alignment, local patches.

Driving video: skimage's astronaut (512 px) under small random scales, rotations and shifts. Runs on CPU or
CUDA (only the geometry moves to the GPU; dlib detects on the CPU).

    python3 bench/bench_controls.py --frames 64 --resolution 512 --device cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xportrait_core.controls.alignment import LANDMARK_GRID, align_frames_fchw, alignment_affine  # noqa: E402
from xportrait_core.controls.local_patches import local_hints_fchw, patch_centres  # noqa: E402
from xportrait_core.media.image_fit import resize_square_fchw, to_uint8_fhwc  # noqa: E402
from xportrait_core.pipeline import ControlOptions, Framing, prepare_controls  # noqa: E402

MAX_ROTATION_DEGREES = 10.0  # well inside the rotations HOG finds faces at (docs/controls.md, "Face landmarks")
MAX_SHIFT_PX = 20.0


def astronaut_driving_video(frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, 512, 512, 3) driving video and (512, 512, 3) source, ComfyUI IMAGE floats in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.from_numpy(data.astronaut()).float().div(255)
    batch = source.permute(2, 0, 1)[None].expand(frames, 3, 512, 512)
    angles = (torch.rand(frames, generator=generator) * 2 - 1) * MAX_ROTATION_DEGREES
    scales = 0.9 + 0.2 * torch.rand(frames, 1, generator=generator).expand(frames, 2)
    matrices = get_rotation_matrix2d(torch.full((frames, 2), 255.5), angles, scales)
    matrices[:, :, 2] += (torch.rand(frames, 2, generator=generator) * 2 - 1) * MAX_SHIFT_PX
    driving = warp_affine(batch.contiguous(), matrices, dsize=(512, 512))
    return driving.permute(0, 2, 3, 1).contiguous(), source


def make_provider(name: str):
    if name == "dlib":
        from xportrait_core.controls.landmarks import DlibLandmarkProvider

        return DlibLandmarkProvider()
    from xportrait_core.controls.landmarks.mediapipe_provider import MediaPipeLandmarkProvider

    return MediaPipeLandmarkProvider()


def timed(device: torch.device, work):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--provider", choices=("dlib", "mediapipe"), default="dlib")
    args = parser.parse_args()
    device = torch.device(args.device)
    frames = args.frames

    driving, source = astronaut_driving_video(frames)
    provider = make_provider(args.provider)
    driving_fchw = driving.permute(0, 3, 1, 2).to(device)
    # Warm-up: worker threads build their detectors, CUDA kernels load.
    provider.detect(to_uint8_fhwc(resize_square_fchw(driving_fchw[:8], LANDMARK_GRID)))

    copies, copy_seconds = timed(device, lambda: to_uint8_fhwc(resize_square_fchw(driving_fchw, LANDMARK_GRID)))
    landmarks, detect_seconds = timed(device, lambda: provider.detect(copies))
    best = int(np.flatnonzero(landmarks.face_found)[0])
    affine = alignment_affine(landmarks.points_68[best], landmarks.points_68[best] * 1.05, args.resolution)

    def align():
        return align_frames_fchw(resize_square_fchw(driving_fchw, args.resolution), affine) * 2 - 1

    align()  # warm-up
    pose_hints, align_seconds = timed(device, align)

    def patches():
        centres = patch_centres(landmarks.points_68, landmarks.face_found, args.resolution)
        return local_hints_fchw(pose_hints, centres)

    patches()  # warm-up
    _, patch_seconds = timed(device, patches)
    _, total_seconds = timed(
        device,
        lambda: prepare_controls(driving, source, provider, ControlOptions(Framing(args.resolution)), device=device),
    )

    print(f"device {device}, provider {provider.name}, {frames} frames 512 px -> {args.resolution} px, "
          f"torch threads {torch.get_num_threads()}, faces found {int(landmarks.face_found.sum())}/{frames}")
    rows = [
        ("256 px uint8 copies", copy_seconds),
        ("landmark detection", detect_seconds),
        ("alignment (resize + warp)", align_seconds),
        ("local patches", patch_seconds),
        ("prepare_controls, best_frame=auto (2 detection passes)", total_seconds),
    ]
    for name, seconds in rows:
        print(f"{name:<66s} {frames / seconds:9.1f} frames/s  ({1000 * seconds / frames:7.2f} ms/frame)")


if __name__ == "__main__":
    main()
