"""argparse types for the command line's numbers: each refuses at parse time what no command can use (a word, NaN,
infinity, zero where a count is needed), with a message naming the value. Range rules that belong to the model (the
resolution, the sampling options) are checked by the commands through the library's own checks."""
from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """Any finite number: 'nan', 'inf' and words are refused (they would silently give black or empty videos)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
