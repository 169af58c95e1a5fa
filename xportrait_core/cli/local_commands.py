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

from ..options import (
    BEST_FRAME_ALIASES,
    BEST_FRAME_OFF,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_TERMINATED,
    VIDEO_OUTPUT_SUFFIXES,
    OptionError,
    StartMode,
    check_face_choice,
)
from .flags import add_flag, add_flags, exit_statuses, spell
from .requirements import MissingRequirementsError, require_packages

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
    """The sampler's progress on stderr: step and window, elapsed time. In a terminal one line rewrites itself (`\r`);
    otherwise (a log file, a pipe) each update is a line of its own, since `\r` would run them together there. A
    context manager: the line is ended however the block ends, so a following message starts on a line of its own.

    total_steps: the steps the scheduler really runs (the original's DDIM runs 31 for 30 requested)."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.started = time.monotonic()
        self.shown = False
        self.rewrite = sys.stderr.isatty()

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.shown and self.rewrite:
            print(file=sys.stderr)

    def on_window(self, step: int, window: int, windows: int) -> None:
        elapsed = time.monotonic() - self.started
        self.shown = True
        line = f"sampling: step {step + 1}/{self.total_steps}, window {window + 1}/{windows}, {elapsed:.0f} s"
        # One write per update, the line's end included: a Ctrl-C between two writes would leave the next message
        # on the progress line.
        print(f"\r{line}" if self.rewrite else f"{line}\n", end="", file=sys.stderr, flush=True)


def _add_sampling_flags(parser: argparse.ArgumentParser, steps: int, resolution: int) -> None:
    sampling = parser.add_argument_group("sampling")
    add_flags(sampling, "steps", "cfg", "seed", "scheduler", "window", "overlap", "placement", "resolution",
              defaults={"steps": steps, "resolution": resolution})


def _add_device_flags(parser: argparse.ArgumentParser, *model_flags: str) -> None:
    """Where and how the model runs: the device, its threads, the precision and the faster paths, and `model_flags`
    (the checkpoint's own, for animate)."""
    device = parser.add_argument_group("device and model")
    add_flags(device, "device", "threads", "precision", "attention", "compile", "windows_per_batch", *model_flags)


def add_animate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "animate", help="animate a portrait with a driving video",
        description="Animate SOURCE (a portrait image) with the head pose and expressions of DRIVING "
                    "(mp4/webm/gif or a folder of frames) and write the result at the driving video's frame rate. "
                    "Every argument and path is checked before the model is loaded; outputs are written to a "
                    "temporary file and renamed, and never over an input.",
        epilog=exit_statuses())
    add_flags(parser, "checkpoint", "source", "driving")
    output = parser.add_argument_group("output")
    add_flag(output, "output")
    add_flag(output, "comparison", metavar="PATH")
    _add_sampling_flags(parser, steps=30, resolution=512)
    driving = parser.add_argument_group("driving video")
    add_flag(driving, "best_frame", metavar="{auto,off,N}")
    add_flags(driving, "missing_face", "fit", "max_frames", "frame_step", "landmarks_model", "driving_crop",
              "track_smoothing")
    picture = parser.add_argument_group("the face in a full picture (docs/face_framing.md)")
    add_flag(picture, "face", metavar="{largest,N,X,Y}", action=_GivenFace)
    add_flags(picture, "face_margin", "paste_back")
    extra = parser.add_argument_group("extras")
    add_flags(extra, "lora_file", "lora_strength")
    add_flag(extra, "extra_references", action="append", metavar="IMAGE")
    add_flags(extra, "init_video", "strength")
    _add_device_flags(parser, "text_num_heads")
    parser.set_defaults(func=run_animate)


class _GivenFace(argparse._StoreAction):
    """--face: stores the value and notes that it was given (a face is then cropped even without --paste-back)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        namespace.face_given = True


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline with nothing downloaded (a tiny random model)",
        description="Builds a tiny random X-Portrait model in the real key layout, makes a driving clip from "
                    "scikit-image's astronaut photo by known head motions, runs landmarks, alignment, local "
                    "patches, sampling and decoding, and writes the video (by default xportrait_demo.mp4 in the "
                    "current folder). A random model draws noise: this proves the installation, not the "
                    "quality.\n\n" + REAL_CHECKPOINT_HELP,
        epilog=exit_statuses())
    clip = parser.add_argument_group("demo clip")
    add_flags(clip, "demo_frames", "demo_landmarks")
    output = parser.add_argument_group("output")
    add_flags(output, "demo_output", "demo_fps")
    add_flag(output, "comparison", metavar="PATH")
    _add_sampling_flags(parser, steps=DEMO_STEPS, resolution=DEMO_RESOLUTION)
    _add_device_flags(parser)
    parser.set_defaults(func=run_demo)


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a .th checkpoint to .safetensors (verified round trip)",
        description="Reads the checkpoint safely (weights only), writes .safetensors, reads it back and checks "
                    "every tensor. .safetensors loads faster, memory-mapped, and cannot carry code. The destination "
                    "is checked first and written atomically; the source is never modified.",
        epilog=exit_statuses())
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
    """--best-frame as the library takes it: a frame number, or the word (an alias such as "none", the command
    line's older word for "off", as the word it stands for)."""
    if text.strip().lstrip("-").isdigit():
        return int(text)
    return BEST_FRAME_ALIASES.get(text.lower(), text)


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
def _write_outputs(args: argparse.Namespace, output: Path | None, animation: Any, fps: float) -> None:
    """The animation (unless None: written already) and the comparison when asked."""
    from ..media.image_fit import images_of_hints
    from ..media.video_io import side_by_side, write_video

    if output is not None:
        write_video(output, animation.frames, fps)
        print(f"wrote {output} ({animation.frames.shape[0]} frames, "
              f"{animation.frames.shape[2]}x{animation.frames.shape[1]}, {fps:g} fps)")
    if args.comparison:
        controls = animation.controls
        panels = [images_of_hints(controls.aligned.pose_hints), images_of_hints(controls.patches.local_hints),
                  animation.frames]
        write_video(args.comparison, side_by_side(panels), fps)
        print(f"wrote {args.comparison} (driving | local patches | result)")


def _write_pasted(output: Path, animation: Any, picture: Any, record: Any, fps: float) -> None:
    """The animated crops pasted back into the picture, encoded a few frames at a time (never the whole clip at the
    picture's resolution at once)."""
    import torch

    from ..media.paste_back import pasted_chunks
    from ..media.video_stream import write_video_chunks

    picture_uint8 = (picture[0] * 255).round().to(torch.uint8)
    frames, width, height = write_video_chunks(output, pasted_chunks(animation.frames, picture_uint8, record,
                                                                     as_uint8=True), fps)
    padded = "" if (width, height) == record.picture_size else \
        f" (the picture is {record.picture_size[0]}x{record.picture_size[1]}: H.264 needs even sizes, so its last " \
        "column or row was repeated)"
    print(f"wrote {output} ({frames} frames pasted back into the picture, {width}x{height}, {fps:g} fps){padded}")


def _report(animation: Any) -> None:
    aligned, patches = animation.controls.aligned, animation.controls.patches
    counts = ", ".join(f"{net} {n}" for net, n in animation.result.evaluation_counts.items())
    print(f"best frame: {aligned.best_frame if aligned.aligned else BEST_FRAME_OFF + ' (not aligned)'}; "
          f"frames without a face: {patches.frames_without_face}; network evaluations (frames): {counts}")
    if aligned.track is not None and aligned.track.frames_without_face:
        print(f"face tracking: no face in driving frames {aligned.track.frames_without_face} (their crop follows "
              "the nearest frames)")


def _cost(started: tuple[float, float]) -> str:
    """Wall and CPU time since `started` (time.monotonic(), time.process_time()): the CPU time counts every thread,
    so it shows what a run costs on a shared machine, where wall time depends on the other work."""
    import torch

    wall, cpu = time.monotonic() - started[0], time.process_time() - started[1]
    threads = torch.get_num_threads()
    return f"{wall:.0f} s ({cpu:.0f} CPU-seconds, {threads} thread{'s' if threads > 1 else ''})"


def _reported(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The command, with the library's errors for people printed as `error: <message>` (options spelled as flags)
    and exit status 2 instead of a traceback. The packages the command needs are looked up first: a missing one is
    one line saying how to install it."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            require_packages(landmarks=getattr(args, "command", None) == "animate")
        except MissingRequirementsError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        from ..controls.landmarks import LandmarkModelNotFoundError
        from .threads import torch_threads

        try:
            with torch_threads(getattr(args, "threads", None)), _stop_signals():
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
    from ..media.video_stream import STREAM_SUFFIXES
    from ..model.checkpoint import check_checkpoint_file, load_model
    from ..model.compilation import check_compile_mode, compile_blocks
    from ..model.lora import LoraChoice, read_lora
    from ..pipeline import AnimationInputs, ControlOptions, animate, crop_face, prepare_controls, tracking_for
    from ..sampling.sampler import SamplerHooks

    started = time.monotonic(), time.process_time()
    # Everything that can be known without reading the inputs, then the inputs, then the model: the cheap first.
    sampling = _sampler_options(args, "init_video" if args.init_video else "reference", args.strength)
    controls = ControlOptions(Framing(args.resolution, args.fit), _best_frame(args.best_frame), args.missing_face,
                              tracking=tracking_for(args.driving_crop, args.face_margin, args.track_smoothing))
    full_picture = args.paste_back or getattr(args, "face_given", False)
    face = check_face_choice(args.face)
    if args.paste_back and args.output.suffix.lower() not in STREAM_SUFFIXES:
        raise CommandLineError(f"output '{args.output}': --paste-back writes the picture's size chunk by chunk, as "
                               f"{' or '.join(STREAM_SUFFIXES)}; give such a name")
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
    picture, face_crop = source, None
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
    if full_picture:  # the face is found, chosen and cut out before any other work
        face_crop = crop_face(picture, provider, face, args.face_margin, args.resolution, option="source")
        source = face_crop.crop
        print(f"face {face_crop.chosen} of {len(face_crop.faces)} found (numbered from the left), cropped "
              f"{face_crop.record.box.side} px square at ({face_crop.record.box.left}, {face_crop.record.box.top})")
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
    if face_crop is not None and args.paste_back:
        _write_pasted(args.output, animation, picture, face_crop.record, clip.fps)
        args.output = None  # written; the comparison still follows
    _write_outputs(args, args.output, animation, clip.fps)
    print(f"done in {_cost(started)}")
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

    started = time.monotonic(), time.process_time()
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
    model.set_attention_backend(args.attention)
    model.to(device)
    if args.compile == "compile_blocks":
        compile_blocks(model)
    with ProgressLine(sampling.steps_run) as progress:
        animation = animate(model, AnimationInputs(clip.source, clip.driving), provider,
                            controls=ControlOptions(framing, patch_landmarks=patch_landmarks), sampling=sampling,
                            compile_mode=args.compile, hooks=SamplerHooks(on_window=progress.on_window))
    _report(animation)
    _write_outputs(args, args.demo_output, animation, args.demo_fps)
    print(f"done in {_cost(started)}. This model is random, so the video shows noise: the "
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
