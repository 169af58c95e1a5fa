"""Checkpoint reading, identification, strict per-component loading and conversion."""
from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import GOLDEN_DIR, GOLDEN_TEXT_HEADS
from safetensors.torch import load_file, save_file

from xportrait_core.model.checkpoint import (
    CheckpointError,
    load_model,
    model_from_state_dict,
    read_state_dict,
    save_model_checkpoint,
)
from xportrait_core.model.checkpoint_convert import convert_to_safetensors
from xportrait_core.model.xportrait_model import XPortraitModel
from xportrait_core.networks.config import XPortraitConfig

TINY = GOLDEN_DIR / "tiny_weights.safetensors"


@pytest.fixture(scope="module")
def tiny_state():
    return load_file(str(TINY))


@pytest.fixture(scope="module")
def th_checkpoint(tmp_path_factory, tiny_state):
    """The original's layout: a pickled dict with 'state_dict' (as torch.save writes model_state-*.th)."""
    path = tmp_path_factory.mktemp("ckpt") / "model_state-415001.th"
    torch.save({"state_dict": tiny_state, "global_step": 415001}, path)
    return path


def test_full_size_model_has_every_key_and_shape_of_the_real_checkpoint():
    listed = json.loads((GOLDEN_DIR / "full_checkpoint_keys.json").read_text())
    with torch.device("meta"):
        model = XPortraitModel(XPortraitConfig())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    for prefix, group in listed["groups"].items():
        theirs = {k: s for k, s in listed["keys"].items()
                  if (k.startswith(prefix) if prefix != "(top level)" else "." not in k)}
        mine = {k: s for k, s in ours.items()
                if (k.startswith(prefix) if prefix != "(top level)" else "." not in k)}
        assert len(theirs) == group["keys"]
        assert mine == theirs, f"component {prefix}"
    assert ours == listed["keys"]


def test_config_is_derived_from_shapes_for_the_tiny_and_full_models(tiny_state):
    tiny = XPortraitConfig.from_state_dict(tiny_state, text_num_heads=GOLDEN_TEXT_HEADS)
    assert tiny.unet.model_channels == 32 and tiny.unet.channel_mult == (1, 2, 1, 1)
    assert tiny.unet.context_dim == 32 and tiny.unet.attention_levels == (0, 1, 2)
    assert tiny.vae.channels == 32 and tiny.text.num_layers == 12
    with torch.device("meta"):
        full_sd = XPortraitModel(XPortraitConfig()).state_dict()
    assert XPortraitConfig.from_state_dict(full_sd) == XPortraitConfig()


def test_bare_state_dict_and_wrapped_state_dict_both_load(tmp_path, tiny_state, th_checkpoint):
    bare = tmp_path / "bare.th"
    torch.save(tiny_state, bare)
    for path in (th_checkpoint, bare, TINY):
        model, report = load_model(path, text_num_heads=GOLDEN_TEXT_HEADS, attention_backend="sdpa")
        assert report.components["model.diffusion_model."] == 1246
        assert report.components["appearance_control_model."] == 698
        key = "pose_control_model.zero_convs.0.0.weight"
        assert torch.equal(model.state_dict()[key], tiny_state[key].float())


def test_pickle_that_would_run_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.th"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="NOT executed"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".th", ".safetensors"])
def test_truncated_file_is_reported_as_truncated(tmp_path, th_checkpoint, suffix):
    source = th_checkpoint if suffix == ".th" else TINY
    data = source.read_bytes()
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(broken)


def test_missing_file_says_where_the_checkpoint_goes(tmp_path):
    with pytest.raises(CheckpointError, match="models/xportrait"):
        load_model(tmp_path / "nope.th")


def test_plain_sd15_checkpoint_is_named_as_such(tmp_path, tiny_state):
    sd15 = {k: v for k, v in tiny_state.items()
            if k.startswith(("model.diffusion_model.input_blocks", "model.diffusion_model.out",
                             "first_stage_model.", "cond_stage_model."))}
    path = tmp_path / "v1-5-pruned.ckpt"
    torch.save({"state_dict": sd15}, path)
    with pytest.raises(CheckpointError, match="plain Stable Diffusion 1.5 checkpoint"):
        load_model(path)


def test_animatediff_motion_module_is_named_as_such(tmp_path):
    path = tmp_path / "mm_sd_v15.safetensors"
    save_file({"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": torch.ones(4)}, str(path))
    with pytest.raises(CheckpointError, match="AnimateDiff motion module"):
        load_model(path)


def test_missing_tensors_are_listed_per_component(tiny_state):
    state = dict(tiny_state)
    del state["pose_control_model.zero_convs.3.0.weight"]
    del state["first_stage_model.decoder.conv_out.bias"]
    state["local_pose_control_model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        model_from_state_dict(state, "partial", text_num_heads=GOLDEN_TEXT_HEADS)
    message = str(info.value)
    assert "pose_control_model.* is missing 1 of 340 tensors: pose_control_model.zero_convs.3.0.weight" in message
    assert "first_stage_model.* is missing 1 of 248" in message
    assert "local_pose_control_model.* has 1 unexpected tensors" in message


def test_wrong_shape_is_reported(tiny_state):
    state = dict(tiny_state)
    state["model.diffusion_model.out.2.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match=r"out.2.bias \(5,\) \(expected \(4,\)\)"):
        model_from_state_dict(state, "reshaped", text_num_heads=GOLDEN_TEXT_HEADS)


def test_checkpoint_without_text_encoder_loads_and_asks_for_a_context(tiny_state):
    state = {k: v for k, v in tiny_state.items() if not k.startswith("cond_stage_model.")}
    model, report = model_from_state_dict(state, "no-text")
    assert not report.text_encoder and model.cond_stage_model is None
    with pytest.raises(ValueError, match="no text encoder"):
        model.encode_empty_prompt()


def test_checkpoint_without_clip_position_ids_loads(tiny_state):
    state = dict(tiny_state)
    del state["cond_stage_model.transformer.text_model.embeddings.position_ids"]
    model, _ = model_from_state_dict(state, "newer-transformers", text_num_heads=GOLDEN_TEXT_HEADS)
    assert model.cond_stage_model is not None


@pytest.mark.parametrize("fp16", [False, True])
def test_convert_th_to_safetensors_round_trips_exactly(tmp_path, th_checkpoint, tiny_state, fp16):
    out = tmp_path / "xportrait.safetensors"
    counts = convert_to_safetensors(th_checkpoint, out, fp16=fp16)
    assert counts["tensors"] == len(tiny_state)
    converted = load_file(str(out))
    assert converted.keys() == tiny_state.keys()
    for key, tensor in tiny_state.items():
        expected = tensor.half() if (fp16 and tensor.dtype == torch.float32 and
                                     not key.endswith(".pe") and "." in key) else tensor
        assert converted[key].dtype == expected.dtype, key
        assert torch.equal(converted[key], expected), key


def test_fp16_conversion_keeps_schedule_and_position_tables_float32(tmp_path, th_checkpoint):
    convert_to_safetensors(th_checkpoint, tmp_path / "s.safetensors", fp16=True)
    out = load_file(str(tmp_path / "s.safetensors"))
    pe = next(k for k in out if k.endswith(".pe"))
    assert out["betas"].dtype == torch.float32 and out[pe].dtype == torch.float32
    assert out["model.diffusion_model.input_blocks.0.0.weight"].dtype == torch.float16


def test_convert_refuses_a_wrong_shaped_tensor_before_writing(tmp_path, tiny_state):
    state = dict(tiny_state)
    key = "appearance_control_model.input_blocks.1.0.in_layers.2.weight"
    state[key] = torch.zeros(state[key].shape[0], state[key].shape[1], 1, 1)
    source = tmp_path / "wrong.th"
    torch.save({"state_dict": state}, source)
    with pytest.raises(CheckpointError, match=r"wrong shape: .*in_layers\.2\.weight \(\d+, \d+, 1, 1\)"):
        convert_to_safetensors(source, tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.th"]


def test_convert_refuses_an_unrelated_model(tmp_path):
    source = tmp_path / "resnet.th"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8), "betas": torch.rand(1000)},
               source)
    with pytest.raises(CheckpointError, match="not an X-Portrait checkpoint"):
        convert_to_safetensors(source, tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet.th"]


def test_convert_of_a_safetensors_source_streams_and_round_trips(tmp_path, tiny_state):
    out = tmp_path / "half.safetensors"
    counts = convert_to_safetensors(TINY, out, fp16=True, text_num_heads=GOLDEN_TEXT_HEADS)
    converted = load_file(str(out))
    assert counts["tensors"] == len(tiny_state) == len(converted)
    key = "first_stage_model.decoder.conv_in.weight"
    assert converted[key].dtype == torch.float16 and torch.equal(converted[key], tiny_state[key].half())


def test_convert_onto_a_full_disk_is_one_message_and_leaves_nothing(tmp_path, th_checkpoint, monkeypatch):
    import errno

    from xportrait_core.model import safetensors_stream

    written = []

    def full_disk(stream, tensor):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(tensor)

    monkeypatch.setattr(safetensors_stream, "_write_tensor", full_disk)
    with pytest.raises(CheckpointError, match="the disk is full.*nothing was written there"):
        convert_to_safetensors(th_checkpoint, tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_convert_refuses_up_front_when_the_disk_has_too_little_space(tmp_path, th_checkpoint, monkeypatch):
    import shutil as shutil_module

    from xportrait_core.model import checkpoint_convert

    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint_convert.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(CheckpointError, match=r"has 0\.0 GB free but 'out\.safetensors' needs"):
        convert_to_safetensors(th_checkpoint, tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_saved_random_model_reloads_with_its_text_head_count(tmp_path):
    from xportrait_core.model.tiny_model import build_random_model
    model = build_random_model(seed=3)
    path = tmp_path / "tiny.safetensors"
    save_model_checkpoint(model, path)
    loaded, _ = load_model(path, attention_backend="sdpa")
    assert loaded.config == model.config
    loaded_state = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded_state[key], value), key
