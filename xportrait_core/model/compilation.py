"""Optional ways to run the window forward faster than eager PyTorch, chosen per loaded model (off by default).

- ``cuda_graphs``: the evaluations are captured as CUDA graphs (see `graph_capture`): no compilation, start-up of
  about one forward per distinct batch shape; removes the launch overhead that bounds small windows on a big GPU.
- ``compile_blocks`` (experimental): ``torch.compile`` (inductor) of the few pure-tensor block kinds the networks
  repeat - the ResBlock, the transformer feed-forward, the temporal transformer - with dynamic activation and
  parameter shapes, so a handful of graphs serve every width, level and network (whole-net compilation costs
  minutes; per-block compilation with static shapes recompiles for every width and falls back to eager past
  dynamo's recompile limit; blocks holding the bank's Python logic break graphs). Measured on the CPU with the tiny
  model: 150 modules, 23 graphs, no graph break, results equal. The inductor's cache persists between runs
  (``TORCHINDUCTOR_CACHE_DIR``), so a second session compiles less.

Whether a mode pays depends on the device; `bench/bench_gpu.py` measures each with its start-up cost.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch

from ..networks.motion_module import TemporalTransformer
from ..networks.spatial_transformer import FeedForward
from ..networks.unet_blocks import ResBlock
from ..options import CompileMode, OptionError
from .graph_capture import GraphedModel
from .xportrait_model import XPortraitModel

log = logging.getLogger(__name__)

COMPILED_BLOCKS = (ResBlock, FeedForward, TemporalTransformer)
# A few graphs per block kind (skip conv or not, dtypes, batch patterns): well under this.
RECOMPILE_LIMIT = 64


def check_compile_mode(mode: CompileMode, device: torch.device) -> None:
    """OptionError when the (valid) compile mode cannot run on the device the model computes on."""
    if mode == "cuda_graphs" and device.type != "cuda":
        raise OptionError("compile", f"compile 'cuda_graphs' needs a CUDA device; the model runs on {device.type}. "
                          "Use 'off' there.")
    if mode == "compile_blocks" and device.type != "cuda":
        # Inductor compiles C++ for every block kind on the CPU: many minutes with no progress to show, for a gain
        # nobody has measured there; refused instead of leaving a run silent for that long.
        raise OptionError("compile", f"compile 'compile_blocks' is for CUDA GPUs; on {device.type} it compiles for "
                          "many minutes before the first step, with no gain measured. Use 'off' there.")


def compile_blocks(model: XPortraitModel, backend: str = "inductor") -> int:
    """Compile every repeated block of the denoising networks in place; returns how many modules were wrapped.
    The first forward of each block kind compiles (the start-up cost); later ones reuse the graphs."""
    return compile_modules(model.denoising_networks, backend)


def compile_modules(networks: Iterable[torch.nn.Module], backend: str = "inductor") -> int:
    """`compile_blocks` on any networks: each COMPILED_BLOCKS module in them is compiled in place."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, RECOMPILE_LIMIT)
    # Parameter shapes as dynamic as activation shapes: one graph for every width of a block kind.
    torch._dynamo.config.force_parameter_static_shapes = False
    wrapped = 0
    for network in networks:
        for module in network.modules():
            if isinstance(module, COMPILED_BLOCKS):
                module.compile(backend=backend, dynamic=True)
                wrapped += 1
    log.info("compiled %d blocks with %s (graphs are built on first use)", wrapped, backend)
    return wrapped


def accelerated(model: XPortraitModel, mode: CompileMode) -> Any:
    """What to sample with for a compile mode (checked when the model was loaded): the model itself (``off``,
    ``compile_blocks`` after `compile_blocks` was applied once), or a `GraphedModel` over it (``cuda_graphs``)."""
    assert mode != "cuda_graphs" or model.device.type == "cuda", (mode, model.device)
    return GraphedModel(model) if mode == "cuda_graphs" else model
