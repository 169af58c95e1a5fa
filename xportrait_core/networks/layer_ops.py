"""The layer classes the networks are built from, passed in as data (ComfyUI's `operations` idea).

Every network takes ``ops``: a namespace with ``Linear``, ``Conv2d``, ``GroupNorm``, ``LayerNorm`` and ``Embedding``
classes that construct like their torch counterparts. Three sets fit:

- :class:`TorchLayers` (the default): plain ``torch.nn`` layers, default initialisation.
- :class:`CastingLayers`: the same layers, but each casts its weight and bias to the input's dtype and device on
  every call. Weights may then be stored in another dtype than the one computed in (fp8 storage on small GPUs) or on
  another device; this is what ComfyUI's ``comfy.ops.manual_cast`` does for its own models.
- inside ComfyUI, ``comfy.ops.disable_weight_init`` / ``manual_cast`` (the host passes them through
  ``nodes/host.py``): its ModelPatcher can then load such layers partially, stream them under low VRAM and cast
  their stored weights per layer, exactly as for core models.

Layers that must compute in float32 whatever the model's dtype (the ResBlock GroupNorms, as the original's
GroupNorm32) are marked with :func:`mark_float32` and kept in float32 by ``XPortraitModel.set_precision``.
"""
from __future__ import annotations

from typing import Protocol, TypeVar, overload

import torch
import torch.nn as nn
import torch.nn.functional as F

FLOAT32_MARK = "xportrait_float32_params"  # attribute set on layers whose parameters stay float32

LayerT = TypeVar("LayerT", bound=nn.Module)


class LayerOps(Protocol):
    """What the networks need of a layer set (ComfyUI's ``comfy.ops`` classes have the same shape). A set may also
    say ``casts_weights = True``: its layers cast stored weights per call, so weights may be stored narrower than
    the compute dtype (fp8) or away from the compute device. The members are read-only, so a set may name
    subclasses (`CastingLayers`)."""

    @property
    def Linear(self) -> type[nn.Linear]: ...
    @property
    def Conv2d(self) -> type[nn.Conv2d]: ...
    @property
    def GroupNorm(self) -> type[nn.GroupNorm]: ...
    @property
    def LayerNorm(self) -> type[nn.LayerNorm]: ...
    @property
    def Embedding(self) -> type[nn.Embedding]: ...


class TorchLayers:
    """Plain torch layers."""

    Linear = nn.Linear
    Conv2d = nn.Conv2d
    GroupNorm = nn.GroupNorm
    LayerNorm = nn.LayerNorm
    Embedding = nn.Embedding


# A weight casts to a tensor, a layer without bias passes None on.
@overload
def _cast(tensor: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor: ...
@overload
def _cast(tensor: None, like: torch.Tensor, dtype: torch.dtype | None = None) -> None: ...
def _cast(tensor: torch.Tensor | None, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    if tensor is None:
        return None
    return tensor.to(device=like.device, dtype=dtype or like.dtype, non_blocking=True)


class CastingLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _cast(self.weight, x), _cast(self.bias, x))


class CastingConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


class CastingGroupNorm(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class CastingLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class CastingEmbedding(nn.Embedding):
    """Token ids have no float dtype to follow: the table is computed in its own dtype (upcast from fp8)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        table = self.weight
        dtype = torch.float32 if table.dtype.itemsize == 1 else table.dtype
        return F.embedding(ids, _cast(table, ids, dtype), self.padding_idx)


class CastingLayers:
    """Layers whose stored weights are cast to the input's dtype and device at every call (fp8 storage)."""

    casts_weights = True
    Linear = CastingLinear
    Conv2d = CastingConv2d
    GroupNorm = CastingGroupNorm
    LayerNorm = CastingLayerNorm
    Embedding = CastingEmbedding


def mark_float32(layer: LayerT) -> LayerT:
    """Mark a layer whose parameters stay float32 when the model changes precision; returns it."""
    setattr(layer, FLOAT32_MARK, True)
    return layer


def keeps_float32(layer: nn.Module) -> bool:
    return bool(getattr(layer, FLOAT32_MARK, False))
