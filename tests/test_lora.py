"""LoRA merging into the LDM-named main UNet, and the diffusers -> LDM module-name map it relies on."""
import logging

import pytest
import torch
from diffusers import UNet2DConditionModel

from xportrait_core.model.lora import apply_lora, lora_targets
from xportrait_core.networks.config import UNetConfig
from xportrait_core.networks.unet import MotionUNet
from xportrait_core.networks.unet_key_map import diffusers_to_ldm_unet_names

TO_Q = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"  # Linear (8, 8)
PROJ_IN = "input_blocks.1.1.proj_in.weight"  # 1x1 conv (8, 8, 1, 1)
CONV1 = "input_blocks.1.0.in_layers.2.weight"  # 3x3 conv (8, 8, 3, 3)
KOHYA = {
    TO_Q: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    PROJ_IN: "lora_unet_down_blocks_0_attentions_0_proj_in",
    CONV1: "lora_unet_down_blocks_0_resnets_0_conv1",
}
DIFFUSERS = {
    TO_Q: "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    PROJ_IN: "down_blocks.0.attentions.0.proj_in",
    CONV1: "down_blocks.0.resnets.0.conv1",
}
TINY_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2, 1, 1), context_dim=32)


def ldm_weights():
    generator = torch.Generator().manual_seed(0)
    return {
        TO_Q: torch.randn(8, 8, generator=generator),
        PROJ_IN: torch.randn(8, 8, 1, 1, generator=generator),
        CONV1: torch.randn(8, 8, 3, 3, generator=generator),
    }


def low_rank(rank=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {
        TO_Q: (torch.randn(rank, 8, generator=generator), torch.randn(8, rank, generator=generator)),
        PROJ_IN: (torch.randn(rank, 8, 1, 1, generator=generator), torch.randn(8, rank, 1, 1, generator=generator)),
        CONV1: (torch.randn(rank, 8, 3, 3, generator=generator), torch.randn(8, rank, 1, 1, generator=generator)),
    }


def kohya_file(alpha=None):
    lora = {}
    for name, (down, up) in low_rank().items():
        lora[f"{KOHYA[name]}.lora_down.weight"] = down
        lora[f"{KOHYA[name]}.lora_up.weight"] = up
        if alpha is not None:
            lora[f"{KOHYA[name]}.alpha"] = torch.tensor(alpha)
    return lora


def expected_delta(name, scale):
    down, up = low_rank()[name]
    return scale * (up.flatten(1) @ down.flatten(1)).reshape(ldm_weights()[name].shape)


@pytest.mark.parametrize("name", [TO_Q, PROJ_IN, CONV1])
def test_kohya_merge_is_w_plus_strength_up_down_alpha_over_rank(name):
    weights = ldm_weights()
    apply_lora(weights, kohya_file(alpha=4.0), strength=0.5)
    # alpha 4 / rank 2 = 2, times strength 0.5
    assert torch.allclose(weights[name], ldm_weights()[name] + expected_delta(name, 0.5 * 2.0), atol=1e-5)


@pytest.mark.parametrize("layout", ["peft", "diffusers"])
@pytest.mark.parametrize("name", [TO_Q, PROJ_IN, CONV1])
def test_diffusers_layouts_without_alpha_merge_with_scale_1(layout, name):
    down_key, up_key = (("lora_A.weight", "lora_B.weight") if layout == "peft"
                        else ("lora.down.weight", "lora.up.weight"))
    lora = {}
    for ldm, (down, up) in low_rank().items():
        lora[f"unet.{DIFFUSERS[ldm]}.{down_key}"] = down
        lora[f"unet.{DIFFUSERS[ldm]}.{up_key}"] = up
    weights = ldm_weights()
    apply_lora(weights, lora)
    assert torch.allclose(weights[name], ldm_weights()[name] + expected_delta(name, 1.0), atol=1e-5)


def test_linear_lora_merges_into_a_1x1_conv():
    down, up = torch.randn(2, 8), torch.randn(8, 2)
    weights = ldm_weights()
    apply_lora(weights, {f"{KOHYA[PROJ_IN]}.lora_down.weight": down, f"{KOHYA[PROJ_IN]}.lora_up.weight": up})
    assert torch.allclose(weights[PROJ_IN], ldm_weights()[PROJ_IN] + (up @ down)[:, :, None, None], atol=1e-5)


def test_undo_restores_the_exact_original_weights():
    weights = ldm_weights()
    patch = apply_lora(weights, kohya_file(alpha=1.0))
    assert not torch.equal(weights[CONV1], ldm_weights()[CONV1])
    patch.undo()
    assert all(torch.equal(weights[name], ldm_weights()[name]) for name in weights)


def test_merge_keeps_the_weight_dtype():
    weights = {name: w.half() for name, w in ldm_weights().items()}
    apply_lora(weights, kohya_file())
    assert weights[TO_Q].dtype == torch.float16
    assert torch.allclose(weights[TO_Q].float(), ldm_weights()[TO_Q] + expected_delta(TO_Q, 1.0), atol=1e-2)


def test_merge_into_a_module_changes_its_parameters():
    unet = MotionUNet(TINY_UNET)
    before = unet.input_blocks[1][1].transformer_blocks[0].attn1.to_q.weight.clone()
    down, up = torch.randn(2, 32), torch.randn(32, 2)
    patch = apply_lora(unet, {f"{KOHYA[TO_Q]}.lora_down.weight": down, f"{KOHYA[TO_Q]}.lora_up.weight": up})
    after = unet.input_blocks[1][1].transformer_blocks[0].attn1.to_q.weight
    assert patch.applied == ["input_blocks.1.1.transformer_blocks.0.attn1.to_q"]
    assert torch.allclose(after, before + up @ down, atol=1e-5)
    patch.undo()
    assert torch.equal(unet.input_blocks[1][1].transformer_blocks[0].attn1.to_q.weight, before)


def test_prefix_targets_a_full_checkpoint_state_dict():
    weights = {f"model.diffusion_model.{name}": w for name, w in ldm_weights().items()}
    patch = apply_lora(weights, kohya_file(), prefix="model.diffusion_model.")
    assert len(patch.applied) == 3


def test_unmatched_and_text_encoder_keys_are_reported_with_a_count(caplog):
    lora = kohya_file()
    lora["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = torch.zeros(2, 8)
    lora["lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a"] = torch.zeros(2, 8)
    lora["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(2, 8)
    with caplog.at_level(logging.WARNING, logger="xportrait_core.model.lora"):
        patch = apply_lora(ldm_weights(), lora)
    assert len(patch.applied) == 3 and len(patch.unmatched) == 2 and len(patch.text_encoder_keys) == 1
    assert "2 keys/layers not applied" in caplog.text and "1 text-encoder keys skipped" in caplog.text


def test_a_lora_for_a_layer_the_target_lacks_or_of_another_shape_is_unmatched():
    weights = ldm_weights()
    lora = kohya_file()
    lora[f"{KOHYA[TO_Q]}.lora_up.weight"] = torch.zeros(16, 2)  # an SDXL-sized layer
    lora["lora_unet_mid_block_attentions_0_proj_out.lora_down.weight"] = torch.zeros(2, 8)
    lora["lora_unet_mid_block_attentions_0_proj_out.lora_up.weight"] = torch.zeros(8, 2)
    patch = apply_lora(weights, lora)
    assert sorted(patch.applied) == sorted([PROJ_IN[: -len(".weight")], CONV1[: -len(".weight")]])
    assert set(patch.unmatched) == {TO_Q[: -len(".weight")], "middle_block.1.proj_out"}
    assert torch.equal(weights[TO_Q], ldm_weights()[TO_Q])


def test_a_lora_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="no key of the LoRA matched the SD1.5 UNet"):
        apply_lora(ldm_weights(), {"transformer.blocks.0.attn.lora_A.weight": torch.zeros(2, 8)})


def test_lcm_lora_style_file_covering_every_layer_maps_completely():
    # LCM-LoRA (kohya) covers attention, ff, proj_in/out, ResBlock convs (3x3), time embedding, conv_in/out,
    # down- and upsamplers: a LoRA on every >= 2-D weight of the UNet must merge into every one of them.
    unet = MotionUNet(TINY_UNET)
    weights = unet.state_dict()
    lora, expected = {}, set()
    for diffusers_name, ldm_name in diffusers_to_ldm_unet_names().items():
        weight = weights.get(f"{ldm_name}.weight")
        if weight is None or weight.dim() < 2:
            continue
        kohya = "lora_unet_" + diffusers_name.replace(".", "_")
        lora[f"{kohya}.lora_down.weight"] = torch.randn(4, *weight.shape[1:])
        lora[f"{kohya}.lora_up.weight"] = torch.randn(weight.shape[0], 4, *([1] * (weight.dim() - 2)))
        lora[f"{kohya}.alpha"] = torch.tensor(4.0)
        expected.add(ldm_name)
    patch = apply_lora(unet, lora)
    assert set(patch.applied) == expected and patch.unmatched == {}
    assert {"time_embed.0", "input_blocks.0.0", "out.2", "input_blocks.3.0.op", "output_blocks.2.1.conv",
            "output_blocks.5.2.conv", "input_blocks.4.0.skip_connection", "input_blocks.1.0.in_layers.2"} <= expected


def test_key_map_covers_every_layer_of_our_unet_except_motion_modules():
    ldm_modules = {key.rsplit(".", 1)[0] for key in MotionUNet(TINY_UNET).state_dict() if "motion_module" not in key}
    mapped = set(diffusers_to_ldm_unet_names().values())
    assert ldm_modules - mapped == set()
    # listed for every ResBlock, present only where the channel count changes
    assert {name.rsplit(".", 1)[1] for name in mapped - ldm_modules} == {"skip_connection"}


def test_key_map_pairs_diffusers_and_ldm_layers_of_the_same_shape():
    diffusers_unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 32, 32), cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
        sample_size=8,
    )
    diffusers_shapes = {k: v.shape for k, v in diffusers_unet.state_dict().items()}
    ldm_shapes = {k: v.shape for k, v in MotionUNet(TINY_UNET).state_dict().items()}
    pairs = 0
    for diffusers_name, ldm_name in diffusers_to_ldm_unet_names().items():
        for leaf in ("weight", "bias"):
            theirs, ours = diffusers_shapes.get(f"{diffusers_name}.{leaf}"), ldm_shapes.get(f"{ldm_name}.{leaf}")
            assert (theirs is None) == (ours is None), (diffusers_name, ldm_name, leaf)
            if theirs is not None:
                assert theirs == ours, (diffusers_name, ldm_name, leaf)
                pairs += 1
    assert pairs == len(diffusers_shapes)


def test_lora_targets_for_host_patches_name_exactly_the_layers_the_merge_changes():
    """What a host given the map patches (ComfyUI: comfy.lora.load_lora(lora, targets)) is what apply_lora merges:
    same layouts, same shape check, the file's own layer names as keys."""
    weights = ldm_weights()
    lora = kohya_file(alpha=1.0)
    lora[f"{KOHYA[TO_Q]}.lora_up.weight"] = torch.zeros(16, 2)  # does not fit: left out by both
    lora["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(2, 8)
    shapes = {name: weight.shape for name, weight in weights.items()}
    targets = lora_targets(shapes, lora, "networks.unet.")
    applied = apply_lora(weights, lora).applied
    assert targets == {KOHYA[PROJ_IN]: "networks.unet." + PROJ_IN, KOHYA[CONV1]: "networks.unet." + CONV1}
    assert sorted(name.removeprefix("networks.unet.").removesuffix(".weight") for name in targets.values()) == \
        sorted(applied)
    diffusers = {f"unet.{DIFFUSERS[TO_Q]}.lora_A.weight": torch.zeros(2, 8),
                 f"unet.{DIFFUSERS[TO_Q]}.lora_B.weight": torch.zeros(8, 2)}
    assert lora_targets(shapes, diffusers) == {f"unet.{DIFFUSERS[TO_Q]}": TO_Q}
    with pytest.raises(ValueError, match="no key of the LoRA matched the SD1.5 UNet"):
        lora_targets(shapes, {"transformer.blocks.0.attn.lora_A.weight": torch.zeros(2, 8)})
