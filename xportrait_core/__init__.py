"""X-Portrait core library: networks, checkpoint loading, sampling, driving-video preparation.

Host-independent: never imports ComfyUI. Grouped by role, imports running one way (see docs/code_map.md):

    cli -> pipeline -> sampling, controls -> model -> networks        (media: images and videos, below all)

The names most scripts need are available here, imported on first use so that `import xportrait_core` stays
instant: `load_model`, `sample`, `SamplerOptions`, `animate`, `XPortraitModel`.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC_NAMES = {
    "load_model": "xportrait_core.model.checkpoint",
    "XPortraitModel": "xportrait_core.model.xportrait_model",
    "sample": "xportrait_core.sampling.sampler",
    "SamplerOptions": "xportrait_core.sampling.sampler",
    "animate": "xportrait_core.pipeline",
}
__all__ = ["__version__", *_PUBLIC_NAMES]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC_NAMES:
        raise AttributeError(f"module 'xportrait_core' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC_NAMES[name]), name)
