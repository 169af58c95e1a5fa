"""Choosing a face in a whole picture and cutting the square X-Portrait animates around it.

Every face is found with the landmark provider (on a copy at most DETECT_LONG_SIDE pixels long; the points are
mapped back to the picture), numbered left to right, and one is chosen: the largest, a number, or the one nearest a
point. The crop is a square `face_margin` times the face's size (the larger side of its 68-point box, brows to chin
and jaw to jaw), centred CENTRE_DROP face heights below the box's centre so the head sits in the upper middle with
some shoulders below, as in the pack's demo portrait (docs/face_framing.md derives both numbers). It is resized to
the model's resolution; the `CropRecord` says where it came from, for paste-back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..media.crop_geometry import CropBox, CropRecord, crop_square_fchw
from ..media.image_fit import images_to_fchw, to_uint8_fhwc
from ..options import LARGEST_FACE, FaceChoice, OptionError, check, check_face_choice
from .landmarks import LandmarkProvider, MultiFaceProvider

# Faces are found on a copy at most this long: the HOG detector (upsample 1) finds faces down to about 40 px there,
# i.e. 80 px in a 2048 px picture, in about a quarter of a second.
DETECT_LONG_SIDE = 1024
# Smaller pictures are searched on a copy enlarged to this: a face in a 128 px picture is too small for the detector
# as it is (the landmark copies of the driving controls are enlarged to 256 px for the same reason).
DETECT_MIN_SIDE = 512
# The demo portrait (cli.demo_clip.ASTRONAUT_FACE_CROP) centres its 280 px crop 27.5 px below the centre of the
# astronaut's 91 px tall landmark box: 0.3 face heights, which leaves the hair above and the shoulders below.
CENTRE_DROP = 0.3


@dataclass(frozen=True)
class Face:
    """One face found in a picture: its 68 landmarks (68, 2) in the picture's pixels."""

    points_68: np.ndarray

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the landmarks."""
        low, high = self.points_68.min(axis=0), self.points_68.max(axis=0)
        return float(low[0]), float(low[1]), float(high[0]), float(high[1])

    @property
    def size(self) -> float:
        """The larger side of the landmark box: what the crop margin multiplies."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class FaceCrop:
    """The crop of the chosen face: crop IMAGE (1, R, R, 3) in [0, 1], its record, every face found (left to right)
    and the number of the one chosen."""

    crop: torch.Tensor
    record: CropRecord
    faces: tuple[Face, ...]
    chosen: int


class NoFaceInPictureError(OptionError):
    """The picture has no face the provider can find."""

    def __init__(self, option: str, provider_name: str, width: int, height: int) -> None:
        super().__init__(option, f"no face was found in the {width}x{height} picture by the '{provider_name}' "
                         "landmark provider, so there is nothing to crop and animate. Use a picture with a clearly "
                         "visible, roughly frontal face at least about 80 pixels wide (or try the mediapipe "
                         "provider, which finds turned heads better)")


def crop_box_for(face_box: tuple[float, float, float, float], margin: float) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the crop around a landmark box (x0, y0, x1, y1), not yet rounded."""
    x0, y0, x1, y1 = face_box
    size = max(x1 - x0, y1 - y0)
    return (x0 + x1) / 2, (y0 + y1) / 2 + CENTRE_DROP * (y1 - y0), margin * size


def detection_copy(frames_fchw: torch.Tensor, long_side: int) -> tuple[np.ndarray, float]:
    """(F, 3, H, W) in [0, 1] -> ((F, h, w, 3) uint8 at most `long_side` and at least DETECT_MIN_SIDE long,
    picture pixels per copy pixel)."""
    height, width = frames_fchw.shape[-2:]
    scale = max(height, width) / min(long_side, max(max(height, width), DETECT_MIN_SIDE))
    if scale == 1:
        return to_uint8_fhwc(frames_fchw.float()), 1.0
    size = (max(1, round(height / scale)), max(1, round(width / scale)))
    copy = F.interpolate(frames_fchw.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return to_uint8_fhwc(copy), height / size[0]


def faces_in(provider: LandmarkProvider, picture_hwc_uint8: np.ndarray, scale: float) -> list[Face]:
    """Every face the provider finds in one picture (its detection copy, `scale` picture pixels per copy pixel),
    in picture pixels, ordered left to right by the centre of their landmark box."""
    if isinstance(provider, MultiFaceProvider):
        found = provider.detect_faces(picture_hwc_uint8)
    else:
        found = provider.detect(picture_hwc_uint8[None])
    faces = [Face((points.astype(np.float64) + 0.5) * scale - 0.5)
             for points, ok in zip(found.points_68, found.face_found) if ok]
    return sorted(faces, key=lambda face: face.centre[0])


def choose_face(faces: list[Face] | tuple[Face, ...], choice: FaceChoice) -> int:
    """Number of the chosen face among `faces` (left to right): the largest, the given number, or the face whose
    landmark box is nearest the point (distance 0 inside it, ties to the larger)."""
    assert faces, "callers report a picture without faces first"
    if choice == LARGEST_FACE:
        return int(np.argmax([face.size for face in faces]))
    if isinstance(choice, int):
        if choice >= len(faces):
            raise OptionError("face", f"face {choice} was asked for but the picture has {len(faces)} face"
                              f"{'s' if len(faces) > 1 else ''} (numbered 0 to {len(faces) - 1} from the left; "
                              "the Face Crop preview shows the numbers)")
        return choice
    assert isinstance(choice, tuple)
    x, y = choice

    def distance(face: Face) -> tuple[float, float]:
        x0, y0, x1, y1 = face.box
        outside = np.hypot(max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1))
        return float(outside), -face.size
    return min(range(len(faces)), key=lambda index: distance(faces[index]))


def crop_face(picture_fhwc: torch.Tensor, provider: LandmarkProvider, face: object = LARGEST_FACE,
              margin: float = 3.0, resolution: int = 512, option: str = "picture") -> FaceCrop:
    """Finds every face of one picture (IMAGE (1, H, W, 3) or (H, W, 3) in [0, 1]), chooses one by `face`
    (`options.check_face_choice`) and cuts its square crop at `resolution`. `option` names the picture input in
    errors. NoFaceInPictureError before any other work when there is no face."""
    choice = check_face_choice(face)
    check("face_margin", margin)
    check("resolution", resolution)
    try:
        picture = images_to_fchw(picture_fhwc, "picture")
    except (TypeError, ValueError) as error:
        raise OptionError(option, str(error), leads=False) from error
    if picture.shape[0] != 1:
        raise OptionError(option, f"must be one picture, got a batch of {picture.shape[0]}; pick one")
    copy, scale = detection_copy(picture, DETECT_LONG_SIDE)
    faces = faces_in(provider, copy[0], scale)
    height, width = picture.shape[-2:]
    if not faces:
        raise NoFaceInPictureError(option, provider.name, width, height)
    chosen = choose_face(faces, choice)
    box = CropBox.around(*crop_box_for(faces[chosen].box, margin))
    record = CropRecord(box, resolution, (int(width), int(height)), faces[chosen].box, len(faces))
    crop = crop_square_fchw(picture, box, resolution).clamp(0, 1).permute(0, 2, 3, 1).contiguous()
    return FaceCrop(crop=crop, record=record, faces=tuple(faces), chosen=chosen)

