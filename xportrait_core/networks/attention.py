"""The one place where scaled dot-product attention is computed.

Every attention in the pack (spatial self/cross attention, reference-bank attention, temporal attention
of the motion modules, the VAE's mid-block attention) calls :func:`attention`, with the backend chosen
once per model (``XPortraitModel.set_attention_backend``), never per call site.

Backends:
- ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention``; PyTorch picks flash /
  memory-efficient / math kernels itself.
- ``"xformers"``: ``xformers.ops.memory_efficient_attention``, what the original ran; used only when
  xformers is installed and the tensors are on CUDA (its wheels pin torch versions, so it is optional).
- ``"math"``: explicit ``softmax(q k^T / sqrt(d)) v`` in float32: the reference for tests.
- a host's own function (an `AttentionFunction`, handed in as data like the layer classes): inside ComfyUI its
  ``optimized_attention``, so that ComfyUI's attention flags apply to the pack's networks too. Causal attention (the
  text encoder, run once per run) keeps SDPA: the host function is called without a mask.

fp16 safety: the original is reported to produce black videos in fp16. Logits q.k can exceed the fp16
range (65504) before the softmax; the CUDA SDPA/xformers kernels accumulate and normalise in float32,
but the CPU (math) path would compute them in fp16, so half-precision inputs off CUDA are upcast to
float32 for the attention itself and the result cast back.
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..options import AttentionChoice, OptionError

# (q (B, Nq, H*D), k (B, Nk, H*D), v (B, Nk, H*D), heads) -> (B, Nq, H*D): the call shape of ComfyUI's
# comfy.ldm.modules.attention.optimized_attention.
AttentionFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@runtime_checkable
class UsesAttentionBackend(Protocol):
    """A module that calls `attention` with its own ``backend`` (set for the whole model at once)."""

    backend: str | AttentionFunction


def xformers_available() -> bool:
    """True when the optional xformers package can be imported (it is never required)."""
    return importlib.util.find_spec("xformers") is not None


def resolve_backend(requested: AttentionChoice) -> str:
    """The backend to use for a (valid) choice: ``"auto"`` means xformers when installed with CUDA, else SDPA.
    OptionError when xformers is asked for but not installed."""
    if requested == "auto":
        return "xformers" if (xformers_available() and torch.cuda.is_available()) else "sdpa"
    if requested == "xformers" and not xformers_available():
        raise OptionError("attention", "xformers was asked for but is not installed; install an xformers wheel "
                          "that matches your torch, or use sdpa")
    return requested


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              backend: str | AttentionFunction = "sdpa", causal: bool = False) -> torch.Tensor:
    """Multi-head attention softmax(q k^T / sqrt(d)) v.

    q (B, Nq, H*D), k and v (B, Nk, H*D) -> (B, Nq, H*D). k/v may have batch G dividing B: one context per
    group of B/G consecutive rows (G = 1: shared by all); they are broadcast. ``causal`` masks keys after the query
    position (CLIP text).
    """
    batch, queries, width = q.shape
    head_dim = width // heads
    if k.shape[0] != batch:
        k, v = broadcast_groups(k, batch), broadcast_groups(v, batch)
    if not isinstance(backend, str):
        if not causal:
            return backend(q, k, v, heads)
        backend = "sdpa"
    out_dtype = q.dtype
    upcast = q.dtype in (torch.float16, torch.bfloat16) and q.device.type != "cuda"
    if upcast or backend == "math":
        q, k, v = q.float(), k.float(), v.float()

    if backend == "xformers" and q.device.type == "cuda":
        import xformers.ops  # optional; resolve_backend checked it is installed

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], t.shape[1], heads, head_dim).contiguous()

        bias = xformers.ops.LowerTriangularMask() if causal else None
        out = xformers.ops.memory_efficient_attention(split(q), split(k), split(v), attn_bias=bias)
        return out.reshape(batch, queries, width).to(out_dtype)

    def to_heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)

    qh, kh, vh = to_heads(q), to_heads(k), to_heads(v)
    if backend == "math":
        logits = qh @ kh.transpose(-1, -2) / math.sqrt(head_dim)
        if causal:
            future = torch.ones(queries, kh.shape[2], dtype=torch.bool, device=q.device).triu(1)
            logits = logits.masked_fill(future, float("-inf"))
        out = torch.softmax(logits, dim=-1) @ vh
    else:
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal)
    return out.transpose(1, 2).reshape(batch, queries, width).to(out_dtype)


def broadcast_groups(t: torch.Tensor, batch: int) -> torch.Tensor:
    """(G, N, C) -> (batch, N, C): row g of ``t`` serves rows g*batch/G ... (g+1)*batch/G - 1."""
    groups = t.shape[0]
    if batch % groups:
        raise ValueError(f"a context of batch {groups} cannot serve a batch of {batch} rows")
    if groups == 1:
        return t.expand(batch, -1, -1)
    return t.repeat_interleave(batch // groups, dim=0)
