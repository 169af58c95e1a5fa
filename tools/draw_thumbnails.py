"""Draws each template's thumbnail (`example_workflows/<title>.jpg`): a card that says at a glance what the template
is for, with the part that sets it apart drawn large, so that the five look different at card size in ComfyUI's
Templates browser (a screenshot of the whole graph, shrunk to a card, looks the same for all of them).

    python tools/draw_thumbnails.py    # from the pack root, after tools/build_workflows.py

Everything is drawn here with PIL's shapes and its built-in font: no third-party art. A template without a drawing
of its own gets the common picture with its name. tests/test_workflows.py checks that the cards differ.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TOOLS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS_DIR))

from build_workflows import BLUE, BROWN, GREEN, PURPLE, TEMPLATES_DIR, WORKFLOWS  # noqa: E402

SIZE = (512, 384)  # the Templates browser's cards are 4:3
QUALITY = 90
BACKGROUND = "#202020"  # the canvas's dark background
INK = "#e8e8e8"
MUTED = "#9a9a9a"
ACCENT = "#f2c84b"  # the part that sets a template apart
TITLE_FONT, LABEL_FONT, SMALL_FONT = 44, 22, 17
ICON_Y = 196  # vertical centre of the picture row
PREFIX = "X-Portrait "

Draw = ImageDraw.ImageDraw


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def centred_text(draw: Draw, x: float, y: float, text: str, size: int, fill: str) -> None:
    draw.text((x, y), text, font=font(size), fill=fill, anchor="mm")


def portrait(draw: Draw, x: float, y: float, colour: str, label: str) -> None:
    """A framed photo of a head and shoulders, centred at (x, y)."""
    draw.rounded_rectangle((x - 38, y - 48, x + 38, y + 48), radius=8, outline=colour, width=4)
    draw.ellipse((x - 15, y - 34, x + 15, y - 4), fill=colour)
    draw.pieslice((x - 30, y + 2, x + 30, y + 62), 180, 360, fill=colour)
    centred_text(draw, x, y + 68, label, SMALL_FONT, MUTED)


def film(draw: Draw, x: float, y: float, colour: str, label: str) -> None:
    """A strip of three frames with sprocket holes, centred at (x, y)."""
    draw.rectangle((x - 44, y - 36, x + 44, y + 36), outline=colour, width=4)
    for hole in range(5):
        hx = x - 38 + hole * 19
        draw.rectangle((hx, y - 31, hx + 7, y - 25), fill=colour)
        draw.rectangle((hx, y + 25, hx + 7, y + 31), fill=colour)
    for frame in range(3):
        fx = x - 38 + frame * 27
        draw.rectangle((fx, y - 18, fx + 22, y + 18), fill=colour)
    centred_text(draw, x, y + 56, label, SMALL_FONT, MUTED)


def box(draw: Draw, x: float, y: float, colour: str, text: str, width: int = 96, height: int = 64) -> None:
    draw.rounded_rectangle((x - width / 2, y - height / 2, x + width / 2, y + height / 2), radius=10, fill=colour)
    centred_text(draw, x, y, text, LABEL_FONT, INK)


def arrow(draw: Draw, x0: float, y0: float, x1: float, y1: float, colour: str = MUTED) -> None:
    """A line from (x0, y0) with a head at (x1, y1)."""
    length = math.hypot(x1 - x0, y1 - y0)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    draw.line((x0, y0, x1 - 8 * ux, y1 - 8 * uy), fill=colour, width=4)
    draw.polygon(((x1, y1), (x1 - 12 * ux + 8 * uy, y1 - 12 * uy - 8 * ux),
                  (x1 - 12 * ux - 8 * uy, y1 - 12 * uy + 8 * ux)), fill=colour)


def bolt(draw: Draw, x: float, y: float, colour: str) -> None:
    """A lightning bolt: fast."""
    draw.polygon(((x + 8, y - 44), (x - 22, y + 6), (x - 2, y + 6), (x - 10, y + 44), (x + 22, y - 8),
                  (x + 2, y - 8)), fill=colour)


def pipeline(draw: Draw, middle: str = "X-P", middle_colour: str = PURPLE) -> None:
    """The common picture: portrait and driving video into X-Portrait, a video out."""
    portrait(draw, 62, ICON_Y - 58, BLUE, "portrait")
    film(draw, 62, ICON_Y + 72, GREEN, "driving video")
    arrow(draw, 106, ICON_Y - 50, 200, ICON_Y - 8)
    arrow(draw, 112, ICON_Y + 66, 200, ICON_Y + 20)
    box(draw, 256, ICON_Y + 6, middle_colour, middle, width=104, height=80)
    arrow(draw, 312, ICON_Y + 6, 382, ICON_Y + 6)
    film(draw, 440, ICON_Y + 6, BROWN, "video")


def card(title: str, subtitle: str, draw_picture: Callable[[Draw], None]) -> Image.Image:
    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    centred_text(draw, SIZE[0] / 2, 42, title, TITLE_FONT, INK)
    draw_picture(draw)
    centred_text(draw, SIZE[0] / 2, SIZE[1] - 24, subtitle, SMALL_FONT, MUTED)
    return image


def basic(draw: Draw) -> None:
    pipeline(draw)


def fast(draw: Draw) -> None:
    pipeline(draw)
    bolt(draw, 256, ICON_Y - 80, ACCENT)
    centred_text(draw, 256, ICON_Y + 70, "4 steps", LABEL_FONT, ACCENT)


def extra_reference(draw: Draw) -> None:
    pipeline(draw)
    portrait(draw, 256, ICON_Y + 98, ACCENT, "")
    arrow(draw, 256, ICON_Y + 50, 256, ICON_Y + 47, ACCENT)
    draw.text((306, ICON_Y + 84), "+1 photo", font=font(LABEL_FONT), fill=ACCENT)


def init_video(draw: Draw) -> None:
    pipeline(draw)
    film(draw, 256, ICON_Y + 100, ACCENT, "")
    arrow(draw, 256, ICON_Y + 64, 256, ICON_Y + 47, ACCENT)
    draw.text((310, ICON_Y + 88), "init video", font=font(LABEL_FONT), fill=ACCENT)


def guider(draw: Draw) -> None:
    portrait(draw, 50, ICON_Y - 58, BLUE, "portrait")
    film(draw, 50, ICON_Y + 72, GREEN, "driving")
    names = (("guider", PURPLE), ("sampler", ACCENT), ("sigmas", ACCENT), ("noise", ACCENT))
    for index, (name, colour) in enumerate(names):
        y = ICON_Y - 84 + index * 52
        if colour == PURPLE:
            draw.rounded_rectangle((170, y - 20, 282, y + 20), radius=8, fill=colour)
            arrow(draw, 96, ICON_Y - 50, 164, y)
            arrow(draw, 100, ICON_Y + 64, 164, y + 8)
        else:
            draw.rounded_rectangle((170, y - 20, 282, y + 20), radius=8, outline=colour, width=3)
        centred_text(draw, 226, y, name, LABEL_FONT, INK if colour == PURPLE else colour)
        arrow(draw, 286, y, 322, ICON_Y + 6 + (index - 1.5) * 14)
    box(draw, 364, ICON_Y + 6, "#5a5a5a", "sample", width=84, height=90)
    arrow(draw, 408, ICON_Y + 6, 424, ICON_Y + 6)
    film(draw, 470, ICON_Y + 6, BROWN, "video")


def full_picture(draw: Draw) -> None:
    """A wide picture with a small face boxed, animated in its crop and pasted back at the picture's size."""
    draw.rectangle((24, ICON_Y - 92, 204, ICON_Y + 52), outline=BLUE, width=4)
    draw.ellipse((118, ICON_Y - 60, 142, ICON_Y - 36), fill=BLUE)
    draw.pieslice((106, ICON_Y - 32, 154, ICON_Y + 16), 180, 360, fill=BLUE)
    draw.rectangle((100, ICON_Y - 70, 160, ICON_Y - 10), outline=ACCENT, width=3)
    centred_text(draw, 114, ICON_Y + 72, "picture, face boxed", SMALL_FONT, MUTED)
    arrow(draw, 164, ICON_Y - 40, 222, ICON_Y - 40, ACCENT)
    box(draw, 266, ICON_Y - 40, PURPLE, "X-P", width=80, height=64)
    arrow(draw, 310, ICON_Y - 40, 346, ICON_Y - 40, ACCENT)
    draw.rectangle((350, ICON_Y - 92, 490, ICON_Y + 52), outline=ACCENT, width=4)
    draw.ellipse((408, ICON_Y - 60, 432, ICON_Y - 36), fill=BROWN)
    draw.pieslice((396, ICON_Y - 32, 444, ICON_Y + 16), 180, 360, fill=BROWN)
    centred_text(draw, 420, ICON_Y + 72, "pasted back, full size", SMALL_FONT, ACCENT)


DRAWINGS: dict[str, tuple[str, str, Callable[[Draw], None]]] = {
    "X-Portrait basic animation": ("Animate a portrait", "your portrait moves like your driving video", basic),
    "X-Portrait fast animation (LCM LoRA)": ("Fast: LCM-LoRA", "about 4 sampling steps instead of 30", fast),
    "X-Portrait with an extra reference photo": ("+ Extra photo", "a second photo of the same person", extra_reference),
    "X-Portrait from an init video": ("From an init video", "start from a video and change it", init_video),
    "X-Portrait with core samplers (Guider)": ("Core samplers", "ComfyUI's samplers, schedulers and noise", guider),
    "X-Portrait in the full picture": ("In the full picture", "crop a face, animate it, paste it back", full_picture),
}


def thumbnail(name: str) -> Image.Image:
    title, subtitle, picture = DRAWINGS.get(name, (name.removeprefix(PREFIX), "X-Portrait template", basic))
    return card(title, subtitle, picture)


def main() -> None:
    for name in WORKFLOWS:
        thumbnail(name).save(TEMPLATES_DIR / f"{name}.jpg", "JPEG", quality=QUALITY)


if __name__ == "__main__":
    main()
