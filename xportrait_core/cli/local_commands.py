"""Sub-commands that run the model locally: ``animate``, ``demo`` and ``convert``.

Heavy modules (torch, the networks) are imported when a command runs, so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import EXIT_BAD_INPUT, EXIT_OK, EXIT_TERMINATED, VIDEO_OUTPUT_SUFFIXES, OptionError, StartMode
from .flags import add_flag, add_flags, spell

if TYPE_CHECKING:
    from ..pipeline import PatchLandmarks

DEMO_RESOLUTION = 128   # the tiny model's working size: a minute on a laptop CPU
# The tiny model's 32 channels in GroupNorm's 32 groups need at least 2x2 latent cells at the UNets' deepest level.
DEMO_MIN_RESOLUTION = 128
DEMO_STEPS = 4
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

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.shown:
            print(file=sys.stderr)

    def on_window(self, step: int, window: int, windows: int) -> None:
        elapsed = time.monotonic() - self.started
        self.shown = True
        print(f"\rsampling: step {step + 1}/{self.total_steps}, window {window + 1}/{windows}, "
              f"{elapsed:.0f} s", end="", file=sys.stderr, flush=True)


def _add_run_flags(parser: argparse.ArgumentParser, steps: int, resolution: int) -> None:
    """The flags animate and demo share: how to sample, and where and how the model runs."""
    sampling = parser.add_argument_group("sampling")
    add_flags(sampling, "steps", "cfg", "seed", "scheduler", "window", "overlap", "placement", "resolution",
              defaults={"steps": steps, "resolution": resolution})
    model = parser.add_argument_group("model")
    add_flags(model, "device", "precision", "compile", "windows_per_batch")
    add_flag(parser, "comparison", metavar="PATH")


def add_animate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "animate", help="animate a portrait with a driving video",
        description="Animate SOURCE (a portrait image) with the head pose and expressions of DRIVING "
                    "(mp4/webm/gif or a folder of frames) and write the result at the driving video's frame rate. "
                    "Every argument and path is checked before the model is loaded; outputs are written to a "
                    "temporary file and renamed, and never over an input.")
    add_flags(parser, "checkpoint", "source", "driving", "output")
    _add_run_flags(parser, steps=30, resolution=512)
    driving = parser.add_argument_group("driving video")
    add_flag(driving, "best_frame", metavar="{auto,off,N}")
    add_flags(driving, "missing_face", "fit", "max_frames", "frame_step", "landmarks_model")
    extra = parser.add_argument_group("extras")
    add_flags(extra, "lora_file", "lora_strength")
    add_flag(extra, "extra_references", action="append", metavar="IMAGE")
    add_flags(extra, "init_video", "strength", "attention", "text_num_heads")
    parser.set_defaults(func=run_animate)


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline with nothing downloaded (a tiny random model)",
        description="Builds a tiny random X-Portrait model in the real key layout, makes a driving clip from "
                    "scikit-image's astronaut photo by known head motions, runs landmarks, alignment, local "
                    "patches, sampling and decoding, and writes the video. A random model draws noise: this "
                    "proves the installation, not the quality.\n\n" + REAL_CHECKPOINT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, "demo_output", "demo_frames", "demo_fps", "demo_landmarks")
    _add_run_flags(parser, steps=DEMO_STEPS, resolution=DEMO_RESOLUTION)
    parser.set_defaults(func=run_demo)


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a .th checkpoint to .safetensors (verified round trip)",
        description="Reads the checkpoint safely (weights only), writes .safetensors, reads it back and checks "
                    "every tensor. .safetensors loads faster, memory-mapped, and cannot carry code. The destination "
                    "is checked first and written atomically; the source is never modified.")
    add_flags(parser, "convert_source", "convert_destination", "fp16", "text_num_heads")
    parser.set_defaults(func=run_convert)


# ------------------------------------------------------------------------------------------ checks before work
KNOWN_DEVICE_TYPES = ("cpu", "cuda", "mps")


def _resolve_device(device: str) -> Any:
    """The torch device to run on, or CommandLineError saying why the asked device cannot be used."""
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
    return chosen


def _sampler_options(args: argparse.Namespace, start: StartMode = "reference", strength: float = 1.0) -> Any:
    """The sampling flags as the library's SamplerOptions (which checks them: OptionError naming the option)."""
    from ..sampling.sampler import SamplerOptions

    return SamplerOptions(steps=args.steps, cfg=args.cfg, seed=args.seed, scheduler=args.scheduler,
                          window=args.window, overlap=args.overlap, placement=args.placement, start=start,
                          strength=strength, windows_per_batch=args.windows_per_batch)


def _best_frame(text: str) -> str | int:
    """--best-frame as the library takes it: a frame number, "off" (also "none", its older spelling) or the word."""
    if text.lower() == "none":
        return "off"
    return int(text) if text.strip().lstrip("-").isdigit() else text


def _check_inputs_exist(inputs: dict[str, Path | None]) -> None:
    """Every input file named on the command line exists and is a file or folder (reading a named pipe or a device
    would block), checked together before anything is read."""
    for what, path in inputs.items():
        if path is not None and not path.exists():
            raise CommandLineError(f"{what} '{path}' does not exist; check the path (relative paths start from "
                                   f"{Path.cwd()})")
        if path is not None and not path.is_file() and not path.is_dir():
            raise CommandLineError(f"{what} '{path}' is not a regular file (a named pipe, socket or device?); give "
                                   "a file")


def _check_single_images(images: dict[str, Path | None]) -> None:
    """A folder where one image is expected would silently stand for its first image: refused."""
    for what, path in images.items():
        if path is not None and path.is_dir():
            raise CommandLineError(f"{what} '{path}' is a folder; pick one image file in it (e.g. "
                                   f"'{path / 'portrait.png'}')")


def _check_driving_frames(args: argparse.Namespace, frames: int, fps: float) -> None:
    """What --frame-step left of the driving video: more than one frame, at a rate a video can store."""
    from ..media.video_io import VideoWriteError, check_frame_rate

    if args.frame_step > 1 and frames < 2:
        raise CommandLineError(f"--frame-step {args.frame_step} leaves {frames} frame of the driving video; an "
                               "animation needs several: use a smaller --frame-step")
    try:
        check_frame_rate(fps, "for the result")
    except VideoWriteError as error:
        raise CommandLineError(f"--frame-step {args.frame_step}: {error} Use a smaller --frame-step."
                               if args.frame_step > 1 else f"driving video: {error}") from error


def _check_outputs(args: argparse.Namespace, output_option: str, inputs: dict[str, Path | None]) -> None:
    """The output (the option `output_option`) and the comparison can be written, and writing them destroys no input
    and not each other."""
    from ..media.safe_output import check_output_path

    output, name = getattr(args, output_option), spell(output_option)
    check_output_path(output, name, VIDEO_OUTPUT_SUFFIXES, inputs)
    if args.comparison:
        check_output_path(args.comparison, spell("comparison"), VIDEO_OUTPUT_SUFFIXES, {**inputs, name: output})


def _animate_inputs(args: argparse.Namespace) -> dict[str, Path | None]:
    named = {"checkpoint": args.checkpoint, "source image": args.source, "driving video": args.driving,
             spell("init_video"): args.init_video, spell("lora_file"): args.lora_file,
             spell("landmarks_model"): args.landmarks_model}
    named.update({f"{spell('extra_references')} #{number}": path
                  for number, path in enumerate(args.extra_references or [], start=1)})
    return named


# ----------------------------------------------------------------------------------------------------- outputs
def _write_outputs(args: argparse.Namespace, output: Path, animation: Any, fps: float) -> None:
    from ..media.image_fit import images_of_hints
    from ..media.video_io import side_by_side, write_video

    write_video(output, animation.frames, fps)
    print(f"wrote {output} ({animation.frames.shape[0]} frames, "
          f"{animation.frames.shape[2]}x{animation.frames.shape[1]}, {fps:g} fps)")
    if args.comparison:
        controls = animation.controls
        panels = [images_of_hints(controls.aligned.pose_hints), images_of_hints(controls.patches.local_hints),
                  animation.frames]
        write_video(args.comparison, side_by_side(panels), fps)
        print(f"wrote {args.comparison} (driving | local patches | result)")


def _report(animation: Any) -> None:
    aligned, patches = animation.controls.aligned, animation.controls.patches
    counts = ", ".join(f"{net} {n}" for net, n in animation.result.evaluation_counts.items())
    print(f"best frame: {aligned.best_frame if aligned.aligned else 'none (not aligned)'}; "
          f"frames without a face: {patches.frames_without_face}; network evaluations (frames): {counts}")


def _reported(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The command, with the library's errors for people printed as `error: <message>` (options spelled as flags)
    and exit status 2 instead of a traceback."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from ..controls.landmarks import LandmarkModelNotFoundError

        try:
            with _stop_signals():
                return command(args)
        except Terminated:
            print("terminated (SIGTERM): stopped; no file was left half-written", file=sys.stderr)
            return EXIT_TERMINATED
        except OptionError as error:
            print(f"error: {error.render(spell)}", file=sys.stderr)
        except (ValueError, LandmarkModelNotFoundError, ImportError) as error:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C (temporary files removed) and reported with its own exit status."""


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the command by an exception, so temporary files are removed on the way out; after the
    first, both are ignored (until the process ends): a second Ctrl-C right after the first would otherwise break
    into that cleanup or into finalizers with a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received = []

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if not received:  # after a signal they stay ignored until the process ends
            for number, handler in previous.items():
                signal.signal(number, handler)


# ---------------------------------------------------------------------------------------------------- commands
@_reported
def run_animate(args: argparse.Namespace) -> int:
    from ..controls.landmarks import DlibLandmarkProvider
    from ..media.image_fit import Framing
    from ..media.video_io import read_video
    from ..model.checkpoint import check_checkpoint_file, load_model
    from ..model.compilation import check_compile_mode, compile_blocks
    from ..model.lora import LoraChoice, read_lora
    from ..pipeline import AnimationInputs, ControlOptions, animate, prepare_controls
    from ..sampling.sampler import SamplerHooks

    # Everything that can be known without reading the inputs, then the inputs, then the model: the cheap first.
    sampling = _sampler_options(args, "init_video" if args.init_video else "reference", args.strength)
    controls = ControlOptions(Framing(args.resolution, args.fit), _best_frame(args.best_frame), args.missing_face)
    device = _resolve_device(args.device)
    check_compile_mode(args.compile, device)
    loras = [LoraChoice(str(args.lora_file), args.lora_strength)] if args.lora_file else []
    inputs = _animate_inputs(args)
    _check_inputs_exist(inputs)
    _check_single_images({"source image": args.source, **{f"{spell('extra_references')} #{number}": path
                          for number, path in enumerate(args.extra_references or [], start=1)}})
    _check_outputs(args, "output", inputs)
    check_checkpoint_file(args.checkpoint)  # a file that is no checkpoint: before any work on the videos
    for lora in loras:
        read_lora(lora.path)
    source = read_video(args.source, max_frames=1, what="source image").frames
    clip = read_video(args.driving, max_frames=args.max_frames, frame_step=args.frame_step, what="driving video")
    frames = clip.frames.shape[0]
    _check_driving_frames(args, frames, clip.fps)
    extra = [read_video(path, max_frames=1, what="extra reference").frames for path in args.extra_references or []]
    init = None
    if args.init_video:
        init = read_video(args.init_video, max_frames=frames * args.frame_step, frame_step=args.frame_step,
                          what="init video").frames
        if init.shape[0] != frames:
            raise CommandLineError(f"--init-video has {init.shape[0]} frames but the driving video {frames} (after "
                                   "--max-frames/--frame-step); give one init frame per driving frame")
    sampling.check_video(frames)
    provider = DlibLandmarkProvider(model_path=args.landmarks_model)
    prepared = prepare_controls(clip.frames, source, provider, controls)  # a source without a face: before loading
    model, _ = load_model(args.checkpoint, device=device, precision=args.precision, attention_backend=args.attention,
                          text_num_heads=args.text_num_heads)
    if args.compile == "compile_blocks":
        compile_blocks(model)
    with ProgressLine(sampling.steps_run) as progress:
        animation = animate(model, AnimationInputs(source, clip.frames, extra, init), provider, controls=controls,
                            sampling=sampling, loras=loras, compile_mode=args.compile,
                            hooks=SamplerHooks(on_window=progress.on_window), prepared=prepared)
    _report(animation)
    _write_outputs(args, args.output, animation, clip.fps)
    return EXIT_OK


def _demo_provider(choice: str, clip: Any) -> tuple[Any, str, PatchLandmarks]:
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
    from ..media.image_fit import Framing
    from ..media.video_io import check_frame_rate
    from ..model.compilation import check_compile_mode, compile_blocks
    from ..model.tiny_model import build_random_model
    from ..model.xportrait_model import precision_plan, resolved_precision
    from ..pipeline import AnimationInputs, ControlOptions, animate
    from ..sampling.sampler import SamplerHooks
    from .demo_clip import head_motion_clip

    started = time.monotonic()
    sampling = _sampler_options(args)
    sampling.check_video(args.demo_frames)
    try:
        check_frame_rate(args.demo_fps, "for the demo")
    except ValueError as error:
        raise CommandLineError(f"{spell('demo_fps')}: {error}") from error
    framing = Framing(args.resolution)
    if args.resolution < DEMO_MIN_RESOLUTION:
        raise CommandLineError(f"--resolution: the demo's tiny model needs {DEMO_MIN_RESOLUTION} px or more, "
                               f"got {args.resolution}")
    device = _resolve_device(args.device)
    check_compile_mode(args.compile, device)
    _check_outputs(args, "demo_output", {})
    clip = head_motion_clip(args.demo_frames)
    provider, provider_name, patch_landmarks = _demo_provider(args.demo_landmarks, clip)
    plan = precision_plan(args.precision, device)
    print(f"demo: {args.demo_frames} frames at {args.resolution} px, landmarks from {provider_name}, "
          f"tiny random model on {device} ({resolved_precision(args.precision, device)})")
    model = build_random_model(seed=args.seed, ops=plan.torch_layers())
    model.apply_precision_plan(plan)
    model.to(device)
    if args.compile == "compile_blocks":
        compile_blocks(model)
    with ProgressLine(sampling.steps_run) as progress:
        animation = animate(model, AnimationInputs(clip.source, clip.driving), provider,
                            controls=ControlOptions(framing, patch_landmarks=patch_landmarks), sampling=sampling,
                            compile_mode=args.compile, hooks=SamplerHooks(on_window=progress.on_window))
    _report(animation)
    _write_outputs(args, args.demo_output, animation, args.demo_fps)
    print(f"done in {time.monotonic() - started:.0f} s. This model is random, so the video shows noise: the "
          f"pipeline works.\n{REAL_CHECKPOINT_HELP}")
    return EXIT_OK


@_reported
def run_convert(args: argparse.Namespace) -> int:
    from ..model.checkpoint_convert import convert_to_safetensors

    counts = convert_to_safetensors(args.convert_source, args.convert_destination, fp16=args.fp16,
                                    text_num_heads=args.text_num_heads or None)
    print(f"wrote {args.convert_destination}: {counts['tensors']} tensors ({counts['cast_to_fp16']} cast to fp16), "
          "read back and verified")
    return EXIT_OK
