"""Previews that show where faces and crops are: boxes (and numbers) drawn on a small copy of the picture or of each
video frame, so that a choice can be checked at a glance."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

PREVIEW_LONG_SIDE = 768  # previews are drawn on copies this long: enough to read the numbers, small to hold
CHOSEN = (255, 214, 0)  # the chosen face, and a tracked frame
OTHER = (90, 200, 255)  # faces not chosen
MISSING = (255, 40, 40)  # a frame without a face (its box follows the nearest frames)
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in picture pixels


def _small_copy(frames_fhwc: torch.Tensor, long_side: int) -> tuple[torch.Tensor, float]:
    """(F, H, W, 3) in [0, 1] -> (copy at most `long_side` long, copy pixels per picture pixel)."""
    height, width = frames_fhwc.shape[1:3]
    factor = min(1.0, long_side / max(height, width))
    if factor == 1.0:
        return frames_fhwc.float(), 1.0
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    copy = F.interpolate(frames_fhwc.float().permute(0, 3, 1, 2), size=size, mode="bilinear", antialias=True,
                         align_corners=False)
    return copy.permute(0, 2, 3, 1), size[0] / height


def _draw(frame_hwc: torch.Tensor, boxes: Sequence[tuple[Box, tuple[int, int, int], str]], width: int) -> np.ndarray:
    image = Image.fromarray((frame_hwc.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    draw = ImageDraw.Draw(image)
    for (x0, y0, x1, y1), colour, label in boxes:
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        if label:
            draw.text((x0 + 2 * width, y0 + 2 * width), label, fill=colour)
    return np.array(image)


def faces_preview(picture_fhwc: torch.Tensor, face_boxes: Sequence[Box], chosen: int, crop_box: Box) -> torch.Tensor:
    """IMAGE (1, h, w, 3): the picture with every face boxed and numbered (0 = leftmost), the chosen face and the
    crop drawn thick in yellow."""
    copy, factor = _small_copy(picture_fhwc[:1] if picture_fhwc.ndim == 4 else picture_fhwc[None], PREVIEW_LONG_SIDE)
    boxes: list[tuple[Box, tuple[int, int, int], str]] = []
    for number, box in enumerate(face_boxes):
        scaled = (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)
        boxes.append((scaled, CHOSEN if number == chosen else OTHER, str(number)))
    boxes.append(((crop_box[0] * factor, crop_box[1] * factor, crop_box[2] * factor, crop_box[3] * factor), CHOSEN,
                  "crop"))
    drawn = _draw(copy[0], boxes, width=max(2, round(max(copy.shape[1:3]) / 256)))
    return torch.from_numpy(drawn).float().div(255)[None]


def track_preview(frames_fhwc: torch.Tensor, crop_boxes: Sequence[Box], face_found: Sequence[bool]) -> torch.Tensor:
    """IMAGE (F, h, w, 3): every frame with its crop box, yellow where the face was found, red (and "no face")
    where the box follows the nearest frames."""
    previews = []
    for frame, box, found in zip(frames_fhwc, crop_boxes, face_found):
        copy, factor = _small_copy(frame[None], PREVIEW_LONG_SIDE // 2)
        scaled = (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)
        entry = (scaled, CHOSEN if found else MISSING, "" if found else "no face")
        previews.append(torch.from_numpy(_draw(copy[0], [entry], width=2)).float().div(255))
    return torch.stack(previews)
