"""Test media made at test time from a real photo: nothing here is committed as a file.

- The portrait is scikit-image's astronaut (Eileen Collins, a NASA photo in the public domain, shipped inside
  scikit-image), the whole 512 px photo.
- No real driving video with a face and a free licence exists on this machine, so the driving clip is the same
  photo moved by smooth head motions (`xportrait_core.cli.demo_clip`: rotation, scale and shift of the face crop),
  with a sine tone as its audio track so that sound handling can be checked.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

AUDIO_RATE = 44100
TONE_HZ = 440.0  # an A: loud and steady enough to tell from silence after AAC encoding
TONE_AMPLITUDE = 0.3
AUDIO_FRAME_SAMPLES = 1024  # AAC's frame size


def write_portrait(path: Path) -> Path:
    from PIL import Image
    from skimage.data import astronaut

    Image.fromarray(astronaut()).save(path)
    return path


def write_driving_clip(path: Path, frames: int, fps: int, size: int = 256, with_audio: bool = True) -> Path:
    """An H.264 MP4 of the moved astronaut face (`frames` frames at `fps`), with an AAC sine tone lasting as long
    as the video when `with_audio`."""
    import av

    from xportrait_core.cli.demo_clip import head_motion_clip

    pictures = (head_motion_clip(frames=frames, size=size).driving.numpy() * 255).round().astype(np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        audio = container.add_stream("aac", rate=AUDIO_RATE) if with_audio else None
        for picture in pictures:
            for packet in video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            _write_tone(container, audio, seconds=frames / fps)
    return path


def _write_tone(container, stream, seconds: float) -> None:
    import av

    total = int(seconds * AUDIO_RATE)
    for start in range(0, total, AUDIO_FRAME_SAMPLES):
        count = min(AUDIO_FRAME_SAMPLES, total - start)
        times = (np.arange(start, start + count) / AUDIO_RATE).astype(np.float32)
        samples = (TONE_AMPLITUDE * np.sin(2 * math.pi * TONE_HZ * times))[None].astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def audio_rms(path: Path) -> float:
    """Root mean square of the first audio stream of a media file (0.0 when it has none)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return 0.0
        chunks = [frame.to_ndarray().astype(np.float64).ravel() for frame in container.decode(audio=0)]
    samples = np.concatenate(chunks) if chunks else np.zeros(1)
    return float(np.sqrt(np.mean(samples ** 2)))
