"""CPU benchmark of our whole pipeline, end to end, on the configuration of issue 11's comparison with the
original code (see docs/performance.md for the original's side and how to compare).

    python bench/bench_cpu_end_to_end.py --write-weights          # once: random weights, original key layout
    python bench/bench_cpu_end_to_end.py --repeat 3               # 3 runs, each in a fresh process
    python bench/bench_cpu_end_to_end.py --repeat 3 --compare original.jsonl   # + ratios to the original
    python bench/bench_cpu_end_to_end.py --profile                # time per network, top operators
    python bench/bench_cpu_end_to_end.py --profile --threads 1 --steps 1   # the same on a busy machine
    python bench/bench_cpu_end_to_end.py --config tiny --steps 1 --frames 16   # CI-sized

One JSON line per run, the same fields as the original's harness prints:
- load_s: reading the checkpoint and building the model (NOT part of end to end, on either side);
- prep_s: from the inputs in memory (uint8 source image, driving frames, scripted landmarks) to the
  conditioning: driving controls, reference latent, empty-prompt context;
- sampling_s: `sample` (DDIM, cfg, windows of 16 with overlap 4); decode_s: `decode_to_images`;
- end_to_end_s = prep + sampling + decode, ending with the decoded, clamped frames on the CPU;
  end_to_end_cpu_s: the CPU time the process used meanwhile (about threads x end_to_end_s when the cores were
  free: much less means other work shared them; load_average_1m is the machine's load when the run started);
- peak_rss_*_mib: peak resident memory of each phase (the kernel's high-water mark, reset at each phase
  start through /proc/self/clear_refs); peak_rss_mib: of the whole process (imports and load included).

On a machine that other work keeps busy, two OpenMP threads wait at every operator's barrier for a descheduled
thread: wall time then follows the number of operators, not their cost. Compare CPU time there
(speedup_end_to_end_cpu) and profile with --threads 1.

The run is what a user does: the checkpoint through `load_model`, controls through the pipeline's
`prepare_controls` (alignment off, as the original's --best_frame -2), the reference through `encode_references`,
`build_conditioning`, `sample(SamplerOptions(steps, cfg, seed))` and `decode_to_images`. The inputs are the
golden data's (tests/golden/inputs.safetensors: a 128 px portrait, 21 driving frames, their landmarks), fitted
to the sampling resolution by the pipeline, as on the original's side. Random weights: the numbers measure
cost, not quality.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xportrait_core.controls.landmarks import FaceLandmarks, check_uint8_frames  # noqa: E402
from xportrait_core.model.checkpoint import load_model, save_model_checkpoint  # noqa: E402
from xportrait_core.model.tiny_model import MID_CONFIG, TINY_CONFIG, build_random_model  # noqa: E402
from xportrait_core.pipeline import (  # noqa: E402
    ControlOptions,
    Framing,
    ImageVAE,
    SamplerOptions,
    build_conditioning,
    decode_to_images,
    encode_references,
    prepare_controls,
    reference_images,
)
from xportrait_core.sampling.sampler import sample  # noqa: E402

logger = logging.getLogger("bench_cpu_end_to_end")

CONFIGS = {"mid": (MID_CONFIG, 256), "tiny": (TINY_CONFIG, 128)}  # config, default resolution (px)
WEIGHTS_SEED = 0
DEFAULT_INPUTS = REPO / "tests" / "golden" / "inputs.safetensors"
DEFAULT_WEIGHTS_DIR = Path("/tmp/xportrait_bench")
DRIVING_FRAMES_SAMPLED = 20  # the original's --out_frames -1 drops the last of the 21 golden driving frames
DEFAULT_THREADS = 2          # the development machine's cores
TOP_OPERATORS = 15
KIB = 1024
PHASES = ("load", "prep", "sampling", "decode")
RUN_PHASES = PHASES[1:]  # end to end: everything after the model is loaded
TIMED_FIELDS = ("end_to_end_s", "sampling_s", "decode_s", "prep_s", "end_to_end_cpu_s")
MEMORY_FIELDS = ("peak_rss_mib", "peak_rss_sampling_mib", "peak_rss_decode_mib")


# ------------------------------------------------------------------------------------------ memory
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load_average() -> float | None:
    try:
        with open("/proc/loadavg") as handle:
            return float(handle.read().split()[0])
    except OSError:
        return None


class PhaseMeter:
    """Wall time and peak RSS per phase. On Linux the peak is the kernel's high-water mark (VmHWM), reset at
    each phase start; elsewhere only the whole process's ru_maxrss is known and phase peaks are None.
    `reset_peak` lets a finer meter (the profile's per-network peaks) reset the mark inside a phase without
    losing the phase's peak: the mark is folded into it first."""

    def __init__(self) -> None:
        self.per_phase = _can_reset_peak()
        self.overall_kib = 0
        self._phase_kib = 0
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.peak_mib: dict[str, float | None] = {}

    def reset_peak(self) -> None:
        if self.per_phase:
            self._phase_kib = max(self._phase_kib, _status_kib("VmHWM"))
            _can_reset_peak()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.per_phase:
            self.overall_kib = max(self.overall_kib, _status_kib("VmHWM"), self._phase_kib)
            self._phase_kib = 0
            _can_reset_peak()
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.cpu_seconds[name] = _cpu_seconds() - cpu_start
        if self.per_phase:
            peak = max(_status_kib("VmHWM"), self._phase_kib)
            self.overall_kib = max(self.overall_kib, peak)
            self.peak_mib[name] = peak / KIB
        else:
            self.peak_mib[name] = None

    def overall_mib(self) -> float:
        if self.per_phase:
            return max(self.overall_kib, self._phase_kib, _status_kib("VmHWM")) / KIB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB  # KiB on Linux


# ------------------------------------------------------------------------------------------ inputs
class ScriptedLandmarks:
    """A landmark provider that returns recorded 68-point landmarks, one set per frame in call order (the
    original's side serves the same ones through its face_alignment stand-in)."""

    name = "scripted"

    def __init__(self, points_68: np.ndarray) -> None:
        self.points_68 = np.asarray(points_68, np.float32)
        self.served = 0

    def detect(self, frames_fhwc_uint8: np.ndarray) -> FaceLandmarks:
        frames = check_uint8_frames(frames_fhwc_uint8)
        result = FaceLandmarks.empty(len(frames))
        for row in range(len(frames)):
            result.points_68[row] = self.points_68[self.served % len(self.points_68)]
            result.face_found[row] = True
            self.served += 1
        return result


@dataclass(frozen=True)
class BenchInputs:
    source_uint8: torch.Tensor    # (H, W, 3) uint8
    driving_uint8: torch.Tensor   # (F, H, W, 3) uint8, the frames that are sampled
    landmarks_256: np.ndarray     # (F, 68, 2) float32 on the 256 px detection grid


def read_inputs(path: Path, frames: int) -> BenchInputs:
    """The first `frames` driving frames of the inputs file, with their landmarks."""
    tensors = load_file(str(path))
    available = tensors["driving_video_uint8"].shape[0]
    if not 1 <= frames <= available:
        raise SystemExit(f"--frames must be between 1 and {available} (the driving frames in {path}); got {frames}")
    return BenchInputs(source_uint8=tensors["source_uint8"],
                       driving_uint8=tensors["driving_video_uint8"][:frames],
                       landmarks_256=tensors["landmarks_256"][:frames].numpy())


def default_weights_path(config_name: str) -> Path:
    return DEFAULT_WEIGHTS_DIR / f"{config_name}_seed{WEIGHTS_SEED}.safetensors"


def write_weights(config_name: str, path: Path) -> Path:
    """Random weights of the configuration in the original's key layout (both sides load this file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_model_checkpoint(build_random_model(CONFIGS[config_name][0], seed=WEIGHTS_SEED), partial)
    partial.replace(path)
    return path


# ----------------------------------------------------------------------------------------- the run
@dataclass
class RunSettings:
    config: str
    weights: Path
    inputs: Path
    frames: int
    resolution: int
    steps: int
    cfg: float
    threads: int
    seed: int


def run_pipeline(settings: RunSettings, meter: PhaseMeter,
                 on_model: Callable[[torch.nn.Module], None] | None = None) -> tuple[dict, torch.Tensor]:
    """One end-to-end run in this process; returns its JSON row and the frames (F, R, R, 3).
    on_model(model) is called after loading (the profiler wraps the networks there)."""
    torch.set_num_threads(settings.threads)
    load_average = _load_average()
    with meter.phase("load"):
        model, _ = load_model(settings.weights, precision="fp32", attention_backend="sdpa")
    if on_model is not None:
        on_model(model)
    inputs = read_inputs(settings.inputs, settings.frames)
    provider = ScriptedLandmarks(inputs.landmarks_256)
    with meter.phase("prep"):
        source = inputs.source_uint8.float() / 255
        driving = inputs.driving_uint8.float() / 255
        framing = Framing(settings.resolution)
        controls = prepare_controls(driving, source, provider, ControlOptions(framing, best_frame="off"), device="cpu")
        frames = controls.aligned.pose_hints.shape[0]
        references = encode_references(ImageVAE(model).encode, reference_images(source, (), framing))
        conditioning = build_conditioning(model, references, controls.aligned.pose_hints,
                                          controls.patches.local_hints)
    with meter.phase("sampling"):
        result = sample(model, conditioning, SamplerOptions(steps=settings.steps, cfg=settings.cfg,
                                                            seed=settings.seed))
    with meter.phase("decode"):
        images = decode_to_images(model, result.latents)
    row = {
        "side": "ours", "config": settings.config,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "resolution": settings.resolution, "frames": frames, "steps": len(result.timesteps),
        "cfg": settings.cfg, "window": SamplerOptions().window, "overlap": SamplerOptions().overlap,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        **{f"{phase}_s": round(meter.seconds[phase], 3) for phase in PHASES},
        "end_to_end_s": round(sum(meter.seconds[phase] for phase in RUN_PHASES), 3),
        "end_to_end_cpu_s": round(sum(meter.cpu_seconds[phase] for phase in RUN_PHASES), 3),
        "load_average_1m": load_average,
        "peak_rss_mib": round(meter.overall_mib(), 1),
        **{f"peak_rss_{phase}_mib": _round(meter.peak_mib[phase]) for phase in PHASES},
        "output_shape": list(images.shape),
        "output_finite": bool(torch.isfinite(images).all()),
        "evaluations": result.evaluation_counts,
    }
    return row, images


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run_in_fresh_process(args: argparse.Namespace) -> dict:
    """One measured run in a new interpreter, so its peak RSS is its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--single", *_forwarded(args)]
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout  # stderr shows through
    return json.loads(out.strip().splitlines()[-1])


def _forwarded(args: argparse.Namespace) -> list[str]:
    return ["--config", args.config, "--weights", str(args.weights), "--inputs", str(args.inputs),
            "--frames", str(args.frames),
            "--resolution", str(args.resolution), "--steps", str(args.steps), "--cfg", str(args.cfg),
            "--threads", str(args.threads), "--seed", str(args.seed)]


# ----------------------------------------------------------------------------------------- compare
def read_rows(path: Path, side: str) -> list[dict]:
    # JSON objects only: the original prints its config as a Python dict, which also starts with "{"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith('{"')]
    rows = [row for row in rows if row.get("side") == side and not row.get("summary")]
    if not rows:
        raise SystemExit(f"{path} holds no JSON line with \"side\": \"{side}\"; give the file the "
                         f"{'original harness' if side == 'original' else 'bench'} printed")
    return rows


def summarise(rows: list[dict]) -> dict:
    """Median, min and max of every timing and memory field over repeated runs."""
    summary = {"side": rows[0]["side"], "summary": True, "runs": len(rows)}
    for field in TIMED_FIELDS + MEMORY_FIELDS:
        values = [row[field] for row in rows if row.get(field) is not None]
        if values:
            summary[field] = {"median": round(statistics.median(values), 3),
                              "min": round(min(values), 3), "max": round(max(values), 3)}
    return summary


def compare(original: list[dict], ours: list[dict]) -> dict:
    """Speed-ups (original time / our time, > 1 means we are faster) and memory ratios (ours / original,
    < 1 means we use less), from the medians of each side's runs. speedup_end_to_end_cpu compares CPU time,
    which other work on the machine disturbs less than wall time."""
    theirs, mine = summarise(original), summarise(ours)
    ratios = {"comparison": True, "runs_original": len(original), "runs_ours": len(ours)}
    for field in TIMED_FIELDS:
        if field in theirs and field in mine:
            ratios[f"speedup_{field[:-2]}"] = round(theirs[field]["median"] / mine[field]["median"], 3)
    for field in MEMORY_FIELDS:
        if field in theirs and field in mine:
            ratios[f"ratio_{field[:-4]}"] = round(mine[field]["median"] / theirs[field]["median"], 3)
    return ratios


# ----------------------------------------------------------------------------------------- profile
class NetworkTimers:
    """Wall time per network, measured from the outside: the model's evaluation methods are wrapped on the
    instance and the two ControlNets get forward hooks (the conditional UNet is the conditional pass minus
    both ControlNets). Each call is also a torch.profiler range named after its network."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        for method, name in (("write_reference_bank", "appearance net"), ("eps_conditional", "conditional pass"),
                             ("eps_unconditional", "UNet uncond"), ("decode_latents", "VAE decode"),
                             ("encode_images", "VAE encode"), ("encode_empty_prompt", "text encoder")):
            setattr(model, method, self._timed(getattr(model, method), name))
        for module, name in ((model.pose_control_model, "pose ControlNet"),
                             (model.local_pose_control_model, "local ControlNet")):
            self._hook(module, name)

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def _timed(self, function, name: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            with torch.profiler.record_function(name):
                out = function(*args, **kwargs)
            self._add(name, time.perf_counter() - start)
            return out
        return timed

    def _hook(self, module: torch.nn.Module, name: str) -> None:
        state: dict = {}

        def before(*_):
            state["range"] = torch.profiler.record_function(name)
            state["range"].__enter__()
            state["start"] = time.perf_counter()

        def after(*_):
            self._add(name, time.perf_counter() - state["start"])
            state["range"].__exit__(None, None, None)

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def table(self, meter: PhaseMeter) -> list[dict]:
        seconds = dict(self.seconds)
        seconds["UNet cond"] = (seconds.pop("conditional pass", 0.0) - seconds.get("pose ControlNet", 0.0)
                                - seconds.get("local ControlNet", 0.0))
        calls = dict(self.calls)
        calls["UNet cond"] = calls.pop("conditional pass", 0)
        networks = ("appearance net", "pose ControlNet", "local ControlNet", "UNet cond", "UNet uncond")
        rest = meter.seconds["sampling"] - sum(seconds.get(net, 0.0) for net in networks)
        seconds["sampler (windows, guidance, scheduler)"] = rest
        calls["sampler (windows, guidance, scheduler)"] = 0
        prep_nets = seconds.get("VAE encode", 0.0) + seconds.get("text encoder", 0.0)
        seconds["controls and rest of prep"] = meter.seconds["prep"] - prep_nets
        calls["controls and rest of prep"] = 0
        total = sum(meter.seconds[phase] for phase in RUN_PHASES)
        return [{"part": name, "seconds": round(value, 3), "share": round(value / total, 4),
                 "calls": calls.get(name, 0)} for name, value in sorted(seconds.items(), key=lambda kv: -kv[1])]


# Components of the four denoising nets, timed inclusively; indented ones are inside the one above them.
COMPONENTS = (
    ("ResBlocks", lambda name, cls: cls == "ResBlock"),
    ("spatial transformers", lambda name, cls: cls == "SpatialTransformer"),
    ("  attn1: self / bank attention", lambda name, cls: cls == "Attention" and name.endswith(".attn1")),
    ("  attn2: text cross-attention", lambda name, cls: cls == "Attention" and name.endswith(".attn2")),
    ("  feed-forward (GEGLU)", lambda name, cls: cls == "FeedForward"),
    ("motion modules", lambda name, cls: cls == "MotionModule"),
    ("  temporal attention", lambda name, cls: cls == "TemporalAttention"),
    ("down / upsample convs", lambda name, cls: cls in ("Downsample", "Upsample")),
    ("ControlNet hint blocks (full resolution)", lambda name, cls: name.endswith("input_hint_block")),
)
UNET_BANK_ARGUMENT = "bank"  # MotionUNet.forward's 4th argument: the bank reader, None in the unconditional pass
DENOISING_PREFIXES = ("model.", "appearance_control_model.", "pose_control_model.", "local_pose_control_model.")


class ComponentTimers:
    """Inclusive wall time per kind of block of the denoising nets (forward hooks on every instance)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = {label: 0.0 for label, _ in COMPONENTS}
        for name, module in model.named_modules():
            if not name.startswith(DENOISING_PREFIXES):
                continue
            for label, matches in COMPONENTS:
                if matches(name, type(module).__name__):
                    self._hook(module, label)

    def _hook(self, module: torch.nn.Module, label: str) -> None:
        starts: list[float] = []

        def before(*_):
            starts.append(time.perf_counter())

        def after(*_):
            self.seconds[label] += time.perf_counter() - starts.pop()

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


class NetworkMemory:
    """Peak RSS while each network runs, and how far above the RSS at its start (what the call itself
    allocates). Hooks on the networks that never nest; the conditional and unconditional UNet passes are told
    apart by the bank reader they get (None when unconditional)."""

    def __init__(self, model: torch.nn.Module, meter: PhaseMeter) -> None:
        self.meter = meter
        self.peak_mib: dict[str, float] = {}
        self.above_start_mib: dict[str, float] = {}
        for module, name in ((model.appearance_control_model, "appearance net"),
                             (model.pose_control_model, "pose ControlNet"),
                             (model.local_pose_control_model, "local ControlNet"),
                             (model.unet, None),
                             (model.first_stage_model.encoder, "VAE encode"),
                             (model.first_stage_model.decoder, "VAE decode (one chunk)")):
            self._hook(module, name)

    def _hook(self, module: torch.nn.Module, name: str | None) -> None:
        state: dict = {}

        def before(_module, args, kwargs):
            bank_reader = args[3] if len(args) > 3 else kwargs.get(UNET_BANK_ARGUMENT)
            state["name"] = name or ("UNet cond" if bank_reader is not None else "UNet uncond")
            self.meter.reset_peak()
            state["start_kib"] = _status_kib("VmRSS")

        def after(*_):
            peak = _status_kib("VmHWM")
            label = state["name"]
            self.peak_mib[label] = max(self.peak_mib.get(label, 0.0), peak / KIB)
            self.above_start_mib[label] = max(self.above_start_mib.get(label, 0.0),
                                              (peak - state["start_kib"]) / KIB)

        module.register_forward_pre_hook(before, with_kwargs=True)
        module.register_forward_hook(after)


def profile(settings: RunSettings) -> None:
    """Time per network (one run, no profiler), then the top operators (a second run under torch.profiler,
    whose ranges are named after the networks)."""
    timers: list = []
    meter = PhaseMeter()

    def wrap(model: torch.nn.Module) -> None:
        timers.extend((NetworkTimers(model), ComponentTimers(model)))
        if meter.per_phase:
            timers.append(NetworkMemory(model, meter))

    row, _ = run_pipeline(settings, meter, wrap)
    table = timers[0].table(meter)
    print(json.dumps(row))
    print(f"\nwhere the time goes (end to end {row['end_to_end_s']:.1f} s: prep {row['prep_s']:.1f}, "
          f"sampling {row['sampling_s']:.1f}, decode {row['decode_s']:.1f})")
    for entry in table:
        print(f"  {entry['part']:40s} {entry['seconds']:8.2f} s  {100 * entry['share']:5.1f} %  "
              f"calls {entry['calls']}")
    print("peak RSS per phase (MiB): " + ", ".join(f"{phase} {row[f'peak_rss_{phase}_mib']}" for phase in PHASES)
          + f"; whole run {row['peak_rss_mib']}")
    print(f"blocks of the denoising nets, all calls (share of sampling, {row['sampling_s']:.1f} s):")
    for label, seconds in timers[1].seconds.items():
        print(f"  {label:42s} {seconds:8.2f} s  {100 * seconds / row['sampling_s']:5.1f} %")
    memory = {}
    if len(timers) > 2:
        print("peak RSS while each network runs (MiB; in parentheses: above the RSS when it started):")
        for label, peak in sorted(timers[2].peak_mib.items(), key=lambda kv: -kv[1]):
            print(f"  {label:42s} {peak:8.0f}  (+{timers[2].above_start_mib[label]:.0f})")
            memory[label] = {"peak_mib": round(peak, 1), "above_start_mib": round(timers[2].above_start_mib[label], 1)}
    print(json.dumps({"profile": table, "components_s": {k.strip(): round(v, 3) for k, v in timers[1].seconds.items()},
                      "network_peak_rss": memory}))

    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)

    def wrap_and_start(model: torch.nn.Module) -> None:  # loading stays outside the profile
        NetworkTimers(model)
        prof.start()

    run_pipeline(settings, PhaseMeter(), wrap_and_start)
    prof.stop()
    averages = prof.key_averages()
    print("\ntop operators by self CPU time (second run, under the profiler):")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=TOP_OPERATORS))
    print("top operators by the memory they allocate themselves:")
    print(averages.table(sort_by="self_cpu_memory_usage", row_limit=TOP_OPERATORS))


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="mid")
    parser.add_argument("--weights", type=Path, help="checkpoint both sides load (default: "
                        f"{DEFAULT_WEIGHTS_DIR}/<config>_seed{WEIGHTS_SEED}.safetensors, written when missing)")
    parser.add_argument("--write-weights", action="store_true", help="(re)write the random weights, then stop")
    parser.add_argument("--inputs", type=Path, default=DEFAULT_INPUTS)
    parser.add_argument("--frames", type=int, default=DRIVING_FRAMES_SAMPLED,
                        help="driving frames to animate (default 20, as the original's run)")
    parser.add_argument("--resolution", type=int, help="sampling resolution in px (default: 256 mid, 128 tiny)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs, each in a fresh process")
    parser.add_argument("--compare", type=Path, metavar="FILE", help="JSON lines of the original's harness")
    parser.add_argument("--ours", type=Path, metavar="FILE",
                        help="with --compare: our earlier JSON lines instead of running now")
    parser.add_argument("--profile", action="store_true", help="time per network and top operators")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # internal: one run, JSON out
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.resolution = args.resolution or CONFIGS[args.config][1]
    args.weights = args.weights or default_weights_path(args.config)

    if args.write_weights:
        print(f"wrote {write_weights(args.config, args.weights)}")
        return
    if args.compare and args.ours:
        print(json.dumps(compare(read_rows(args.compare, "original"), read_rows(args.ours, "ours"))))
        return
    if not args.weights.exists():
        logger.warning("writing random weights to %s (once)", write_weights(args.config, args.weights))
    settings = RunSettings(args.config, args.weights, args.inputs, args.frames, args.resolution, args.steps,
                           args.cfg, args.threads, args.seed)
    if args.single:
        print(json.dumps(run_pipeline(settings, PhaseMeter())[0]))
        return
    if args.profile:
        profile(settings)
        return
    rows = []
    for _ in range(args.repeat):
        rows.append(run_in_fresh_process(args))
        print(json.dumps(rows[-1]), flush=True)
    if args.repeat > 1:
        print(json.dumps(summarise(rows)))
    if args.compare:
        print(json.dumps(compare(read_rows(args.compare, "original"), rows)))


if __name__ == "__main__":
    main()
