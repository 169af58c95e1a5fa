"""Errors for the dialog ComfyUI shows when a node fails: which node, which input, and what to do.

Core functions raise OptionError (naming the option at fault and mentioning others) and ValueError,
FileNotFoundError, ImportError with messages addressed to people; here they get the node and the input they concern,
options spelled as the nodes name them (an input of this node by its name, another node's as "precision on Load
X-Portrait Model"). Anything else, ComfyUI's InterruptProcessingException above all, passes through untouched.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from xportrait_core.options import OPTIONS, OptionError

from .node_inputs import OptionNode

REPORTED = (ValueError, FileNotFoundError, ImportError)


class XPortraitInputError(ValueError):
    """A node input that cannot be used, with the node's and the input's name in the message."""


def options_taken(node: type[OptionNode]) -> tuple[str, ...]:
    return node.REQUIRED_OPTIONS + node.OPTIONAL_OPTIONS


def input_error(node: type[OptionNode], input_name: str, error: BaseException | str) -> XPortraitInputError:
    """`<node>, input '<input_name>': <message>`."""
    return XPortraitInputError(f"{node.DISPLAY_NAME}, input '{input_name}': {error}")


def node_spelling(node: type[OptionNode]) -> Callable[[str, str | None], str]:
    """How `node` names an option (set to a value): its input's name when it has that input ("precision fp32"), else
    the input and the nodes that have it ("precision fp32 on Load X-Portrait Model")."""
    from . import NODE_CLASS_MAPPINGS  # the node classes import this module

    def spell(name: str, value: str | None = None) -> str:
        option = OPTIONS.get(name)
        spelled = option.node_input if option is not None and option.node_input else name
        if value is not None:
            spelled = f"{spelled} {value}"
        if option is None or option.node_input is None or name in options_taken(node):
            return spelled
        holders = [cls.DISPLAY_NAME for cls in NODE_CLASS_MAPPINGS.values() if name in options_taken(cls)]
        return f"{spelled} on {' and '.join(holders)}" if holders else spelled

    return spell


def option_error(node: type[OptionNode], input_name: str, error: OptionError) -> XPortraitInputError:
    """An OptionError as this node's error: under the input that sets the option at fault when the node has it, else
    under `input_name` with the option named in the message."""
    own = error.option is None or error.option in options_taken(node)
    at_fault = OPTIONS[error.option].node_input if own and error.option is not None else input_name
    return input_error(node, at_fault or input_name, error.render(node_spelling(node), lead=not own))


@contextlib.contextmanager
def about_input(node: type[OptionNode], input_name: str) -> Iterator[None]:
    """Re-raise the core's user-facing errors as `<node>, input '<input_name>': <message>` (the input at fault
    instead, when the error names one of the node's own)."""
    try:
        yield
    except XPortraitInputError:
        raise
    except OptionError as error:
        raise option_error(node, input_name, error) from error
    except REPORTED as error:
        raise input_error(node, input_name, error) from error
