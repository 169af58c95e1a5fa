"""Reading X-Portrait checkpoints safely, checking what a file is, loading each network strictly, and
converting ``.th`` to ``.safetensors``.

Accepted: the original ``model_state-415001.th`` (a pickled dict holding ``state_dict``, or a bare state
dict) and ``.safetensors``. Pickles are read only with ``torch.load(weights_only=True)``: a pickle that
tries to build arbitrary objects or run code is refused, never executed.
"""
from __future__ import annotations

import logging
import os
import pickle
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..media.safe_output import atomic_output
from ..networks.config import (
    APPEARANCE_PREFIX,
    CLIP_HEAD_WIDTH,
    LOCAL_PREFIX,
    POSE_PREFIX,
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    XPortraitConfig,
)
from ..networks.layer_ops import LayerOps
from ..options import AttentionChoice, OptionError, Precision, check
from .checkpoint_files import unreadable_reason
from .finite_weights import describe_non_finite, non_finite_tensors
from .xportrait_model import XPortraitModel, ldm_schedule_buffers, precision_plan

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".th", ".pt", ".pth", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
REQUIRED_PREFIXES = (UNET_PREFIX, APPEARANCE_PREFIX, POSE_PREFIX, LOCAL_PREFIX, VAE_PREFIX)
OPTIONAL_PREFIXES = (TEXT_PREFIX,)
# newer transformers no longer save CLIP's position_ids; either way the table is arange(77)
OPTIONAL_KEYS = (f"{TEXT_PREFIX}transformer.text_model.embeddings.position_ids",)
SCHEDULE_KEYS = tuple(ldm_schedule_buffers())
SCHEDULE_TOLERANCE = 1e-6
TEXT_HEADS_METADATA = "xportrait.text_num_heads"  # head count of a text encoder narrower than CLIP's
TEXT_EMBEDDING_KEY = f"{TEXT_PREFIX}transformer.text_model.embeddings.token_embedding.weight"  # (vocab, width)
FP16_MAX = torch.finfo(torch.float16).max  # 65504: larger weights become inf when stored in fp16
KEYS_SHOWN = 8  # how many key names an error lists before "... and N more"
REAL_CHECKPOINT = "model_state-415001.th"


class CheckpointError(OptionError):
    """A checkpoint that cannot be used, with what it is and what to do."""

    def __init__(self, detail: str, option: str = "checkpoint") -> None:
        super().__init__(option, detail, leads=False)


class TextHeadsError(CheckpointError):
    """The text encoder's head count cannot be derived from the file, or the one given does not fit it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, "text_num_heads")


@dataclass
class LoadReport:
    """What loading found, per component prefix."""

    path: str
    components: dict[str, int] = field(default_factory=dict)       # prefix -> tensors loaded
    ignored_keys: list[str] = field(default_factory=list)           # outside every known prefix
    text_encoder: bool = True
    config: XPortraitConfig | None = None


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:KEYS_SHOWN])
    return shown + (f" ... and {len(keys) - KEYS_SHOWN} more" if len(keys) > KEYS_SHOWN else "")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file (no model is built). ``.th``-style files: a dict holding
    ``state_dict`` or a bare state dict, via ``torch.load(weights_only=True)`` (memory-mapped when the
    file allows it)."""
    path = Path(path)
    check_checkpoint_file(path)
    size = path.stat().st_size
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"checkpoint {path.name!r} ({size} bytes) could not be read as "
                                  f"safetensors ({err}); it looks truncated or corrupt: download or "
                                  "convert it again") from err
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise CheckpointError(f"checkpoint {path.name!r}: unknown file type {path.suffix!r}; expected "
                              f"{SAFETENSORS_SUFFIX} or one of {PICKLE_SUFFIXES}")
    loaded = _torch_load_weights_only(path, size)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path.name!r} holds no state dict of tensors "
                              f"(found {type(state).__name__}); it is not a model checkpoint")
    return state


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """CheckpointError unless `path` is a file that can be a checkpoint, judged from its first bytes, zip directory or
    safetensors header (cheap: made before any work on the videos)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; give the checkpoint file in it "
                              f"({REAL_CHECKPOINT} or a converted .safetensors)")
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise CheckpointError(f"checkpoint {str(path)!r} {what}; put {REAL_CHECKPOINT} (or a converted "
                              ".safetensors) there, e.g. ComfyUI/models/xportrait/")
    reason = unreadable_reason(path)
    if reason:
        raise CheckpointError(f"checkpoint {path.name!r} {reason}")


def _torch_load_weights_only(path: Path, size: int) -> object:
    # torch's own messages advise weights_only=False (which would run the file's code): never shown, only what the
    # file is and what to do.
    damaged = (f"checkpoint {path.name!r} ({size} bytes) could not be read as a PyTorch checkpoint: it looks "
               "truncated or corrupt; download it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol N": the file is refused below anyway
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                return torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # no object construction asked: not a pickle at all
            raise CheckpointError(damaged) from err
        culprit = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
        raise CheckpointError(
            f"refused to load {path.name!r}: its pickle asks to build Python objects other than tensors "
            f"(it could run code), so it was NOT executed. {culprit} Use the official "
            f"{REAL_CHECKPOINT} or a .safetensors file.") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError, IndexError, TypeError,
            AttributeError, struct.error) as err:
        raise CheckpointError(damaged) from err


def identify_foreign_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """If the tensors are clearly some other kind of model, say which; None when it may be X-Portrait."""
    keys = list(state_dict)
    if not keys:
        return "an empty checkpoint (no tensors)"
    if any(".motion_modules." in k for k in keys) and not any(k.startswith(UNET_PREFIX) for k in keys):
        return ("an AnimateDiff motion module (keys like 'down_blocks.0.motion_modules...'); X-Portrait's "
                "checkpoint already contains its own motion modules")
    if any(k.startswith(("lora_unet_", "lora_te_")) or ".lora_down." in k or ".lora_A." in k for k in keys):
        return "a LoRA file; apply it with the sampler's LoRA option instead"
    if any(k.startswith("control_model.") for k in keys):
        return "a standalone ControlNet"
    has_unet = any(k.startswith(UNET_PREFIX) for k in keys)
    if has_unet and not any(k.startswith((APPEARANCE_PREFIX, POSE_PREFIX)) for k in keys):
        return ("a plain Stable Diffusion 1.5 checkpoint (it has the UNet, VAE and text encoder but no "
                "appearance net, ControlNets or motion modules)")
    if any(k.startswith(("down_blocks.", "unet.down_blocks.")) for k in keys) and not has_unet:
        return "a diffusers-format UNet"
    return None


def check_state_dict(state_dict: Mapping[str, torch.Tensor], name: str,
                     reference: Mapping[str, torch.Tensor]) -> LoadReport:
    """Compare a checkpoint with the keys/shapes our model expects, component by component, and raise
    one CheckpointError listing every problem. ``reference`` is our model's state dict (shapes)."""
    report = LoadReport(path=name)
    problems = []
    text_present = any(k.startswith(TEXT_PREFIX) for k in state_dict)
    report.text_encoder = text_present
    for prefix in REQUIRED_PREFIXES + OPTIONAL_PREFIXES:
        expected = {k for k in reference if k.startswith(prefix)}
        found = {k for k in state_dict if k.startswith(prefix)}
        if prefix in OPTIONAL_PREFIXES and not found:
            continue
        missing = sorted(expected - found - set(OPTIONAL_KEYS))
        unexpected = sorted(found - expected)
        mismatched = sorted(k for k in expected & found
                            if tuple(state_dict[k].shape) != tuple(reference[k].shape))
        if missing:
            problems.append(f"{prefix}* is missing {len(missing)} of {len(expected)} tensors: {_listing(missing)}")
        if unexpected:
            problems.append(f"{prefix}* has {len(unexpected)} unexpected tensors: {_listing(unexpected)}")
        if mismatched:
            shown = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(reference[k].shape)})"
                     for k in mismatched]
            problems.append(f"{prefix}* has {len(mismatched)} tensors of the wrong shape: {_listing(shown)}")
        report.components[prefix] = len(found)
    if problems:
        raise CheckpointError(f"{name!r} is not a complete X-Portrait checkpoint (truncated, another "
                              "version, or another model):\n- " + "\n- ".join(problems))
    known = REQUIRED_PREFIXES + OPTIONAL_PREFIXES
    report.ignored_keys = sorted(k for k in state_dict
                                 if not k.startswith(known) and k not in SCHEDULE_KEYS)
    _check_schedule(state_dict, name)
    return report


def _check_schedule(state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """The sampler uses our SD1.5 schedule; a checkpoint trained on another one would silently go wrong."""
    ours = ldm_schedule_buffers()
    for key in ("betas", "alphas_cumprod"):
        if key in state_dict and not torch.allclose(state_dict[key].float(), ours[key],
                                                    atol=SCHEDULE_TOLERANCE, rtol=0):
            raise CheckpointError(f"{name!r} was trained with another noise schedule ({key} differs from "
                                  "SD1.5's linear 0.00085..0.012 schedule); it cannot be sampled here")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", precision: Precision = "fp32",
               attention_backend: AttentionChoice = "auto", text_num_heads: int | None = None,
               ops: LayerOps | None = None, compute_device: str | torch.device | None = None
               ) -> tuple[XPortraitModel, LoadReport]:
    """Read, check and load an X-Portrait checkpoint. The model is built on the meta device and the
    checkpoint's tensors are assigned in place, so the weights are in memory once. ``device``: where the weights
    are stored; ``compute_device`` (default ``device``): where they will compute, which the precision plan is made
    for. ``precision``: auto, fp32, fp16, bf16 or fp8_e4m3fn (see `precision_plan`). ``text_num_heads``: the text
    encoder's head count, None or 0 to read it from the file. ``ops``: the layer classes (default torch layers, or
    casting layers when the weights are stored in fp8). OptionError on the option or the file at fault."""
    check("precision", precision)
    check("attention", attention_backend)
    if text_num_heads:  # 0 or None: from the file
        check("text_num_heads", text_num_heads)
    state_dict = read_state_dict(path)
    if not text_num_heads:
        text_num_heads = _text_heads_from_metadata(Path(path))
    return model_from_state_dict(state_dict, Path(path).name, device, precision, attention_backend,
                                 text_num_heads, ops, compute_device)


def model_from_state_dict(state_dict: dict[str, torch.Tensor], name: str = "state dict",
                          device: str | torch.device = "cpu", precision: Precision = "fp32",
                          attention_backend: AttentionChoice = "auto", text_num_heads: int | None = None,
                          ops: LayerOps | None = None, compute_device: str | torch.device | None = None
                          ) -> tuple[XPortraitModel, LoadReport]:
    foreign = identify_foreign_checkpoint(state_dict)
    if foreign:
        raise CheckpointError(f"{name!r} is {foreign}, not an X-Portrait checkpoint; X-Portrait needs "
                              f"{REAL_CHECKPOINT} (or its .safetensors conversion)")
    check_text_heads(state_dict, name, text_num_heads)
    try:
        config = XPortraitConfig.from_state_dict(state_dict, text_num_heads=text_num_heads)
    except KeyError as err:
        raise CheckpointError(f"{name!r} is not an X-Portrait checkpoint: it lacks {err.args[0]!r}. "
                              f"X-Portrait needs {REAL_CHECKPOINT} (or its .safetensors conversion)") from err
    except ValueError as err:
        raise CheckpointError(f"{name!r}: {err}") from err
    plan = precision_plan(precision, compute_device or device)
    with torch.device("meta"):
        model = XPortraitModel(config, ops or plan.torch_layers())
    report = check_state_dict(state_dict, name, model.state_dict())
    report.config = config
    check_finite(state_dict, name)
    if not report.text_encoder:
        model.cond_stage_model = None
    ignored = set(report.ignored_keys)
    taken = {k: v for k, v in state_dict.items() if k not in ignored}
    full = {**{k: v for k, v in ldm_schedule_buffers().items() if k not in taken}, **taken}
    position_ids = OPTIONAL_KEYS[0]
    if model.cond_stage_model is not None and position_ids not in full:
        full[position_ids] = torch.arange(model.cond_stage_model.config.max_positions)[None]
    model.load_state_dict(full, strict=True, assign=True)
    model.apply_precision_plan(plan)  # before the move: a GPU never holds the fp32 copy
    model.to(device)
    model.set_attention_backend(attention_backend)
    model.eval().requires_grad_(False)
    for prefix, count in report.components.items():
        log.info("loaded %s* (%d tensors)", prefix, count)
    if report.ignored_keys:
        log.warning("%s: ignored %d tensors outside the X-Portrait networks: %s", name,
                    len(report.ignored_keys), _listing(report.ignored_keys))
    return model, report


def check_text_heads(state_dict: Mapping[str, torch.Tensor], name: str, text_num_heads: int | None) -> None:
    """The text encoder's head count must be derivable (CLIP's 64-wide heads) or given, and divide its width."""
    embedding = state_dict.get(TEXT_EMBEDDING_KEY)
    if embedding is None:
        return
    width = int(embedding.shape[1])
    if text_num_heads is None:
        if width % CLIP_HEAD_WIDTH and width > 0:
            raise TextHeadsError(
                f"{name!r}: its text encoder is {width} wide, not a multiple of CLIP's {CLIP_HEAD_WIDTH}-wide "
                f"heads, and the file does not record its head count ('{TEXT_HEADS_METADATA}' metadata); give "
                f"the head count ({{text_num_heads=N}})")
        return
    if text_num_heads < 1 or width % text_num_heads:
        raise TextHeadsError(f"{name!r}: a head count of {text_num_heads} does not divide the text encoder's "
                             f"width {width}; give a divisor of {width} (the model's training configuration says "
                             "which)")


def check_finite(state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """Weights holding NaN or inf render black or noise frames without any error: refuse them, naming them."""
    damaged = non_finite_tensors(state_dict)
    if damaged:
        raise CheckpointError(f"{name!r} is damaged: {describe_non_finite(damaged, state_dict)}. A model with such "
                              "weights renders black or noise; download (or convert) the checkpoint again")


def _safetensors_metadata(path: Path) -> dict[str, str]:
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        return {}
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _text_heads_from_metadata(path: Path) -> int | None:
    value = _safetensors_metadata(path).get(TEXT_HEADS_METADATA)
    if not value:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise TextHeadsError(f"{path.name!r}: its metadata '{TEXT_HEADS_METADATA}' is {value!r}, not a head count "
                             "(a whole number >= 1); the file was written by another tool or damaged: give the head "
                             "count ({text_num_heads=N}) or convert the checkpoint again")
    return int(value)


def save_model_checkpoint(model: XPortraitModel, path: str | os.PathLike) -> None:
    """Write a model's state dict as ``.safetensors`` (used to make tiny test checkpoints), atomically."""
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "xportrait": "checkpoint"}
    if model.config.text is not None:
        metadata[TEXT_HEADS_METADATA] = str(model.config.text.num_heads)
    with atomic_output(path) as partial:
        save_file(tensors, str(partial), metadata=metadata)
