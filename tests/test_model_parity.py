"""Our networks compute what the original computes: single passes against tests/golden (fp32)."""
from __future__ import annotations

import pytest
import torch
from conftest import golden_hints

from xportrait_core.networks.reference_attention import BankReader, BankWriter
from xportrait_core.networks.unet_blocks import timestep_embedding

TOL = 1e-4           # manifest tolerances.recommended: single passes and guided eps, max abs
GOLDEN_ROWS = [0, 9]  # per-frame golden tensors keep frames 0 and 9 of the window
CFG = 5


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def test_empty_prompt_context_matches_frozen_clip(golden, golden_context):
    assert golden_context.shape == (1, 77, 32)
    assert max_abs(golden_context[0], golden("text")["context"]) <= TOL


def test_empty_prompt_token_ids_are_bos_then_eos_padding(golden):
    from xportrait_core.networks.text_encoder import empty_prompt_token_ids
    assert torch.equal(empty_prompt_token_ids(77)[0], golden("text")["token_ids"])


def test_vae_posterior_and_sample(golden, golden_model):
    vae = golden("vae")
    with torch.no_grad():
        mean, logvar = golden_model.first_stage_model.encode_moments(vae["image"])
        z = golden_model.encode_images(vae["image"], noise=vae["noise"])
    assert max_abs(mean, vae["mean"]) <= TOL
    assert max_abs(logvar, vae["logvar"]) <= TOL
    assert max_abs(z, vae["z_scaled"]) <= TOL


def test_vae_decode(golden, golden_model):
    vae = golden("vae")
    with torch.no_grad():
        assert max_abs(golden_model.decode_latents(vae["z_scaled"]), vae["decoded"]) <= TOL
        assert max_abs(golden_model.decode_latents(vae["decode_in"]), vae["decoded_2"]) <= TOL


def test_timestep_embedding_is_cos_then_sin(golden):
    emb = timestep_embedding(torch.tensor([500]), 32)[0]
    assert max_abs(emb, golden("modules_t500")["timestep_embedding_t500"]) <= 1e-6


def test_transformer_block_write_mode_is_plain_self_attention_and_records_norm1(golden, golden_model):
    taps = golden("modules_t500")
    block = golden_model.appearance_control_model.input_blocks[1][1].transformer_blocks[0]
    writer = BankWriter()
    with torch.no_grad():
        out = block(taps["transformer_write.in"], taps["transformer_write.context_row"][None], writer)
    assert max_abs(out, taps["transformer_write.out"]) <= TOL
    assert max_abs(writer.entries[0], golden("window_t500")["bank.00"]) <= TOL


def test_transformer_block_read_mode_attends_to_own_tokens_then_bank(golden, golden_model):
    taps = golden("modules_t500")
    block = golden_model.unet.input_blocks[1][1].transformer_blocks[0]
    reader = BankReader([golden("window_t500")["bank.00"]])
    with torch.no_grad():
        out = block(taps["transformer_read.in"], taps["transformer_read.context_row"][None], reader)
    assert max_abs(out, taps["transformer_read.out"]) <= TOL


def test_motion_module_after_input_block_4(golden, golden_model):
    taps = golden("modules_t500")
    with torch.no_grad():
        out = golden_model.unet.input_blocks_motion_module[2][0](taps["motion_in2.in"], 16)
    assert max_abs(out, taps["motion_in2.out"]) <= TOL


def test_output_motion_module_runs_after_the_upsample(golden, golden_model):
    taps = golden("modules_t500")
    assert taps["motion_out2.in"].shape[-1] == 4  # h/4: output block 2 has already upsampled h/8
    with torch.no_grad():
        out = golden_model.unet.output_blocks_motion_module[2][0](taps["motion_out2.in"], 16)
    assert max_abs(out, taps["motion_out2.out"]) <= TOL


def test_pose_hint_block(golden, golden_model):
    pose, _ = golden_hints(golden, range(16))
    with torch.no_grad():
        out = golden_model.pose_control_model.input_hint_block(pose[GOLDEN_ROWS])
    assert max_abs(out, golden("modules_t500")["pose_hint_block.out"]) <= TOL


@pytest.mark.parametrize("window", ["window_t500", "window_multiref_t500"])
def test_appearance_bank_entries(golden, golden_model, golden_context, window):
    data = golden(window)
    with torch.no_grad():
        bank = golden_model.write_reference_bank(data["image_control"], data["t"], golden_context)
    assert len(bank) == 16
    for i, entry in enumerate(bank):
        assert max_abs(entry[GOLDEN_ROWS], data[f"bank.{i:02d}"]) <= TOL, f"bank entry {i}"


@pytest.mark.parametrize("net,prefix", [("pose_control_model", "pose"), ("local_pose_control_model", "local")])
def test_controlnet_residuals(golden, golden_model, golden_context, net, prefix):
    data = golden("window_t500")
    pose, local = golden_hints(golden, range(16))
    hint = pose if prefix == "pose" else local
    with torch.no_grad():
        residuals = getattr(golden_model, net)(data["x_t"], hint, data["t"], golden_context)
    assert len(residuals) == 13
    for i, residual in enumerate(residuals):
        assert max_abs(residual[GOLDEN_ROWS], data[f"{prefix}_residual.{i:02d}"]) <= TOL, f"residual {i}"


def _window_eps(model, context, golden, data, more_references=()):
    pose, local = golden_hints(golden, range(16))
    with torch.no_grad():
        banks = [model.write_reference_bank(latents, data["t"], context)
                 for latents in (data["image_control"], *more_references)]
        bank = model.concat_reference_banks(banks)
        eps_c = model.eps_conditional(data["x_t"], data["t"], context, bank, pose, local)
        eps_u = model.eps_unconditional(data["x_t"], data["t"], context)
    return eps_c, eps_u, eps_u + CFG * (eps_c - eps_u)


@pytest.mark.parametrize("window", ["window_t500", "window_t1"])
def test_window_eps_conditional_unconditional_and_guided(golden, golden_model, golden_context, window):
    data = golden(window)
    eps_c, eps_u, eps_g = _window_eps(golden_model, golden_context, golden, data)
    assert max_abs(eps_c, data["eps_cond"]) <= TOL
    assert max_abs(eps_u, data["eps_uncond"]) <= TOL
    assert max_abs(eps_g, data["eps_guided"]) <= TOL


def test_window_with_a_second_reference_concatenates_banks(golden, golden_model, golden_context):
    data = golden("window_multiref_t500")
    eps_c, eps_u, eps_g = _window_eps(golden_model, golden_context, golden, data,
                                      more_references=(data["more_image_control.0"],))
    assert max_abs(eps_c, data["eps_cond"]) <= TOL
    assert max_abs(eps_g, data["eps_guided"]) <= TOL
    with torch.no_grad():
        extra = golden_model.write_reference_bank(data["more_image_control.0"], data["t"], golden_context)
    assert max_abs(extra[0][GOLDEN_ROWS], data["bank_more0.00"]) <= TOL


def test_ablation_without_bank_or_controls(golden, golden_model, golden_context):
    data, ablations = golden("window_t500"), golden("window_t500_ablations")
    pose, local = golden_hints(golden, range(16))
    with torch.no_grad():
        no_bank = golden_model.eps_conditional(data["x_t"], data["t"], golden_context, None, pose, local)
        bank = golden_model.write_reference_bank(data["image_control"], data["t"], golden_context)
        no_controls = golden_model.eps_conditional(data["x_t"], data["t"], golden_context, bank, None, None)
    assert max_abs(no_bank, ablations["eps_cond_no_bank"]) <= TOL
    assert max_abs(no_controls, ablations["eps_cond_no_controls"]) <= TOL


def test_ablation_without_motion_modules(golden, golden_model, golden_context, monkeypatch):
    from xportrait_core.networks.motion_module import MotionModule
    data = golden("window_t500")
    monkeypatch.setattr(MotionModule, "forward", lambda self, x, frames: x)
    with torch.no_grad():
        eps = golden_model.eps_unconditional(data["x_t"], data["t"], golden_context)
    assert max_abs(eps, golden("window_t500_ablations")["eps_uncond_no_motion"]) <= TOL


def test_the_observer_hears_of_every_network_evaluation_in_frames(golden, golden_model, golden_context):
    data = golden("window_t500")
    pose, local = golden_hints(golden, range(16))
    heard = []
    with torch.no_grad():
        bank = golden_model.write_reference_bank(data["image_control"][:1], data["t"][:1], golden_context,
                                                 observer=lambda *report: heard.append(report))
        golden_model.eps_conditional(data["x_t"], data["t"], golden_context, bank, pose, local,
                                     observer=lambda *report: heard.append(report))
        golden_model.eps_unconditional(data["x_t"], data["t"], golden_context,
                                       observer=lambda *report: heard.append(report))
    assert heard == [("appearance", 1), ("pose_control", 16), ("local_control", 16), ("unet", 16), ("unet", 16)]


def test_a_shared_single_reference_bank_equals_sixteen_identical_rows(golden, golden_model, golden_context):
    data = golden("window_t500")
    reference = data["image_control"][:1]
    pose, local = golden_hints(golden, range(16))
    with torch.no_grad():
        shared = golden_model.write_reference_bank(reference, data["t"][:1], golden_context)
        repeated = golden_model.write_reference_bank(reference.expand(16, -1, -1, -1), data["t"], golden_context)
        eps_shared = golden_model.eps_conditional(data["x_t"], data["t"], golden_context, shared, pose, local)
        eps_repeated = golden_model.eps_conditional(data["x_t"], data["t"], golden_context, repeated, pose, local)
    assert max_abs(eps_shared, eps_repeated) <= 1e-5


def test_window_batch_must_be_whole_videos_the_motion_modules_can_see(golden, golden_model, golden_context):
    data = golden("window_t500")
    with pytest.raises(AssertionError):  # the window is checked with the options: here an invariant
        golden_model.eps_unconditional(data["x_t"][:10], data["t"][:10], golden_context)
    with pytest.raises(AssertionError):
        golden_model.eps_unconditional(data["x_t"].repeat(2, 1, 1, 1)[:32], data["t"].repeat(2)[:32], golden_context,
                                       frames_per_video=32)
