"""bench/bench_gpu.py runs its whole flow on the CPU with the tiny configuration (what the GPU run does, small).

In-process (its `main` with CI-sized arguments): no start-up of a second Python, and no time limit whose outcome
would depend on how busy the machine is; the compile rows start their own processes, as on the GPU.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# golden_fp16 measures a GPU's half precision and compile_blocks compiles for minutes: both are left to the device
# run (the compile mechanism is tested in test_fast_paths.py).
ROWS = "fp16_cfg5,original_schedule,windows_sweep,fp8,decode"


@pytest.fixture(scope="module")
def bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "bench_gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_rows(bench_gpu, capsys, *arguments: str) -> list[dict]:
    bench_gpu.main(["--config", "tiny", "--device", "cpu", "--steps", "1", *arguments])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_the_gpu_benchmark_flow_runs_on_the_cpu_and_prints_one_json_line_per_row(bench_gpu, capsys):
    # 16 frames: one window; 17: two (the fewest that exercise joining), the cheapest flow that covers every row.
    rows = run_rows(bench_gpu, capsys, "--frames", "16,17", "--rows", ROWS)
    assert not [row for row in rows if "error" in row], rows
    by_name = {}
    for row in rows:
        by_name.setdefault(row["row"], []).append(row)
    assert [row["frames"] for row in by_name["fp16_cfg5"]] == [16, 17]
    for row in by_name["fp16_cfg5"]:
        assert row["seconds_per_step"] > 0 and row["tflop_per_step"] > 0 and row["activation_estimate_gib"] > 0
    # the original's schedule does more appearance-net work for the same frames
    assert by_name["original_schedule"][0]["evaluations"]["appearance"] > by_name["fp16_cfg5"][0]["evaluations"][
        "appearance"]
    assert [row["windows_per_forward"] for row in by_name["windows_sweep"]] == [1, 2, 4]
    assert by_name["decode"][0]["frames"] == 17 and by_name["decode"][0]["frames_per_call"] >= 1


def test_a_compile_that_overruns_its_time_gives_an_error_row_and_no_warm_run(bench_gpu, capsys):
    """The device lease is short: a compile_blocks process past --compile-timeout is stopped, reported as one error
    row, and the warm-cache run (which needs the cold one) is skipped. (0.5 s: the fresh process cannot even import
    torch in that time, however idle the machine.)"""
    rows = run_rows(bench_gpu, capsys, "--frames", "16", "--rows", "compile_blocks", "--compile-timeout", "0.5")
    assert [row for row in rows if row["row"] != "machine"] == [
        {"row": "compile_blocks", "cache": "cold", "error": "no result within 0.5 s"}]
