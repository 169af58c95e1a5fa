"""Merge SD1.5 LoRA files into the main UNet (LDM key names), with a handle to undo.

Accepted key layouts (the UNet part; text-encoder keys are skipped, X-Portrait only encodes the empty prompt):
- kohya / sd-scripts: `lora_unet_<diffusers path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`
  (also the same with an LDM path, `lora_unet_input_blocks_1_1_...`). LCM-LoRA for SD1.5 is in this layout and
  covers attention, feed-forward, proj_in/out, ResBlock convs (3x3 conv LoRA), time embedding, conv_in/out and
  the down/upsamplers.
- diffusers / PEFT: `unet.<diffusers path>.lora_A.weight` / `.lora_B.weight`, or `.lora.down.weight` /
  `.lora.up.weight`; `unet.` is optional.

Merge: W += strength * (up @ down) * (alpha / rank), rank = rows of down; without alpha the scale is 1. Conv
weights are flattened to (out, in * k * k) for the product and reshaped back, so linear LoRA on 1x1 convs (and the
reverse) merges too. The maths runs in float32 and the result is stored in the weight's dtype.

Only the main UNet should receive a LoRA (`model.unet`): the appearance net and ControlNets were trained against
the base weights. Merging is in place; `LoraPatch.undo()` restores the exact original tensors (kept on the CPU).
"""
from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..networks.unet_key_map import diffusers_to_ldm_unet_names
from ..options import check
from .finite_weights import describe_non_finite, non_finite_tensors

logger = logging.getLogger(__name__)

KOHYA_UNET_PREFIX = "lora_unet_"
TEXT_ENCODER_PREFIXES = ("lora_te", "text_encoder.", "text_encoder_2.", "te.")
UNMATCHED_SHOWN = 5  # how many unmatched keys a warning lists

# (suffix, role) for every supported layout; the layer name is what precedes the suffix.
SUFFIXES = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".alpha", "alpha"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
)


@dataclass(frozen=True)
class LoraLayer:
    """One low-rank update: down (rank, in[, k, k]), up (out, rank[, 1, 1]), alpha or None."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, weight_shape: torch.Size) -> torch.Tensor:
        """(up @ down) * alpha / rank, float32, reshaped to the weight's shape."""
        product = self.up.flatten(1).float() @ self.down.flatten(1).float()
        scale = 1.0 if self.alpha is None else self.alpha / self.rank
        return (product * scale).reshape(weight_shape)

    def fits(self, weight_shape: torch.Size) -> bool:
        return self.up.shape[0] * self.down.flatten(1).shape[1] == torch.Size(weight_shape).numel() and (
            self.up.shape[0] == weight_shape[0]
        )


@functools.lru_cache(maxsize=1)
def _layer_names() -> dict[str, str]:
    """Every accepted layer name (diffusers dotted, kohya underscored, LDM) -> LDM module name."""
    names: dict[str, str] = {}
    for diffusers_name, ldm_name in diffusers_to_ldm_unet_names().items():
        names[diffusers_name] = ldm_name
        names[KOHYA_UNET_PREFIX + diffusers_name.replace(".", "_")] = ldm_name
        names[KOHYA_UNET_PREFIX + ldm_name.replace(".", "_")] = ldm_name
        names[ldm_name] = ldm_name
    return names


def _split_key(key: str) -> tuple[str, str] | None:
    for suffix, role in SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def _ldm_name(layer: str) -> str | None:
    layer = re.sub(r"^(unet\.|model\.diffusion_model\.|diffusion_model\.)", "", layer)
    return _layer_names().get(layer)


@dataclass
class ParsedLora:
    """LDM module name -> layer; every key not used, with why."""

    layers: dict[str, LoraLayer]
    unmatched: dict[str, str]
    text_encoder_keys: list[str]


def parse_lora(state_dict: Mapping[str, torch.Tensor]) -> ParsedLora:
    """Group a LoRA file's tensors by UNet layer, named the LDM way."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    keys_of: dict[str, list[str]] = {}
    unmatched: dict[str, str] = {}
    text_keys: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(TEXT_ENCODER_PREFIXES):
            text_keys.append(key)
            continue
        split = _split_key(key)
        if split is None:
            unmatched[key] = "not a LoRA down/up/alpha tensor of a supported layout"
            continue
        layer, role = split
        ldm = _ldm_name(layer)
        if ldm is None:
            unmatched[key] = f"layer {layer!r} is not a layer of the SD1.5 UNet"
            continue
        parts.setdefault(ldm, {})[role] = tensor
        keys_of.setdefault(ldm, []).append(key)
    layers: dict[str, LoraLayer] = {}
    for ldm, roles in parts.items():
        if "down" not in roles or "up" not in roles:
            for key in keys_of[ldm]:
                unmatched[key] = "its layer lacks a down or an up matrix"
            continue
        alpha = float(roles["alpha"]) if "alpha" in roles else None
        layers[ldm] = LoraLayer(down=roles["down"], up=roles["up"], alpha=alpha)
    return ParsedLora(layers=layers, unmatched=unmatched, text_encoder_keys=text_keys)


class LoraFileError(ValueError):
    """A LoRA file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class LoraChoice:
    """One SD1.5 LoRA file to merge into the main UNet while sampling, at `strength`."""

    path: str
    strength: float = 1.0

    def __post_init__(self) -> None:
        check("lora_strength", self.strength)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def read_lora(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA file, checked before any merging: a readable .safetensors file holding finite values
    and at least one SD1.5 UNet LoRA layer. LoraFileError, naming the file, otherwise."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise LoraFileError(f"LoRA file '{path}' {problem}; give an SD1.5 LoRA .safetensors file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise LoraFileError(f"LoRA file '{path.name}' could not be read as .safetensors ({error}): it is truncated or "
                            "in another format; LoRAs are read from .safetensors files only") from error
    damaged = non_finite_tensors(tensors)
    if damaged:
        raise LoraFileError(f"LoRA file '{path.name}' is damaged: {describe_non_finite(damaged, tensors)}; download "
                            "it again")
    if not parse_lora(tensors).layers:
        shown = list(tensors)[:UNMATCHED_SHOWN]
        raise LoraFileError(f"'{path.name}' is not an SD1.5 LoRA: none of its {len(tensors)} tensors (e.g. {shown}) "
                            "is a LoRA down/up pair of an SD1.5 UNet layer (kohya lora_unet_..., diffusers/PEFT "
                            "unet....lora_A); pick an SD1.5 LoRA file")
    return tensors


def lora_targets(target_shapes: Mapping[str, torch.Size], lora_state_dict: Mapping[str, torch.Tensor],
                 prefix: str = "") -> dict[str, str]:
    """For a host that applies LoRAs as its own weight patches: the file's layer names (what precedes
    `.lora_down.weight`, `.lora_A.weight`...) -> the target weight names (``prefix`` + LDM name + `.weight`) of the
    layers `apply_lora` would merge (same key layouts, same shape check). ``target_shapes``: the UNet's weight
    shapes by LDM name. ValueError when no layer fits, as for a LoRA of another base model."""
    layers = parse_lora(lora_state_dict).layers
    targets: dict[str, str] = {}
    for key in lora_state_dict:
        split = _split_key(key)
        if split is None or key.startswith(TEXT_ENCODER_PREFIXES):
            continue
        file_layer = split[0]
        ldm = _ldm_name(file_layer)
        shape = target_shapes.get(f"{ldm}.weight")
        if ldm in layers and shape is not None and layers[ldm].fits(shape):
            targets[file_layer] = f"{prefix}{ldm}.weight"
    if not targets:
        shown = list(lora_state_dict)[:UNMATCHED_SHOWN]
        raise ValueError(f"no key of the LoRA matched the SD1.5 UNet ({len(lora_state_dict)} keys, e.g. {shown}); "
                         "X-Portrait takes SD1.5 LoRAs in kohya (lora_unet_...) or diffusers/PEFT (unet....lora_A) "
                         "layout")
    return targets


@dataclass
class LoraPatch:
    """Result of `apply_lora`: which layers changed, which keys were not used, and how to undo."""

    applied: list[str]
    unmatched: dict[str, str]
    text_encoder_keys: list[str]
    _weights: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    _originals: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def undo(self) -> None:
        """Restore every merged weight to its exact original value (once; later calls do nothing)."""
        with torch.no_grad():
            for name, original in self._originals.items():
                self._weights[name].copy_(original)
        self._originals.clear()


def apply_lora(
    target: torch.nn.Module | MutableMapping[str, torch.Tensor],
    lora_state_dict: Mapping[str, torch.Tensor],
    strength: float = 1.0,
    prefix: str = "",
) -> LoraPatch:
    """Merge a LoRA into `target` in place: the main UNet module, or a state dict with LDM names.

    prefix: what precedes the LDM names in the target (`""` for `model.unet`, `"model.diffusion_model."` for a
    full X-Portrait state dict). Logs a warning with the count of unused keys; raises ValueError when no key
    matches, as for a LoRA of another base model.
    """
    weights = target.state_dict() if isinstance(target, torch.nn.Module) else target
    parsed = parse_lora(lora_state_dict)
    unmatched = dict(parsed.unmatched)
    patch = LoraPatch(applied=[], unmatched=unmatched, text_encoder_keys=parsed.text_encoder_keys)
    with torch.no_grad():
        for ldm, layer in parsed.layers.items():
            name = f"{prefix}{ldm}.weight"
            weight = weights.get(name)
            if weight is None:
                unmatched[ldm] = f"the target has no {name}"
                continue
            if not layer.fits(weight.shape):
                unmatched[ldm] = (
                    f"shape: up {tuple(layer.up.shape)} @ down {tuple(layer.down.shape)} does not fit "
                    f"{name} {tuple(weight.shape)}"
                )
                continue
            patch._originals[name] = weight.detach().to("cpu", copy=True)
            patch._weights[name] = weight
            merged = weight.float() + strength * layer.delta(weight.shape).to(weight.device)
            weight.copy_(merged.to(weight.dtype))
            patch.applied.append(ldm)
    if not patch.applied:
        shown = list(lora_state_dict)[:UNMATCHED_SHOWN]
        raise ValueError(
            f"no key of the LoRA matched the SD1.5 UNet ({len(lora_state_dict)} keys, e.g. {shown}); "
            "X-Portrait takes SD1.5 LoRAs in kohya (lora_unet_...) or diffusers/PEFT (unet....lora_A) layout"
        )
    if unmatched:
        examples = "; ".join(f"{k}: {why}" for k, why in list(unmatched.items())[:UNMATCHED_SHOWN])
        logger.warning("LoRA: %d keys/layers not applied (%s)", len(unmatched), examples)
    if parsed.text_encoder_keys:
        logger.warning("LoRA: %d text-encoder keys skipped (X-Portrait encodes only the empty prompt)",
                       len(parsed.text_encoder_keys))
    return patch
