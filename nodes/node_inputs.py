"""The nodes' inputs, made from the option table (`xportrait_core.options`): each input's type, default, range or
choices and tooltip come from the option it sets, so the command line and the nodes cannot drift apart.

    INPUT_TYPES = lambda: node_inputs(required=("steps", "cfg"), optional=("positive",))

An option's `node_input` is the input's name; links become sockets of the ComfyUI type of what they carry; file
options become drop-downs of the files the node lists (`choices`). Imports no torch, so ComfyUI lists the nodes fast.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xportrait_core.options import OPTIONS, Option

from .types import CATEGORY, CROP_RECORD, LANDMARKS, LORA, MODEL, REFERENCE

# What a link carries (options.Option.carries) -> the ComfyUI type of its socket.
SOCKET_TYPES = {"image": "IMAGE", "images": "IMAGE", "model": MODEL, "vae": "VAE", "reference": REFERENCE,
                "conditioning": "CONDITIONING", "lora": LORA, "landmarks": LANDMARKS, "crop_record": CROP_RECORD,
                "mask": "MASK"}
WIDGET_TYPES = {"int": "INT", "float": "FLOAT", "bool": "BOOLEAN", "text": "STRING"}


def input_spec(option: Option, choices: Sequence[str] | None = None, default: Any = None) -> tuple[Any, dict]:
    """(type, options) of the input that sets `option`, as INPUT_TYPES declares it. choices: the drop-down of a
    file option (or a narrower list for a choice); default: where the node's default differs (a file drop-down's
    first entry)."""
    spec: dict[str, Any] = {"tooltip": option.help}
    if option.kind == "link":
        return SOCKET_TYPES[option.carries or ""], spec
    value = option.default if default is None else default
    if value is not None:
        spec["default"] = value
    if option.kind in ("choice", "path"):
        return list(option.choices if choices is None else choices), spec
    if option.minimum is not None:
        spec["min"] = option.minimum
    if option.maximum is not None:
        spec["max"] = option.maximum
    if option.multiple_of:
        spec["step"] = option.multiple_of
    spec.update(option.widget)
    return WIDGET_TYPES[option.kind], spec


def node_inputs(required: Sequence[str], optional: Sequence[str] = (),
                choices: Mapping[str, Sequence[str]] | None = None,
                defaults: Mapping[str, Any] | None = None) -> dict[str, dict[str, tuple[Any, dict]]]:
    """INPUT_TYPES for the options named (library names), keyed by their node input names."""
    choices, defaults = choices or {}, defaults or {}

    def specs(names: Sequence[str]) -> dict[str, tuple[Any, dict]]:
        declared = {}
        for name in names:
            option = OPTIONS[name]
            assert option.node_input is not None, f"option {name!r} is not a node input"
            declared[option.node_input] = input_spec(option, choices.get(name), defaults.get(name))
        return declared

    declared = {"required": specs(required)}
    if optional:
        declared["optional"] = specs(optional)
    return declared


class OptionNode:
    """What the pack's nodes share: ComfyUI's V1 node declarations, with INPUT_TYPES made from the options the node
    takes (REQUIRED_OPTIONS, OPTIONAL_OPTIONS: library names, in the order of the node's inputs). File drop-downs
    list their files when ComfyUI asks (`input_choices`)."""

    CATEGORY = CATEGORY
    DISPLAY_NAME = ""
    REQUIRED_OPTIONS: tuple[str, ...] = ()
    OPTIONAL_OPTIONS: tuple[str, ...] = ()

    @classmethod
    def input_choices(cls) -> dict[str, list[str]]:
        """The drop-downs of file options, listed now; none by default."""
        return {}

    @classmethod
    def input_defaults(cls) -> dict[str, Any]:
        """Inputs whose default differs from the option's (a drop-down's own first entry); none by default."""
        return {}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, tuple[Any, dict]]]:  # noqa: N802 (ComfyUI's name)
        return node_inputs(cls.REQUIRED_OPTIONS, cls.OPTIONAL_OPTIONS, cls.input_choices(), cls.input_defaults())
