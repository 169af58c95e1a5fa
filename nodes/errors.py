"""Errors for the dialog ComfyUI shows when a node fails: which node, which input, and what to do.

Core functions raise ValueError (and FileNotFoundError, ImportError for missing files and packages) with messages
addressed to people; here they get the node and input they concern. Anything else, ComfyUI's
InterruptProcessingException above all, passes through untouched.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

REPORTED = (ValueError, FileNotFoundError, ImportError)


class XPortraitInputError(ValueError):
    """A node input that cannot be used, with the node's and the input's name in the message."""


def input_error(node: str, input_name: str, error: BaseException | str) -> XPortraitInputError:
    """`<node>, input '<input_name>': <message>`, for errors that belong to another input than the block's."""
    return XPortraitInputError(f"{node}, input '{input_name}': {error}")


@contextlib.contextmanager
def about_input(node: str, input_name: str) -> Iterator[None]:
    """Re-raise the core's user-facing errors as `<node>, input '<input_name>': <message>`."""
    try:
        yield
    except XPortraitInputError:
        raise
    except REPORTED as error:
        raise input_error(node, input_name, error) from error
