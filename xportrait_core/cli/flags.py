"""The command line's flags, made from the option table (`xportrait_core.options`): each flag's spelling, type,
default, choices and help come from the option it sets, so the command line and the nodes cannot drift apart.

    add_flags(parser, "steps", "cfg", defaults={"steps": 4})   # --steps, --cfg with the options' help

The parsed value lands under the option's library name (`args.steps`, `args.precision`). Options only the command
line takes (`Option.cli_only`) are checked here, when parsed; the others are checked by the library where they enter
it, and the command reports its OptionError in the flags' words (`spell`).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..options import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, OPTIONS, Option, OptionError

NO_DEFAULT = object()


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def finite_number(text: str) -> float:
    """Any finite number: 'nan', 'inf' and words are refused (they would silently give black or empty videos)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


PARSERS: dict[str, Callable[[str], Any]] = {"int": whole_number, "float": finite_number, "path": Path, "text": str,
                                            "link": Path, "choice": str}


def _parser(option: Option) -> Callable[[str], Any]:
    """Text -> value of the option's kind; also checked against its range when only the command line takes it."""
    parse = PARSERS[option.kind]
    if not option.cli_only or option.kind not in ("int", "float"):
        return parse

    def parse_and_check(text: str) -> Any:
        try:
            return option.check(parse(text))
        except OptionError as error:
            raise argparse.ArgumentTypeError(error.detail) from None

    parse_and_check.__name__ = parse.__name__  # argparse names the type in its messages
    return parse_and_check


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, default: Any = NO_DEFAULT,
             **extra: Any) -> argparse.Action:
    """The flag (or positional argument) of the option `name`, its value stored as `args.<name>`. default: where this
    command's default differs from the option's (the demo's smaller resolution); extra: argparse keywords such as
    action="append" or metavar."""
    option = OPTIONS[name]
    assert option.flag is not None, f"option {name!r} has no command-line flag"
    value = option.default if default is NO_DEFAULT else default
    if not option.flag.startswith("-"):  # positional: argparse names it by its dest, shown as the flag's word
        return parser.add_argument(name, metavar=option.flag, type=_parser(option), help=option.help, **extra)
    keywords: dict[str, Any] = {"dest": name, "help": option.help, "default": value}
    if option.kind == "bool":
        keywords["action"] = "store_true"
    else:
        keywords["type"] = _parser(option)
        if option.kind == "choice" and name != "best_frame":  # best_frame also takes a frame number
            keywords["choices"] = option.choices
    if extra.get("action") == "append":  # argparse would append to a default list: the command falls back to it
        keywords["default"] = None
    if value is not None and option.kind != "bool":
        keywords["help"] = f"{option.help} (default: {value})".replace("%", "%%")
    elif value is None and option.default_help:
        keywords["help"] = f"{option.help} (default: {option.default_help})".replace("%", "%%")
    keywords.update(extra)
    return parser.add_argument(option.flag, *option.aliases, **keywords)


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str,
              defaults: Mapping[str, Any] | None = None) -> None:
    for name in names:
        add_flag(parser, name, (defaults or {}).get(name, NO_DEFAULT))


def spell(name: str, value: str | None = None) -> str:
    """How the command line names an option (set to a value): its flag ("--precision fp32"), or its name."""
    option = OPTIONS.get(name)
    flag = option.flag if option is not None and option.flag else name
    return flag if value is None else f"{flag} {value}"


def exit_statuses(*specific: str) -> str:
    """The epilog line every command ends its help with: its exit statuses (`specific`: those only it has)."""
    statuses = [f"{EXIT_OK} done", *specific, f"{EXIT_BAD_INPUT} bad arguments or inputs (nothing is written)",
                f"{EXIT_INTERRUPTED} interrupted by Ctrl-C (no file is left half-written)"]
    return "exit status: " + ", ".join(statuses) + "."
