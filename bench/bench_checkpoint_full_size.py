"""Memory and time of converting and loading a FULL-SIZE X-Portrait checkpoint (3.07 B parameters, 12.3 GB fp32).

Writes a random checkpoint in the original's `.th` format (a zip written by torch.save holding {"state_dict": ...,
"global_step": ...}) with the real key list and shapes (tests/golden full_checkpoint_keys.json; the SD1.5 schedule
buffers hold their real values, the other tensors uniform random numbers in +-0.02), then, each in a fresh process:

- `convert` on the command line, fp32 and --fp16;
- loading as the command line does (`model.checkpoint.load_model`), and as Load X-Portrait Model does
  (`nodes.loader_nodes.LoadModel().load` outside ComfyUI), for the `.th` (fp32) and the `.safetensors` (fp16), at
  precision fp16 on the CPU.

For each: wall time, peak resident memory (VmRSS, sampled every 20 ms, and the kernel's VmHWM) and peak anonymous
memory (RssAnon: what the process allocated itself; memory-mapped file pages are VmRSS but not RssAnon, and the kernel
can drop them under pressure). Needs about 25 GB of free disk in --workdir at once; every file it writes is removed at
the end (also on failure). Run it alone (it reads and writes ~60 GB):

    flock /tmp/xp-heavy.lock python bench/bench_checkpoint_full_size.py --workdir /tmp/xp-full
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS_FILE = Path(os.environ.get("XPORTRAIT_GOLDEN_DIR", "/work/shared/golden")) / "full_checkpoint_keys.json"
SAMPLE_SECONDS = 0.02
CHUNK_ELEMENTS = 2**26  # random numbers are drawn 256 MiB at a time
WEIGHT_SCALE = 0.02  # typical magnitude of the real weights; far inside fp16's range
GIB = 2**30


# ------------------------------------------------------------------------------------------- the random file
def write_random_checkpoint(path: Path, seed: int = 0) -> dict[str, int]:
    """The full-size checkpoint at `path`, written without holding it in memory: the numbers go to a raw
    memory-mapped file first, and torch.save writes each tensor's storage from there (page cache, not anonymous)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from xportrait_core.model.xportrait_model import ldm_schedule_buffers

    listed = json.loads(KEYS_FILE.read_text())["keys"]
    schedule = ldm_schedule_buffers()
    special = set(schedule) | {k for k in listed if k.endswith("position_ids")}
    total = sum(int(np.prod(shape)) for key, shape in listed.items() if key not in special)
    raw_path = path.with_suffix(".raw")
    raw = np.memmap(raw_path, dtype=np.float32, mode="w+", shape=(total,))
    generator = np.random.default_rng(seed)
    for start in range(0, total, CHUNK_ELEMENTS):
        stop = min(total, start + CHUNK_ELEMENTS)
        raw[start:stop] = (generator.random(stop - start, dtype=np.float32) - 0.5) * (2 * WEIGHT_SCALE)
    state: dict[str, torch.Tensor] = {}
    offset = 0
    for key, shape in listed.items():
        if key in schedule:
            state[key] = schedule[key].clone()
        elif key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
        else:
            count = int(np.prod(shape))
            state[key] = torch.from_numpy(raw[offset:offset + count]).reshape(shape)
            offset += count
    torch.save({"state_dict": state, "global_step": 415001}, path)
    del state, raw
    raw_path.unlink()
    return {"tensors": len(listed), "parameters": total, "bytes": path.stat().st_size}


# ------------------------------------------------------------------------------------------------ measuring
def _status(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[name] = int(rest.split()[0]) * 1024
    return values


def measure(command: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run `command`, sampling its /proc status; its wall time and peaks in GiB. Raises if it fails."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    peaks = {"VmRSS": 0, "VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                for name, value in _status(process.pid).items():
                    peaks[name] = max(peaks[name], value)
            except (OSError, ValueError):
                return
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    sampler.join()
    seconds = time.monotonic() - started
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output}")
    print(output.strip().splitlines()[-1] if output.strip() else "", flush=True)
    return {"seconds": round(seconds, 1), "peak_rss_gib": round(max(peaks["VmRSS"], peaks["VmHWM"]) / GIB, 2),
            "peak_anon_gib": round(peaks["RssAnon"] / GIB, 2), "peak_file_gib": round(peaks["RssFile"] / GIB, 2)}


LOAD_CLI = """
import sys, time
sys.path.insert(0, {root!r})
from xportrait_core.model.checkpoint import load_model
started = time.monotonic()
model, report = load_model({path!r}, device="cpu", precision="fp16", attention_backend="auto")
print(f"load_model: {{sum(p.numel() for p in model.parameters())}} parameters in {{time.monotonic() - started:.1f}} s")
"""

LOAD_NODE = """
import sys, time
sys.path.insert(0, {root!r})
from nodes.loader_nodes import LoadModel
started = time.monotonic()
managed, vae = LoadModel().load({name!r}, precision="fp16", attention="auto")
print(f"Load X-Portrait Model: {{type(managed).__name__}} in {{time.monotonic() - started:.1f}} s")
"""


def run(workdir: Path) -> dict[str, object]:
    models = workdir / "models"
    (models / "xportrait").mkdir(parents=True)
    th = models / "xportrait" / "model_state-415001.th"
    fp32, fp16 = workdir / "full_fp32.safetensors", models / "xportrait" / "full_fp16.safetensors"
    results: dict[str, object] = {"machine": machine()}
    started = time.monotonic()
    results["random checkpoint"] = write_random_checkpoint(th)
    results["random checkpoint"]["seconds"] = round(time.monotonic() - started, 1)  # type: ignore[index]
    print("wrote", results["random checkpoint"], flush=True)
    python = sys.executable
    convert = [python, "-m", "xportrait_core", "convert"]
    results["convert .th -> .safetensors fp32"] = measure(convert + [str(th), str(fp32)])
    fp32.unlink()
    results["convert .th -> .safetensors --fp16"] = measure(convert + [str(th), str(fp16), "--fp16"])
    results["largest tensor (GiB)"] = largest_tensor_gib()
    for label, path in ((".th fp32", th), (".safetensors fp16", fp16)):
        results[f"load {label}, precision fp16, command line"] = measure(
            [python, "-c", LOAD_CLI.format(root=str(ROOT), path=str(path))])
        results[f"load {label}, precision fp16, Load X-Portrait Model"] = measure(
            [python, "-c", LOAD_NODE.format(root=str(ROOT), name=path.name)],
            env={"XPORTRAIT_MODELS_DIR": str(models)})
    return results


def largest_tensor_gib() -> float:
    import math

    listed = json.loads(KEYS_FILE.read_text())["keys"]
    return round(max(math.prod(shape) for shape in listed.values()) * 4 / GIB, 3)


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="an empty folder with ~25 GB free (removed)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty; it is removed at the end, so give a new folder")
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args.workdir)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
