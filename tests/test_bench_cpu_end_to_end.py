"""Smoke test of bench/bench_cpu_end_to_end.py: the tiny configuration at 128 px, one window, one step, in a fresh
process.

It checks the JSON line's contract (the fields the original's harness also prints, phases that add up, a
finite video of the sampled frames) and the --compare arithmetic; speed itself is never asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_cpu_end_to_end.py"
PHASES = ("load", "prep", "sampling", "decode")
SAMPLED_FRAMES = 16  # one window of the motion modules' 16 frames
RESOLUTION = 128     # the tiny configuration's (16 x 16 latents; its lowest UNet level is then 2 x 2)


def run_bench(*args: str) -> list[dict]:
    out = subprocess.run([sys.executable, str(BENCH), *args], check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def tiny_row(tmp_path_factory) -> dict:
    weights = tmp_path_factory.mktemp("bench") / "tiny.safetensors"
    # One thread: the test checks the contract, and a second OpenMP thread only slows a busy CI machine.
    rows = run_bench("--config", "tiny", "--steps", "1", "--threads", "1", "--weights", str(weights),
                     "--frames", str(SAMPLED_FRAMES), "--resolution", str(RESOLUTION))
    assert weights.exists(), "the bench writes the random weights it needs"
    assert len(rows) == 1
    return rows[0]


def test_row_describes_the_run(tiny_row):
    assert tiny_row["side"] == "ours"
    assert tiny_row["config"] == "tiny"
    assert (tiny_row["resolution"], tiny_row["frames"], tiny_row["steps"]) == (RESOLUTION, SAMPLED_FRAMES, 1)
    assert (tiny_row["cfg"], tiny_row["window"], tiny_row["overlap"], tiny_row["threads"]) == (5.0, 16, 4, 1)
    assert tiny_row["output_shape"] == [SAMPLED_FRAMES, RESOLUTION, RESOLUTION, 3]
    assert tiny_row["output_finite"] is True


def test_end_to_end_is_prep_plus_sampling_plus_decode_without_load(tiny_row):
    for phase in PHASES:
        assert tiny_row[f"{phase}_s"] > 0
    parts = tiny_row["prep_s"] + tiny_row["sampling_s"] + tiny_row["decode_s"]
    assert tiny_row["end_to_end_s"] == pytest.approx(parts, abs=2e-3)


def test_whole_run_peak_covers_every_phase_peak(tiny_row):
    phase_peaks = [tiny_row[f"peak_rss_{phase}_mib"] for phase in PHASES]
    if None in phase_peaks:
        pytest.skip("this kernel cannot reset the RSS high-water mark: only the whole-run peak is measured")
    assert all(peak > 0 for peak in phase_peaks)
    assert tiny_row["peak_rss_mib"] >= max(phase_peaks) - 0.1  # the rounding of the phase peaks


def test_one_step_runs_each_network_once_per_window_frame(tiny_row):
    # 16 frames: one window; the bank is written once per step from the one reference latent; the UNet runs
    # a conditional and an unconditional pass (cfg 5).
    assert tiny_row["evaluations"] == {"appearance": 1, "pose_control": 16, "local_control": 16, "unet": 32}


def test_compare_reports_speedups_and_memory_ratios_from_medians(tmp_path, tiny_row):
    ours = tmp_path / "ours.jsonl"
    ours.write_text(json.dumps(tiny_row) + "\n")
    original_rows = []
    for factor in (1.5, 2.0, 9.0):  # the median is the 2.0 run
        row = dict(tiny_row, side="original")
        for field in ("end_to_end_s", "sampling_s", "decode_s", "prep_s", "end_to_end_cpu_s"):
            row[field] = tiny_row[field] * factor
        row["peak_rss_mib"] = tiny_row["peak_rss_mib"] * 4
        original_rows.append(json.dumps(row))
    original = tmp_path / "original.jsonl"
    log_lines = "harness log line that is not JSON\n{'model_channels': 64, 'printed': 'by the original'}\n"
    original.write_text(log_lines + "\n".join(original_rows) + "\n")
    (ratios,) = run_bench("--compare", str(original), "--ours", str(ours))
    assert ratios["runs_original"] == 3 and ratios["runs_ours"] == 1
    assert ratios["speedup_end_to_end"] == pytest.approx(2.0, rel=1e-3)
    assert ratios["speedup_sampling"] == pytest.approx(2.0, rel=1e-3)
    assert ratios["speedup_decode"] == pytest.approx(2.0, rel=1e-3)
    assert ratios["speedup_end_to_end_cpu"] == pytest.approx(2.0, rel=1e-2)
    assert ratios["ratio_peak_rss"] == pytest.approx(0.25, rel=1e-3)
