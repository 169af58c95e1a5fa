"""Attention backends agree, half precision stays finite, bf16 stays close to fp32."""
from __future__ import annotations

import pytest
import torch
from conftest import GOLDEN_DIR, GOLDEN_TEXT_HEADS

from xportrait_core.model.checkpoint import load_model
from xportrait_core.networks.attention import attention, resolve_backend, xformers_available

BF16_RELATIVE_TOL = 0.05   # measured: relative L2 error of eps 0.020, max abs 0.027 (values O(1))
FP16_RELATIVE_TOL = 0.01   # measured: relative L2 error of eps 0.0021


def _qkv(seed: int, batch=2, queries=37, keys=53, width=64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, width, generator=g) * scale for n in (queries, keys, keys)]


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_equals_explicit_math(causal):
    q, k, v = _qkv(0, queries=53)
    assert torch.allclose(attention(q, k, v, 4, "sdpa", causal), attention(q, k, v, 4, "math", causal),
                          atol=1e-5)


def test_shared_context_of_batch_one_is_broadcast():
    q, k, v = _qkv(1)
    out = attention(q, k[:1], v[:1], 8, "sdpa")
    assert torch.allclose(out, attention(q, k[:1].expand(2, -1, -1), v[:1].expand(2, -1, -1), 8, "math"),
                          atol=1e-5)


def test_fp16_attention_does_not_overflow_where_logits_exceed_fp16_range():
    q, k, v = _qkv(2, scale=60.0)  # q.k reaches ~1e5 > 65504
    assert (q @ k.transpose(1, 2)).abs().max() > 65504
    out16 = attention(q.half(), k.half(), v.half(), 1, "sdpa")
    assert torch.isfinite(out16).all()
    assert torch.allclose(out16.float(), attention(q, k, v, 1, "math"), atol=0.05 * v.abs().max().item())


@pytest.mark.skipif(not (xformers_available() and torch.cuda.is_available()), reason="needs xformers on CUDA")
def test_xformers_equals_sdpa_on_cuda():
    q, k, v = [t.cuda().half() for t in _qkv(3)]
    assert torch.allclose(attention(q, k, v, 8, "xformers"), attention(q, k, v, 8, "sdpa"), atol=2e-3)


def test_unknown_or_unavailable_backend_is_a_clear_error_before_loading():
    from xportrait_core.options import OptionError

    with pytest.raises(OptionError, match="attention: must be one of auto, sdpa, xformers, math, got 'flash9'"):
        load_model(GOLDEN_DIR / "missing.safetensors", attention_backend="flash9")
    if not xformers_available():
        with pytest.raises(OptionError, match="attention: xformers was asked for but is not installed"):
            resolve_backend("xformers")
    assert resolve_backend("auto") in ("sdpa", "xformers")


@pytest.fixture(scope="module")
def fp32_reference(golden):
    model, _ = load_model(GOLDEN_DIR / "tiny_weights.safetensors", precision="fp32",
                          attention_backend="sdpa", text_num_heads=GOLDEN_TEXT_HEADS)
    return _window_outputs(model, golden("window_t500"))


def _window_outputs(model, data):
    with torch.no_grad():
        context = model.encode_empty_prompt()
        bank = model.write_reference_bank(data["image_control"], data["t"], context)
        eps = model.eps_conditional(data["x_t"], data["t"], context, bank, None, None)
        decoded = model.decode_latents(data["image_control"][:2])
    return eps, decoded


@pytest.mark.parametrize("precision,tolerance", [("bf16", BF16_RELATIVE_TOL), ("fp16", FP16_RELATIVE_TOL)])
def test_half_precision_forward_is_finite_and_close_to_fp32(golden, fp32_reference, precision, tolerance):
    model, _ = load_model(GOLDEN_DIR / "tiny_weights.safetensors", precision=precision,
                          attention_backend="sdpa", text_num_heads=GOLDEN_TEXT_HEADS)
    eps, decoded = _window_outputs(model, golden("window_t500"))
    assert torch.isfinite(eps).all() and torch.isfinite(decoded).all()
    relative = ((eps - fp32_reference[0]).norm() / fp32_reference[0].norm()).item()
    assert relative < tolerance


def test_vae_stays_float32_under_fp16_and_follows_bf16():
    from xportrait_core.model.tiny_model import build_random_model
    model = build_random_model()
    model.set_precision("fp16")
    assert model.unet.out[2].weight.dtype == torch.float16
    assert model.vae_dtype == torch.float32
    model.set_precision("bf16")
    assert model.vae_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        model.set_precision("int8")
