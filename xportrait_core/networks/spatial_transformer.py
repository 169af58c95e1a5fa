"""SD1.5 spatial transformer (LDM key names) with the reference-bank hook in its self-attention.

Shapes: the block input is an image batch (B, C, H, W); inside the transformer, tokens (B, H*W, C).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention, broadcast_groups
from .layer_ops import LayerOps, TorchLayers
from .reference_attention import BankReader, BankWriter

SPATIAL_NORM_EPS = 1e-6  # LDM Normalize(): GroupNorm(32, eps=1e-6) before proj_in
GROUPS = 32


class AttentionLayers(nn.Module):
    """LDM CrossAttention's layers: to_q/to_k/to_v without bias, to_out.0 with bias (to_out.1 is dropout), and
    `attend` over them. `Attention` and the motion module's TemporalAttention share them, each with its own
    forward signature."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int,
                 ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.backend = "sdpa"
        self.to_q = ops.Linear(query_dim, inner, bias=False)
        self.to_k = ops.Linear(context_dim, inner, bias=False)
        self.to_v = ops.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(ops.Linear(inner, query_dim), nn.Dropout(0.0))

    def attend(self, x: torch.Tensor, context: torch.Tensor | None = None,
               extra_context: torch.Tensor | None = None, extra_rows: int | None = None) -> torch.Tensor:
        """x (B, N, C); context (G, M, Cc) with G dividing B (one context per group of B/G consecutive rows,
        e.g. 1: shared by all), default x; extra_context (E, R, Cc), E = 1 or ``extra_rows``, is appended to the
        keys/values after the context (reference tokens) for the first ``extra_rows`` rows (default all); the
        other rows attend to their context only. Contexts are projected once per distinct row, not per frame."""
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        if extra_context is None:
            return self.to_out(attention(q, k, v, self.heads, self.backend))
        batch = x.shape[0]
        rows = batch if extra_rows is None else extra_rows
        if k.shape[0] != batch:
            k, v = broadcast_groups(k, batch), broadcast_groups(v, batch)
        k_ref, v_ref = self.to_k(extra_context), self.to_v(extra_context)
        k_read = torch.cat([k[:rows], k_ref.expand(rows, -1, -1)], dim=1)
        v_read = torch.cat([v[:rows], v_ref.expand(rows, -1, -1)], dim=1)
        out = attention(q[:rows], k_read, v_read, self.heads, self.backend)
        if rows < batch:
            out = torch.cat([out, attention(q[rows:], k[rows:], v[rows:], self.heads, self.backend)])
        return self.to_out(out)


class Attention(AttentionLayers):
    """LDM CrossAttention (the transformer block's attn1 and attn2)."""

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                extra_context: torch.Tensor | None = None, extra_rows: int | None = None) -> torch.Tensor:
        """See `AttentionLayers.attend`."""
        return self.attend(x, context, extra_context, extra_rows)


class GEGLU(nn.Module):
    """proj (C -> 2 * inner), out = a * gelu(gate) (exact gelu, as LDM and diffusers)."""

    def __init__(self, dim: int, inner: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.proj = ops.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """net.0 = GEGLU (C -> 4C), net.1 dropout, net.2 Linear (4C -> C): the LDM/diffusers key layout."""

    FF_MULT = 4

    def __init__(self, dim: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        inner = dim * self.FF_MULT
        self.net = nn.Sequential(GEGLU(dim, inner, ops), nn.Dropout(0.0), ops.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """attn1 (self / reference attention) -> attn2 (text cross-attention) -> GEGLU feed-forward,
    each pre-LayerNorm with a residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.attn1 = Attention(dim, dim, heads, head_dim, ops)
        self.ff = FeedForward(dim, ops)
        self.attn2 = Attention(dim, context_dim, heads, head_dim, ops)
        self.norm1 = ops.LayerNorm(dim)
        self.norm2 = ops.LayerNorm(dim)
        self.norm3 = ops.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                bank: BankWriter | BankReader | None = None) -> torch.Tensor:
        normed = self.norm1(x)
        reference_tokens, reading_rows = None, None
        if isinstance(bank, BankWriter):
            bank.write(normed)
        elif isinstance(bank, BankReader):
            reference_tokens, reading_rows = bank.read(), bank.rows
        x = self.attn1(normed, extra_context=reference_tokens, extra_rows=reading_rows) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """GroupNorm -> 1x1 conv proj_in -> transformer blocks on (B, H*W, C) tokens -> 1x1 conv proj_out
    -> + input. SD1.5 uses conv projections (use_linear_in_transformer=False)."""

    def __init__(self, channels: int, heads: int, context_dim: int, depth: int = 1,
                 ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        head_dim = channels // heads
        self.norm = ops.GroupNorm(GROUPS, channels, eps=SPATIAL_NORM_EPS)
        self.proj_in = ops.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, head_dim, context_dim, ops) for _ in range(depth))
        self.proj_out = ops.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                bank: BankWriter | BankReader | None = None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.proj_in(self.norm(x))
        tokens = h.reshape(batch, channels, height * width).transpose(1, 2)
        for block in self.transformer_blocks:
            tokens = block(tokens, context, bank)
        h = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return self.proj_out(h) + x
