"""The networks inside ComfyUI's machinery: built from comfy.ops, managed, partially loaded and fp8-stored by
ComfyUI's own ModelPatcher (tests/comfyui_ops_checks.py, run with ComfyUI's Python).

Skipped unless COMFYUI_PATH points to a ComfyUI checkout; COMFYUI_PYTHON (default: this interpreter) must have
ComfyUI's and the pack's requirements.
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

CHECKS = Path(__file__).with_name("comfyui_ops_checks.py")
FP32_NOISE = 1e-5
FP8_RELATIVE_BOUND = 0.25  # as tests/test_fast_paths.py: e4m3 keeps 3 mantissa bits


@pytest.fixture(scope="module")
def checks() -> dict:
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    completed = subprocess.run([python, str(CHECKS)], capture_output=True, text=True, timeout=900,
                               cwd=COMFYUI_PATH, env={**os.environ, "COMFYUI_PATH": COMFYUI_PATH})
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_networks_built_from_comfy_ops_equal_the_torch_layers(checks):
    assert checks["layer_class"].startswith("comfy.ops.")
    assert checks["ops_max_abs"] <= FP32_NOISE


def test_the_patcher_reports_the_size_of_the_managed_networks_and_the_vae_is_comfyuis(checks):
    assert checks["patcher_size"] == checks["expected_size"]
    assert checks["vae_class"] == "comfy.sd.VAE"


def test_comfyuis_optimized_attention_gives_the_same_eps_as_the_packs_sdpa(checks):
    assert checks["attention_max_abs"] <= FP32_NOISE


def test_a_partial_low_vram_load_streams_layers_and_keeps_the_result(checks):
    assert checks["lowvram"] and checks["streamed_layers"] > 0
    assert checks["partial_max_abs"] <= FP32_NOISE


def test_fp8_storage_through_comfy_manual_cast(checks):
    assert checks["fp8_weight_dtype"] == "torch.float8_e4m3fn"
    assert 0 < checks["fp8_relative"] <= FP8_RELATIVE_BOUND
