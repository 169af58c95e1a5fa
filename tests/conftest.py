"""Shared fixtures: the golden data of the original code and the tiny golden model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN_TEXT_HEADS = 2  # the golden tiny CLIP: hidden 32, 2 heads (manifest tiny_clip_text_config)


@pytest.fixture(scope="session")
def golden():
    """golden("window_t500") -> dict of tensors from tests/golden/window_t500.safetensors."""
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def load(name: str) -> dict[str, torch.Tensor]:
        if name not in cache:
            cache[name] = load_file(str(GOLDEN_DIR / f"{name}.safetensors"))
        return cache[name]

    return load


@pytest.fixture(scope="session")
def golden_model():
    """The tiny golden checkpoint loaded through the real loader, fp32, SDPA attention."""
    from xportrait_core.model.checkpoint import load_model

    model, _ = load_model(GOLDEN_DIR / "tiny_weights.safetensors", precision="fp32",
                          attention_backend="sdpa", text_num_heads=GOLDEN_TEXT_HEADS)
    return model


@pytest.fixture(scope="session")
def golden_context(golden_model):
    return golden_model.encode_empty_prompt()


def golden_hints(golden, frames: range) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose and local hints of the golden run, computed independently of the pack's control code:
    pose = float32(u / 255) * 2 - 1 (CHW); local = -1 except the 32x32 squares around the recorded
    patch centres (128 px resolution), copied from the pose hint."""
    inputs = golden("inputs")
    index = torch.tensor(list(frames))
    pose = (inputs["driving_video_uint8"][index].float() / 255 * 2 - 1).permute(0, 3, 1, 2).contiguous()
    local = torch.full_like(pose, -1.0)
    half = 16
    for row, frame in enumerate(index.tolist()):
        for cx, cy in inputs["patch_centres"][frame].tolist():
            local[row, :, cy - half:cy + half, cx - half:cx + half] = \
                pose[row, :, cy - half:cy + half, cx - half:cx + half]
    return pose, local


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random X-Portrait model in the real key layout, saved as .safetensors (the command line's tests)."""
    from xportrait_core.model.checkpoint import save_model_checkpoint
    from xportrait_core.model.tiny_model import build_random_model

    path = tmp_path_factory.mktemp("models") / "tiny_xportrait.safetensors"
    save_model_checkpoint(build_random_model(seed=1), path)
    return path
