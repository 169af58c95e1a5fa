"""ComfyUI entry point of the X-Portrait node pack.

Kept cheap to import: the node classes import torch-heavy code lazily, inside their functions.
"""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
