"""CLIP text encoder (the original's FrozenCLIPEmbedder, key names under ``cond_stage_model.``).

X-Portrait always conditions on the empty prompt, whose token ids are fixed, so no tokenizer (and no
vocabulary download) is needed: ids = [<|startoftext|>] + [<|endoftext|>] * 76. The context is the last
hidden state after the final layer norm (layer "last"), with causal self-attention and no padding mask.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .attention import attention
from .config import TextEncoderConfig
from .layer_ops import LayerOps, TorchLayers

START_OF_TEXT = 49406
END_OF_TEXT = 49407          # also the padding token of FrozenCLIPEmbedder
CLIP_LAYER_NORM_EPS = 1e-5
QUICK_GELU_SCALE = 1.702     # CLIP's quick_gelu: x * sigmoid(1.702 x)


def empty_prompt_token_ids(max_positions: int) -> torch.Tensor:
    """(1, max_positions) int64: the tokenisation of "" padded to the context length."""
    return torch.tensor([[START_OF_TEXT] + [END_OF_TEXT] * (max_positions - 1)], dtype=torch.long)


class CLIPAttention(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        width = cfg.hidden_size
        self.heads = cfg.num_heads
        self.backend = "sdpa"
        self.q_proj = ops.Linear(width, width)
        self.k_proj = ops.Linear(width, width)
        self.v_proj = ops.Linear(width, width)
        self.out_proj = ops.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, self.backend,
                        causal=True)
        return self.out_proj(out)


class CLIPMLP(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.fc1 = ops.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = ops.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(QUICK_GELU_SCALE * h))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.layer_norm1 = ops.LayerNorm(cfg.hidden_size, eps=CLIP_LAYER_NORM_EPS)
        self.self_attn = CLIPAttention(cfg, ops)
        self.layer_norm2 = ops.LayerNorm(cfg.hidden_size, eps=CLIP_LAYER_NORM_EPS)
        self.mlp = CLIPMLP(cfg, ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    position_ids: torch.Tensor  # (1, max_positions) buffer

    def __init__(self, cfg: TextEncoderConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.token_embedding = ops.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = ops.Embedding(cfg.max_positions, cfg.hidden_size)
        # persistent in the transformers version the original pins, so the checkpoint may hold it
        self.register_buffer("position_ids", torch.arange(cfg.max_positions)[None], persistent=True)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg, ops) for _ in range(cfg.num_layers))


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.embeddings = CLIPEmbeddings(cfg, ops)
        self.encoder = CLIPEncoder(cfg, ops)
        self.final_layer_norm = ops.LayerNorm(cfg.hidden_size, eps=CLIP_LAYER_NORM_EPS)


class _TextModelHolder(nn.Module):
    """The ``transformer`` level of the key names (a transformers CLIPTextModel holds ``text_model``)."""

    def __init__(self, cfg: TextEncoderConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.text_model = CLIPTextTransformer(cfg, ops)


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, ops: LayerOps = TorchLayers) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = _TextModelHolder(cfg, ops)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids (B, T) int64 -> context (B, T, hidden): last hidden state after final_layer_norm."""
        text = self.transformer.text_model
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        x = text.embeddings.token_embedding(token_ids) + text.embeddings.position_embedding(positions)[None]
        for layer in text.encoder.layers:
            x = layer(x)
        return text.final_layer_norm(x)

    def encode_empty_prompt(self) -> torch.Tensor:
        """(1, 77, hidden): the context X-Portrait uses for both guidance passes."""
        device = self.transformer.text_model.final_layer_norm.weight.device
        return self(empty_prompt_token_ids(self.config.max_positions).to(device))
