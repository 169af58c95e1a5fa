"""Bad input through the ComfyUI nodes (without ComfyUI), second round (issue 20): no silent success, messages that
name the node and the input. Each case failed before its fix. Reuses test_nodes' tiny model, 128 px, 16 frames."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_nodes import (  # noqa: F401 (fixtures)
    CHECKPOINT,
    RESOLUTION,
    FixedFaceProvider,
    controls,
    golden,
    models_dir,
    standalone_models,
)

from nodes.control_nodes import LocalPatches, MotionControl
from nodes.errors import XPortraitInputError
from nodes.loader_nodes import LoadModel
from xportrait_core.options import OPTIONS


class SourceOnlyFaceProvider(FixedFaceProvider):
    """A face in the source (the first detection call), none in any driving frame."""

    def detect(self, frames_fhwc_uint8):
        self.faceless = () if self.calls == 0 else tuple(range(len(frames_fhwc_uint8)))
        return super().detect(frames_fhwc_uint8)


def test_a_driving_video_without_any_face_is_an_error_on_motion_control(golden):
    frames = len(golden["driving"])
    with pytest.raises(XPortraitInputError, match=rf"X-Portrait Motion Control, input 'driving': No face was found in "
                                                  rf"any of the driving video's {frames} frames"):
        MotionControl().align(golden["driving"], golden["source"], "auto", 0, "center_crop", RESOLUTION,
                              SourceOnlyFaceProvider())


def test_motion_without_any_face_is_an_error_on_local_patches(controls):
    motion, _ = controls
    provider = FixedFaceProvider(faceless=tuple(range(len(motion))))
    with pytest.raises(XPortraitInputError, match=r"X-Portrait Local Patches, input 'motion': No face was found"):
        LocalPatches().extract(motion, "black", provider)


def test_rgba_motion_into_local_patches_is_taken_without_its_alpha(controls):
    motion, local = controls
    rgba = torch.cat([motion, torch.full_like(motion[..., :1], 0.5)], dim=-1)
    patches, _ = LocalPatches().extract(rgba, "black", FixedFaceProvider())
    assert torch.equal(patches, local)


def test_the_nodes_cfg_range_is_the_options_range():
    from nodes.sampler_node import Sampler

    spec = Sampler.INPUT_TYPES()["required"]["cfg"][1]
    assert (spec["min"], spec["max"]) == (OPTIONS["cfg"].minimum, OPTIONS["cfg"].maximum)


def test_a_text_file_named_like_a_checkpoint_says_what_it_is(models_dir):
    (models_dir / "xportrait" / "model_state-415001.th").write_text("hello")
    with pytest.raises(XPortraitInputError) as raised:
        LoadModel().load("model_state-415001.th", "fp32", "sdpa")
    message = str(raised.value)
    assert message.startswith("Load X-Portrait Model, input 'checkpoint': checkpoint 'model_state-415001.th' is a "
                              "text file (5 bytes")
    assert "weights_only" not in message


def test_bad_text_head_metadata_names_text_num_heads_on_the_loader(models_dir):
    state = load_file(str(models_dir / "xportrait" / CHECKPOINT))
    save_file(state, str(models_dir / "xportrait" / "badmeta.safetensors"),
              metadata={"xportrait.text_num_heads": "x"})
    with pytest.raises(XPortraitInputError, match=r"Load X-Portrait Model, input 'text_num_heads': 'badmeta\."
                                                  r"safetensors': its metadata 'xportrait.text_num_heads' is 'x', not"):
        LoadModel().load("badmeta.safetensors", "fp32", "sdpa")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_compile_blocks_where_the_model_runs_on_the_cpu_is_refused_before_loading(models_dir, monkeypatch):
    from xportrait_core.model import checkpoint

    monkeypatch.setattr(checkpoint, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(XPortraitInputError, match=r"Load X-Portrait Model, input 'compile': compile 'compile_blocks' "
                                                  r"is for CUDA GPUs"):
        LoadModel().load(CHECKPOINT, "fp32", "sdpa", compile="compile_blocks")
