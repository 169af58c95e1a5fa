"""ComfyUI entry point of the X-Portrait node pack.

Kept cheap to import: the node classes import torch-heavy code lazily, inside their functions. ComfyUI imports this
folder as a package under a name that is not ours and has its own top-level `nodes` module, so our `nodes`
subpackage is imported relatively; `xportrait_core` is made importable by appending the pack root to sys.path
(appended, so it never shadows ComfyUI's modules).
"""
import os
import sys

_PACK_ROOT = os.path.dirname(os.path.abspath(__file__))
if _PACK_ROOT not in sys.path:
    sys.path.append(_PACK_ROOT)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
