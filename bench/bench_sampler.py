"""Benchmark: our sampler (appearance net once per step) against the original's cost model (per window).

    python bench/bench_sampler.py                       # tiny and mid configs, CUDA if available
    python bench/bench_sampler.py --device cpu --configs tiny --frames 20 --steps 2

For every config it runs, each in a fresh process (so peak RSS is per run):
- naive:     bank_mode "per_window" on per-frame reference latents, as the original (appearance net on the
             window's 16 per-frame latents in every window of every step);
- per_frame: bank once per step on the per-frame latents (exact reproduction mode);
- shared:    bank once per step on one reference latent (the default).
and prints frames/s, peak memory (CUDA max allocated on GPU, max RSS on CPU), network evaluations in frames per
net, and each mode's ratio to naive. Random weights: the numbers measure cost, not quality.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xportrait_core.model.tiny_model import MID_CONFIG, TINY_CONFIG, build_random_model  # noqa: E402
from xportrait_core.sampling.guidance import Conditioning  # noqa: E402
from xportrait_core.sampling.sampler import SamplerOptions, sample  # noqa: E402

logger = logging.getLogger("bench_sampler")

CONFIGS = {"tiny": (TINY_CONFIG, 16), "mid": (MID_CONFIG, 32)}  # config, latent side (128 px and 256 px)
MODES = {  # mode -> (bank_mode, per-frame reference latents)
    "naive": ("per_window", True),
    "per_frame": ("once_per_step", True),
    "shared": ("once_per_step", False),
}
TEXT_TOKENS = 77  # CLIP context length
KIB = 1024


def make_conditioning(frames: int, latent: int, context_dim: int, per_frame: bool) -> Conditioning:
    """Random inputs of the right shapes on the CPU (where a long video's per-frame tensors live)."""
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(1, 4, latent, latent, generator=generator)
    if per_frame:  # per-frame posterior samples differ only slightly, as in the original
        reference = reference + 0.01 * torch.randn(frames, 4, latent, latent, generator=generator)
    hint_side = 8 * latent
    return Conditioning(
        reference_latents=[reference],
        pose_hints=torch.rand(frames, 3, hint_side, hint_side, generator=generator) * 2 - 1,
        local_hints=torch.rand(frames, 3, hint_side, hint_side, generator=generator) * 2 - 1,
        context=torch.randn(1, TEXT_TOKENS, context_dim, generator=generator),
        uncond_context=torch.randn(1, TEXT_TOKENS, context_dim, generator=generator),
    )


def run_one(config_name: str, mode: str, device: str, frames: int, steps: int) -> dict:
    """One measured run (after a one-step warm-up) in this process."""
    config, latent = CONFIGS[config_name]
    bank_mode, per_frame = MODES[mode]
    model = build_random_model(config).to(device)
    cond = make_conditioning(frames, latent, config.unet.context_dim, per_frame)
    sample(model, cond, SamplerOptions(steps=1, bank_mode=bank_mode))  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = sample(model, cond, SamplerOptions(steps=steps, bank_mode=bank_mode, seed=1))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / KIB**2
    else:  # ru_maxrss is in KiB on Linux; the process peak, warm-up included
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB
    return {"config": config_name, "mode": mode, "seconds": seconds, "frames_per_s": frames / seconds,
            "peak_mib": peak_mib, "evaluations": result.evaluation_counts}


def run_in_subprocess(config_name: str, mode: str, device: str, frames: int, steps: int) -> dict:
    command = [sys.executable, __file__, "--single", f"{config_name}:{mode}", "--device", device,
               "--frames", str(frames), "--steps", str(steps)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(rows: list[dict], device: str, frames: int, steps: int) -> None:
    memory = "CUDA max allocated" if device == "cuda" else "max RSS"
    print(f"device {device}, {frames} frames, {steps} steps, cfg 5, window 16, overlap 4; memory = {memory}")
    header = (f"{'config':6} {'mode':9} {'frames/s':>9} {'peak MiB':>9} {'appear.':>8} {'pose':>6} {'local':>6} "
              f"{'unet':>6}  ratios vs naive (speed, memory, appearance evals)")
    print(header)
    naive = {row["config"]: row for row in rows if row["mode"] == "naive"}
    for row in rows:
        base, ev = naive[row["config"]], row["evaluations"]
        speed = row["frames_per_s"] / base["frames_per_s"]
        mem = row["peak_mib"] / base["peak_mib"]
        appear = ev["appearance"] / max(base["evaluations"]["appearance"], 1)
        print(f"{row['config']:6} {row['mode']:9} {row['frames_per_s']:9.3f} {row['peak_mib']:9.1f} "
              f"{ev['appearance']:8d} {ev['pose_control']:6d} {ev['local_control']:6d} {ev['unet']:6d}  "
              f"x{speed:.2f} speed, x{mem:.2f} memory, x{appear:.3f} appearance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", default="tiny,mid", help="comma-separated: tiny, mid")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: "config:mode", one run, JSON out
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.single:
        config_name, mode = args.single.split(":")
        print(json.dumps(run_one(config_name, mode, args.device, args.frames, args.steps)))
        return
    rows = [run_in_subprocess(c, m, args.device, args.frames, args.steps)
            for c in args.configs.split(",") for m in MODES]
    report(rows, args.device, args.frames, args.steps)


if __name__ == "__main__":
    main()
