"""Bad input through the ComfyUI nodes (their library calls, without ComfyUI): one test per class of mistake.

Each asserts that the error names the node and the input the user has to change, says what is wrong and what to do,
and comes before the expensive work where it can. Reuses test_nodes' tiny model, 128 px, 16 frames.
"""
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
    loaded,
    models_dir,
    reference,
    run_sampler,
    standalone_models,
)

from nodes import host
from nodes.control_nodes import MotionControl, Reference
from nodes.errors import XPortraitInputError
from nodes.loader_nodes import LoadModel, LoRA

TINY_TEXT_HEADS = 2


@pytest.fixture
def model_must_not_run(loaded, monkeypatch):
    """Fail the test if the sampler node puts the networks to work: the mistake must be reported before."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was used before the bad input was reported")

    monkeypatch.setattr(host.current(), "loaded", refuse)


# -------------------------------------------------------------------------------------------- wrong input names
def test_a_source_without_a_face_blames_source_and_names_the_nodes_option(golden):
    with pytest.raises(XPortraitInputError) as raised:
        MotionControl().align(golden["driving"], torch.zeros(1, 64, 64, 3), "auto", 0, "center_crop", RESOLUTION,
                              FixedFaceProvider(faceless=(0,)))
    message = str(raised.value)
    assert message.startswith("X-Portrait Motion Control, input 'source': No face was found")
    assert "(best_frame off)" in message and "best_frame=" not in message


@pytest.mark.parametrize("resolution", [72, 200])
def test_a_reference_resolution_that_is_not_a_multiple_of_64_names_resolution(loaded, golden, resolution):
    with pytest.raises(XPortraitInputError, match=r"X-Portrait Reference, input 'resolution': must be a multiple of 64 "
                                                  r"pixels"):
        Reference().encode(golden["source"], loaded[1], resolution, "center_crop")


def test_a_motion_control_resolution_that_is_not_a_multiple_of_64_names_resolution(golden):
    with pytest.raises(XPortraitInputError, match=r"X-Portrait Motion Control, input 'resolution': must be a multiple "
                                                  r"of 64 pixels .*got 200 \(nearest: 192 or 256\)"):
        MotionControl().align(golden["driving"], golden["source"], "auto", 0, "center_crop", 200,
                              FixedFaceProvider())


@pytest.mark.parametrize("setting, value, expected", [
    ("cfg", float("nan"), "input 'cfg': must be a finite number from 0 to 30"),
    ("cfg", -1.0, "input 'cfg': must be a finite number from 0 to 30"),
    ("steps", 0, "input 'steps': must be a whole number from 1 to 1000"),
    ("seed", -5, "input 'seed': must be a whole number from 0 to"),
    ("window", 32, "input 'window': must be a whole number from 16 to 24"),
    ("denoise", 0.0, r"input 'denoise': must be a finite number in \(0, 1\]"),
    ("denoise", 0.02, "input 'denoise': does not fit the steps"),
    ("scheduler", "karras", "input 'scheduler': must be one of ddim, euler, dpmpp_2m, lcm"),
])
def test_a_sampler_setting_that_cannot_work_names_its_own_input_before_the_model_runs(
        loaded, reference, controls, setting, value, expected, model_must_not_run):
    with pytest.raises(XPortraitInputError, match=f"X-Portrait Sampler, {expected}"):
        run_sampler(loaded, reference, controls, **{setting: value})


def test_motion_frames_of_a_size_the_model_cannot_sample_name_motion(loaded, reference, model_must_not_run):
    frames = torch.rand(16, 96, 96, 3)
    with pytest.raises(XPortraitInputError, match=r"input 'motion': motion frames are 96 px but the reference is 128 "
                                                  r"px; set the same resolution on X-Portrait Reference and"):
        run_sampler(loaded, reference, (frames, frames))


# -------------------------------------------------------------------------------------- silent wrong results
def test_sampling_that_goes_non_finite_names_the_step_frames_and_precision(loaded, reference, controls):
    """Finite weights whose output overflows (what fp16 does on real models): the run stops at that step."""
    from xportrait_core.model.tiny_model import build_random_model

    networks = build_random_model(seed=0)
    out = networks.unet.state_dict()
    out["out.2.weight"].mul_(1e38)
    out["out.2.bias"].fill_(torch.finfo(torch.float32).max)
    with pytest.raises(XPortraitInputError) as raised:
        run_sampler((host.current().manage(networks, "overflowing"), loaded[1]), reference, controls, cfg=1.0)
    message = str(raised.value)
    assert message.startswith("X-Portrait Sampler, input 'model': sampling went non-finite")
    assert "at step 1 of 1, in 16 of 16 frames (0-15)" in message
    assert "Try precision fp32 on Load X-Portrait Model" in message and "a lower cfg." in message


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(models_dir):
    state = load_file(str(models_dir / "xportrait" / CHECKPOINT))
    state["pose_control_model.zero_convs.0.0.bias"][1] = float("-inf")
    save_file(state, str(models_dir / "xportrait" / "damaged.safetensors"),
              metadata={"xportrait.text_num_heads": str(TINY_TEXT_HEADS)})
    with pytest.raises(XPortraitInputError, match=r"Load X-Portrait Model, input 'checkpoint': 'damaged.safetensors' "
                                                  r"is damaged: 'pose_control_model.zero_convs.0.0.bias' holds 1 NaN"):
        LoadModel().load("damaged.safetensors", "fp32", "sdpa")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_graphs_where_the_model_runs_on_the_cpu_names_compile_before_loading(models_dir, monkeypatch):
    from xportrait_core.model import checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(checkpoint, "load_model", refuse)
    with pytest.raises(XPortraitInputError, match=r"Load X-Portrait Model, input 'compile': compile 'cuda_graphs' "
                                                  r"needs a CUDA device; the model runs on cpu"):
        LoadModel().load(CHECKPOINT, "fp32", "sdpa", compile="cuda_graphs")


# -------------------------------------------------------------------------------------------------- LoRA node
def test_a_file_that_is_not_a_lora_is_reported_by_the_lora_node_naming_the_file(models_dir):
    (models_dir / "loras" / "tiny_model.safetensors").write_bytes(
        (models_dir / "xportrait" / CHECKPOINT).read_bytes())
    with pytest.raises(XPortraitInputError, match=r"X-Portrait LoRA, input 'lora_name': 'tiny_model.safetensors' is "
                                                  r"not an SD1.5 LoRA"):
        LoRA().choose("tiny_model.safetensors", 1.0)


def test_a_damaged_lora_is_reported_by_the_lora_node_naming_the_file(models_dir):
    from test_nodes import TO_Q_KOHYA

    save_file({f"{TO_Q_KOHYA}.lora_down.weight": torch.full((2, 32), float("nan")),
               f"{TO_Q_KOHYA}.lora_up.weight": torch.zeros(32, 2)}, str(models_dir / "loras" / "nan_lora.safetensors"))
    with pytest.raises(XPortraitInputError, match=r"input 'lora_name': LoRA file 'nan_lora.safetensors' is damaged: "
                                                  r"'lora_unet_.*lora_down.weight' holds 64 NaN"):
        LoRA().choose("nan_lora.safetensors", 1.0)


# ------------------------------------------------------------------------------------------- small checkpoints
@pytest.fixture
def narrow_th(models_dir):
    """The tiny model in the original's .th layout: no metadata to tell its 32-wide text encoder's 2 heads."""
    state = load_file(str(models_dir / "xportrait" / CHECKPOINT))
    torch.save({"state_dict": state}, models_dir / "xportrait" / "tiny.th")
    return "tiny.th"


def test_a_small_checkpoint_asks_for_text_num_heads_on_the_loader(narrow_th):
    with pytest.raises(XPortraitInputError, match=r"Load X-Portrait Model, input 'text_num_heads': 'tiny.th': its text "
                                                  r"encoder is 32 wide"):
        LoadModel().load(narrow_th, "fp32", "sdpa")


def test_the_loaders_text_num_heads_loads_a_small_checkpoint(narrow_th):
    managed, _ = LoadModel().load(narrow_th, "fp32", "sdpa", text_num_heads=TINY_TEXT_HEADS)
    assert managed.model.config.text.num_heads == TINY_TEXT_HEADS


def test_a_text_num_heads_that_does_not_fit_names_the_input(narrow_th):
    with pytest.raises(XPortraitInputError, match=r"input 'text_num_heads': .*a head count of 5 does not divide"):
        LoadModel().load(narrow_th, "fp32", "sdpa", text_num_heads=5)
