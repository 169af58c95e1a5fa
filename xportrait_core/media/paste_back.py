"""Putting animated crops back into the whole picture, at the picture's resolution, a few frames at a time.

Each animated crop (R x R) is resized to the crop box's side (the inverse of the crop: the same pixel-centre map,
`CropRecord.affine`) and blended over the picture through a mask: by default a soft oval around the head sized from
the face (`head_mask`), faded to zero before the crop's edge; a mask given by the user replaces it. Where the mask is
0 the output IS the picture (copied, not recomputed), so nothing outside the head changes by even one level.

Colour: the model may shift the crop's colours a little. Before blending, each frame's animated crop is offset per
channel by the mean difference between the picture and the animation on the ring where the mask fades out (the
picture's own colours there are the truth), so no colour step shows at the mask's edge. `border_colour_step`
measures that step.

Memory: `pasted_chunks` yields a few frames at a time, as uint8 (for writing a video) or float; nothing holds the
whole clip at the picture's resolution in float.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .crop_geometry import CropRecord

# The default mask, in units of the face's 68-point box (brows to chin, jaw to jaw): an oval around the box's centre
# raised by HEAD_RAISE box heights (the hair lies above the brows), HEAD_WIDTH box widths and HEAD_HEIGHT box heights
# across where it is 1, fading to 0 over FEATHER more of its radius (smoothstep).
HEAD_RAISE = 0.15
HEAD_WIDTH = 1.8
HEAD_HEIGHT = 2.2
FEATHER = 0.35
EDGE_FADE = 0.06  # of the crop's side: the mask fades to 0 over this band inside the crop's edge
# Colour is measured on the ring where the mask is between these values (the picture shows through there).
RING = (0.02, 0.98)
DEFAULT_CHUNK_FRAMES = 4  # frames pasted at once: 4 frames of a 4K picture are about 100 MB as uint8


@dataclass(frozen=True)
class Region:
    """The part of the picture a crop covers: rows y0..y1, columns x0..x1 (exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int


def crop_region(record: CropRecord) -> Region:
    x0, y0, x1, y1 = record.box.inside(*record.picture_size)
    return Region(x0, y0, x1, y1)


def _smoothstep(edge0: float, edge1: float, value: torch.Tensor) -> torch.Tensor:
    t = ((value - edge0) / (edge1 - edge0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def head_radius(record: CropRecord) -> torch.Tensor:
    """(h, w) float32 oval radius of each pixel of the crop's region (1 at the oval's edge, see HEAD_*)."""
    region = crop_region(record)
    x0, y0, x1, y1 = record.face_box
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2 - HEAD_RAISE * (y1 - y0)
    half_width, half_height = HEAD_WIDTH * (x1 - x0) / 2, HEAD_HEIGHT * (y1 - y0) / 2
    ys = torch.arange(region.y0, region.y1, dtype=torch.float32)[:, None]
    xs = torch.arange(region.x0, region.x1, dtype=torch.float32)[None, :]
    return torch.sqrt(((xs - centre_x) / half_width) ** 2 + ((ys - centre_y) / half_height) ** 2)


def edge_fade(record: CropRecord) -> torch.Tensor:
    """(h, w) float32: 0 on the crop's outermost pixels rising to 1 at EDGE_FADE of its side inside."""
    region, box = crop_region(record), record.box
    band = max(1.0, EDGE_FADE * box.side)
    ys = torch.arange(region.y0, region.y1, dtype=torch.float32)[:, None]
    xs = torch.arange(region.x0, region.x1, dtype=torch.float32)[None, :]
    inside_x = torch.minimum(xs - box.left, box.left + box.side - 1 - xs)
    inside_y = torch.minimum(ys - box.top, box.top + box.side - 1 - ys)
    return _smoothstep(0.0, band, torch.minimum(inside_x, inside_y))


def head_mask(record: CropRecord) -> torch.Tensor:
    """(h, w) float32 default mask over the crop's region: 1 on the head, soft edge, exactly 0 past the feather and
    at the crop's edge."""
    return (1 - _smoothstep(1.0, 1.0 + FEATHER, head_radius(record))) * edge_fade(record)


def region_mask(record: CropRecord, mask: torch.Tensor | None, frames: int) -> torch.Tensor:
    """(1 or F, h, w) float32 mask over the crop's region: the default `head_mask`, or the given MASK (1 or F masks,
    the picture's size or the crop's, values in [0, 1]) cut or resized to the region."""
    region = crop_region(record)
    if mask is None:
        return head_mask(record)[None]
    masks = mask.float()
    if masks.ndim == 2:
        masks = masks[None]
    width, height = record.picture_size
    if masks.ndim != 3 or masks.shape[0] not in (1, frames):
        raise ValueError(f"the mask must be one mask or one per frame ({frames}), shaped (H, W) or (N, H, W); got "
                         f"{tuple(mask.shape)}")
    if tuple(masks.shape[1:]) == (height, width):
        cut = masks[:, region.y0:region.y1, region.x0:region.x1]
    elif tuple(masks.shape[1:]) == (record.crop_size, record.crop_size):
        box = record.box
        whole = F.interpolate(masks[:, None], size=(box.side, box.side), mode="bilinear", align_corners=False)[:, 0]
        cut = whole[:, region.y0 - box.top:region.y1 - box.top, region.x0 - box.left:region.x1 - box.left]
    else:
        raise ValueError(f"the mask is {masks.shape[2]}x{masks.shape[1]} but must be the picture's size "
                         f"({width}x{height}) or the crop's ({record.crop_size}x{record.crop_size})")
    return cut.clamp(0, 1)


def animated_region(frames_fhwc: torch.Tensor, record: CropRecord) -> torch.Tensor:
    """Animated crops IMAGE (f, R, R, 3) -> (f, 3, h, w) float32: resized to the box's side, cut to the region."""
    region, box = crop_region(record), record.box
    frames = frames_fhwc.float().permute(0, 3, 1, 2)
    if box.side != record.crop_size:
        frames = F.interpolate(frames, size=(box.side, box.side), mode="bilinear", align_corners=False,
                               antialias=box.side < record.crop_size)
    return frames[..., region.y0 - box.top:region.y1 - box.top, region.x0 - box.left:region.x1 - box.left]


def colour_offsets(animated_fchw: torch.Tensor, picture_chw: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
    """(f, 3) mean of picture - animation over the ring (h, w bool); zeros when the ring is empty."""
    weights = ring.float()
    count = float(weights.sum())
    if count == 0:
        return torch.zeros(animated_fchw.shape[0], 3)
    picture_mean = (picture_chw * weights).sum(dim=(-2, -1)) / count
    return picture_mean[None] - (animated_fchw * weights).sum(dim=(-2, -1)) / count


def matching_ring(record: CropRecord) -> torch.Tensor:
    """(h, w) bool: where the default mask fades out (the picture's colour there is what the animation must meet)."""
    mask = head_mask(record)
    return (mask > RING[0]) & (mask < RING[1])


def paste_region(frames_fhwc: torch.Tensor, picture_chw: torch.Tensor, record: CropRecord,
                 mask: torch.Tensor, ring: torch.Tensor | None) -> torch.Tensor:
    """(f, 3, h, w) float32 of the crop's region: the animation blended over the picture's region `picture_chw`
    (3, h, w) float in [0, 1] through `mask` (1 or f, h, w), colour-matched on `ring` (`matching_ring`) unless None."""
    animated = animated_region(frames_fhwc, record)
    if ring is not None:
        animated = animated + colour_offsets(animated, picture_chw, ring)[:, :, None, None]
    blended = picture_chw[None] + mask[:, None] * (animated.clamp(0, 1) - picture_chw[None])
    return blended


def pasted_chunks(frames_fhwc: torch.Tensor, picture_hwc: torch.Tensor | np.ndarray, record: CropRecord,
                  mask: torch.Tensor | None = None, *, as_uint8: bool = False, match_colour: bool = True,
                  chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Iterator[torch.Tensor]:
    """The animated crops IMAGE (F, R, R, 3) pasted into the picture, `chunk_frames` frames at a time: chunks
    (f, H, W, 3), uint8 when `as_uint8` (the picture may then be uint8, and is copied exactly where the mask is 0),
    else float32 in [0, 1]. picture_hwc: (H, W, 3) or (1, H, W, 3), uint8 or float in [0, 1]."""
    picture = torch.as_tensor(np.asarray(picture_hwc) if isinstance(picture_hwc, np.ndarray) else picture_hwc)
    if picture.ndim == 4:
        picture = picture[0]
    width, height = record.picture_size
    if tuple(picture.shape) != (height, width, 3):
        raise ValueError(f"the picture is {tuple(picture.shape)} but the crop record was made from a {width}x{height} "
                         "picture; paste back into the picture the crop was cut from")
    if tuple(frames_fhwc.shape[1:3]) != (record.crop_size, record.crop_size):
        raise ValueError(f"the animated frames are {frames_fhwc.shape[2]}x{frames_fhwc.shape[1]} but the crop was "
                         f"{record.crop_size}x{record.crop_size}; animate at the crop's resolution")
    region = crop_region(record)
    frames = frames_fhwc.shape[0]
    masks = region_mask(record, mask, frames)
    is_uint8 = picture.dtype == torch.uint8
    picture_float = picture[region.y0:region.y1, region.x0:region.x1].float()
    if is_uint8:
        picture_float = picture_float / 255
    picture_chw = picture_float.permute(2, 0, 1)
    ring = matching_ring(record) if match_colour else None
    for start in range(0, frames, chunk_frames):
        part = frames_fhwc[start:start + chunk_frames]
        chunk_mask = masks if masks.shape[0] == 1 else masks[start:start + part.shape[0]]
        blended = paste_region(part, picture_chw, record, chunk_mask, ring).permute(0, 2, 3, 1)
        keep = (chunk_mask == 0)[..., None]
        if as_uint8:
            whole = (picture if is_uint8 else (picture.float() * 255).round().to(torch.uint8))
            out = whole.expand(part.shape[0], -1, -1, -1).clone()
            values = (blended * 255).round().clamp(0, 255).to(torch.uint8)
            source = out[:, region.y0:region.y1, region.x0:region.x1]
            out[:, region.y0:region.y1, region.x0:region.x1] = torch.where(keep, source, values)
        else:
            whole_float = picture.float() / 255 if is_uint8 else picture.float()
            out = whole_float.expand(part.shape[0], -1, -1, -1).clone()
            source = out[:, region.y0:region.y1, region.x0:region.x1]
            out[:, region.y0:region.y1, region.x0:region.x1] = torch.where(keep, source, blended)
        yield out


def paste_back(frames_fhwc: torch.Tensor, picture_hwc: torch.Tensor, record: CropRecord,
               mask: torch.Tensor | None = None, *, match_colour: bool = True,
               chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> torch.Tensor:
    """IMAGE (F, H, W, 3) float32: every frame pasted, filled chunk by chunk into one preallocated tensor (a host
    that needs the clip as one IMAGE holds it once, not once more per step)."""
    width, height = record.picture_size
    result = torch.empty(frames_fhwc.shape[0], height, width, 3, dtype=torch.float32)
    done = 0
    for chunk in pasted_chunks(frames_fhwc, picture_hwc, record, mask, match_colour=match_colour,
                               chunk_frames=chunk_frames):
        result[done:done + chunk.shape[0]] = chunk
        done += chunk.shape[0]
    return result


def border_colour_step(frames_fhwc: torch.Tensor, picture_hwc: torch.Tensor, record: CropRecord) -> float:
    """The mean colour step across the default mask's edge, in [0, 1] units, of pasted frames (F, H, W, 3) over the
    picture (1, H, W, 3) or (H, W, 3) (float in [0, 1] or uint8 alike): the length of the mean colour change from
    the picture just inside the oval (radius 0.85 to 1, where the mask is 1) less that just outside its feather
    (1 + FEATHER to 1.2 + FEATHER). The picture's own content cancels, so what is left is the step a viewer sees
    where the animation meets the untouched picture (0 for a seamless paste)."""
    region = crop_region(record)
    radius, fade = head_radius(record), edge_fade(record)
    inner = (radius >= 0.85) & (radius < 1.0) & (fade == 1)
    outer = (radius >= 1.0 + FEATHER) & (radius < 1.2 + FEATHER) & (fade == 1)

    def cut(images: torch.Tensor) -> torch.Tensor:
        part = images.reshape(-1, *images.shape[-3:])[:, region.y0:region.y1, region.x0:region.x1].float()
        return part / 255 if images.dtype == torch.uint8 else part

    change = cut(frames_fhwc) - cut(torch.as_tensor(picture_hwc))
    return float((change[:, inner].mean(dim=(0, 1)) - change[:, outer].mean(dim=(0, 1))).norm())
