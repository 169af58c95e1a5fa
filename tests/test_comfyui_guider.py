"""The X-Portrait Guider with a real ComfyUI's sampling code (SamplerCustomAdvanced and the core samplers, schedulers
and noises), in-process: tests/comfyui_guider_checks.py runs once with COMFYUI_PYTHON and reports measurements that
these tests hold to. Skipped unless COMFYUI_PATH points to a ComfyUI checkout. The guider's workflow and the core
nodes in a running server are tested in tests/test_comfyui_integration.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to run")

CHECKS = Path(__file__).parent / "comfyui_guider_checks.py"
RUN_TIMEOUT_S = 3600
GOLDEN_TOL = 1e-4  # manifest: full sampling max abs 1e-4 (fp32 noise ~2e-5)
FP32_NOISE = 1e-4  # the same sampling with the same weights computed in another order (merge vs patch)
# The original's last DDIM step goes to alphas_cumprod[0] = 1 - 0.00085, ddim_uniform's to sigma 0; the gap
# (sqrt(a_0) - 1) * x0 + sqrt(1 - a_0) * eps is a few hundredths for these latents (|x0| up to ~20).
LAST_STEP_GAP = (0.01, 0.5)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    completed = subprocess.run([python, str(CHECKS), str(tmp_path_factory.mktemp("guider_checks"))],
                               capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                               env={**os.environ, "COMFYUI_PATH": COMFYUI_PATH})
    assert completed.returncode == 0, completed.stderr[-6000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_core_ddim_with_ddim_uniform_visits_the_originals_timesteps_and_offsets(report):
    golden = report["golden_ddim"]
    assert golden["timesteps"] == [751, 501, 251, 1] and golden["steps"] == [0, 1, 2, 3]
    assert golden["offsets"] == golden["golden_offsets"]


def test_core_ddim_with_ddim_uniform_reproduces_the_golden_runs_last_x0_estimate(report):
    assert report["golden_ddim"]["max_abs_vs_golden_x0"] <= GOLDEN_TOL


def test_the_gap_to_the_golden_final_latents_is_the_originals_last_step_to_alphas_cumprod_0(report):
    golden = report["golden_ddim"]
    low, high = LAST_STEP_GAP
    assert low <= golden["max_abs_vs_golden_final_latents"] <= high
    assert golden["max_abs_vs_golden_final_after_the_alphas_cumprod_0_step"] <= GOLDEN_TOL
    assert golden["max_abs_sigma_0_end_vs_golden_final_latents"] <= GOLDEN_TOL


def test_the_denoised_output_is_the_core_callbacks_last_x0(report):
    assert report["golden_ddim"]["denoised_output_equals_output"] <= 1e-6


def test_core_euler_on_ddim_uniform_equals_the_pack_euler_scheduler(report):
    euler = report["euler_vs_pack"]
    assert euler["timesteps"] == [501, 1]
    assert euler["max_abs_scaled"] <= GOLDEN_TOL


def test_every_core_sampler_runs_with_one_window_plan_per_step(report):
    for name, run in report["samplers"].items():
        assert run["finite"] and run["shape"] == [16, 4, 16, 16], name
        assert run["steps"] == run["offsets"] == 3, name
    several_calls = {name for name, run in report["samplers"].items() if run["calls"] > run["steps"]}
    assert {"heun", "dpm_2", "dpmpp_2s_ancestral", "dpmpp_sde"} <= several_calls


def test_every_core_schedule_and_noise_node_drives_the_guider(report):
    expected = {"simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                "linear_quadratic", "kl_optimal", "KarrasScheduler", "AlignYourStepsScheduler", "SplitSigmas img2img",
                "DisableNoise img2img"}
    assert set(report["schedules"]) == expected
    for name, run in report["schedules"].items():
        assert run["finite"] and run["shape"] == [16, 4, 16, 16], name


def test_the_lora_is_patched_for_the_run_and_restored_after_it_a_cancel_and_an_error(report):
    runs = report["lora_cancel_errors"]
    assert runs["lora_changes_the_result"] > 1e-3
    assert runs["cancel"] == "interrupted"
    assert runs["weights_restored_after_a_run"] and runs["weights_restored_after_cancel"]
    assert runs["weights_restored_after_an_error"]


def test_samplers_needing_core_cfg_and_latents_of_another_size_are_refused_with_a_fix(report):
    runs = report["lora_cancel_errors"]
    assert "_cfg_pp" in runs["cfg_pp_error"]
    assert "Connect the guider's start_latent" in runs["latent_mismatch_error"]


def test_ksampler_with_the_schedule_model_stops_with_a_pointer_to_the_guider(report):
    assert "SamplerCustomAdvanced" in report["lora_cancel_errors"]["ksampler_error"]


def test_progress_and_a_preview_come_once_per_sampler_step(report):
    assert report["previews"] == [[1, 3, True], [2, 3, True], [3, 3, True]]


def test_an_lcm_style_lora_as_core_patches_gives_the_merges_result_within_fp32_noise(report):
    """The LCM template's Sampler settings with a LoRA on every layer: core's patches (inside ComfyUI) against the
    command line's merge, on the same networks; the weights exact after either."""
    runs = report["lora_patches_vs_merge"]
    assert runs["layers"] > 100 and runs["lora_changes_the_result"] > 1e-3
    assert runs["patches_vs_merge_max_abs"] <= FP32_NOISE
    assert runs["weights_exact_after_patches"] and runs["weights_exact_after_merge"]


def test_a_core_model_with_a_core_lora_loader_runs_beside_x_portrait(report):
    beside = report["core_model_beside"]
    assert beside["core_lora_patches"] > 0 and beside["core_finite"]
    assert beside["core_lora_changes_the_core_result"] > 0
    assert beside["xportrait_beside_vs_alone_max_abs"] == 0.0
