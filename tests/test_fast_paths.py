"""Every fast path equals the plain path on the golden model within float32 noise: both guidance passes in one
forward, several windows in one forward, ControlNet residuals added in place, layers that cast their weights per
call; fp8 weight storage within a stated bound."""
from __future__ import annotations

import pytest
import torch
from conftest import GOLDEN_DIR, GOLDEN_TEXT_HEADS, golden_hints

from xportrait_core.model.checkpoint import load_model
from xportrait_core.networks.layer_ops import CastingLayers
from xportrait_core.sampling.guidance import Conditioning
from xportrait_core.sampling.sampler import SamplerOptions, sample

FP32_NOISE = 2e-5  # manifest: fp32 noise of single passes ~2e-6, of full runs ~2e-5
FRAMES = 20


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _passes(model, context, uncond_context, data, pose, local, bank):
    with torch.no_grad():
        eps_c = model.eps_conditional(data["x_t"], data["t"], context, bank, pose, local)
        eps_u = model.eps_unconditional(data["x_t"], data["t"], uncond_context)
        both = model.eps_both_passes(data["x_t"], data["t"], context, uncond_context, bank, pose, local)
    return (eps_c, eps_u), both


def test_both_passes_in_one_forward_equal_the_two_passes(golden, golden_model, golden_context):
    data = golden("window_t500")
    pose, local = golden_hints(golden, range(16))
    with torch.no_grad():  # the original's per-frame reference latents: a 16-row bank
        bank = golden_model.write_reference_bank(data["image_control"], data["t"], golden_context)
    (eps_c, eps_u), (both_c, both_u) = _passes(golden_model, golden_context, golden_context, data, pose, local, bank)
    assert max_abs(both_c, eps_c) <= FP32_NOISE and max_abs(both_u, eps_u) <= FP32_NOISE
    assert max_abs(both_c, data["eps_cond"]) <= 1e-4  # and both still match the original
    assert max_abs(both_u, data["eps_uncond"]) <= 1e-4


def test_both_passes_keep_their_own_text_contexts_with_a_shared_bank(golden, golden_model, golden_context):
    """The unconditional rows never see the bank or the controls, and each pass keeps its own context."""
    data = golden("window_t500")
    pose, local = golden_hints(golden, range(16))
    negative = golden_context + 0.5 * torch.randn(golden_context.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # one reference latent: a 1-row bank broadcast to the conditional rows only
        bank = golden_model.write_reference_bank(data["image_control"][:1], data["t"][:1], golden_context)
    (eps_c, eps_u), (both_c, both_u) = _passes(golden_model, golden_context, negative, data, pose, local, bank)
    assert max_abs(both_c, eps_c) <= FP32_NOISE and max_abs(both_u, eps_u) <= FP32_NOISE
    assert max_abs(eps_u, data["eps_uncond"]) > 1e-3  # the negative context did change the unconditional pass


def _run(golden, model, context, **options):
    run = golden("sampling_cfg5_shared_reference")
    pose, local = golden_hints(golden, range(FRAMES))
    conditioning = Conditioning(reference_latents=[run["image_control"][:1]], pose_hints=pose, local_hints=local,
                                context=context, uncond_context=context)
    sampler_options = SamplerOptions(steps=4, cfg=5, offsets=run["offsets"].tolist(), **options)
    return sample(model, conditioning, sampler_options, init_latents=run["z_pre"],
                  start_noise=run["q_sample_noise"])


@pytest.fixture(scope="module")
def runs(golden, golden_model, golden_context):
    """The golden shared-reference run, plainly (one window, passes one after the other) and batched (both
    windows of a step and both passes in one forward)."""
    return {"plain": _run(golden, golden_model, golden_context, batch_passes=False, windows_per_batch=1),
            "batched": _run(golden, golden_model, golden_context, batch_passes=True, windows_per_batch=2)}


@pytest.mark.parametrize("kind", ["plain", "batched"])
def test_plain_and_batched_runs_reproduce_the_original(golden, runs, kind):
    result = runs[kind]
    assert max_abs(result.latents, golden("sampling_cfg5_shared_reference")["final_latents"]) <= 1e-4
    assert result.evaluation_counts["unet"] == 4 * 2 * 16 * 2  # the same work, in fewer forwards


def test_window_batching_changes_nothing_but_float_noise(runs):
    assert max_abs(runs["plain"].latents, runs["batched"].latents) <= FP32_NOISE


@pytest.fixture(scope="module")
def casting_model():
    model, _ = load_model(GOLDEN_DIR / "tiny_weights.safetensors", precision="fp32", attention_backend="sdpa",
                          text_num_heads=GOLDEN_TEXT_HEADS, ops=CastingLayers)
    return model


def test_layers_that_cast_their_weights_give_the_same_window(golden, golden_model, casting_model, golden_context):
    data = golden("window_t500")
    pose, local = golden_hints(golden, range(16))
    with torch.no_grad():
        bank = casting_model.write_reference_bank(data["image_control"], data["t"], golden_context)
        eps = casting_model.eps_conditional(data["x_t"], data["t"], golden_context, bank, pose, local)
    assert max_abs(eps, data["eps_cond"]) <= 1e-4
    assert type(casting_model.unet.out[2]) is CastingLayers.Conv2d


def test_weights_kept_on_another_device_or_dtype_are_cast_per_call(golden, casting_model, golden_context):
    """What ComfyUI's low-VRAM loading does to casting layers: weights stay in a storage dtype (here float64
    standing in for 'not the compute dtype') and are cast at each call."""
    data = golden("window_t500")
    with torch.no_grad():
        before = casting_model.eps_unconditional(data["x_t"], data["t"], golden_context)
        for layer in casting_model.unet.modules():
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                layer.weight.data = layer.weight.data.double()
        try:
            after = casting_model.eps_unconditional(data["x_t"], data["t"], golden_context)
        finally:
            for layer in casting_model.unet.modules():
                if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                    layer.weight.data = layer.weight.data.float()
    assert max_abs(before, after) <= 1e-6


FP8_RELATIVE_BOUND = 0.25  # e4m3 keeps 3 mantissa bits (relative step 1/8): a ~6% error per weight


def test_fp8_weight_storage_stays_within_its_bound_and_quarters_the_weights(golden, golden_model, golden_context):
    fp8, _ = load_model(GOLDEN_DIR / "tiny_weights.safetensors", precision="fp8_e4m3fn", attention_backend="sdpa",
                        text_num_heads=GOLDEN_TEXT_HEADS)
    data = golden("window_t500")
    pose, local = golden_hints(golden, range(16))
    with torch.no_grad():
        bank = fp8.write_reference_bank(data["image_control"], data["t"], golden_context)
        eps = fp8.eps_conditional(data["x_t"], data["t"], golden_context, bank, pose, local)
    reference = data["eps_cond"]
    relative = ((eps - reference).norm() / reference.norm()).item()
    assert 0 < relative <= FP8_RELATIVE_BOUND
    conv = fp8.unet.input_blocks[1][0].in_layers[2]
    assert conv.weight.dtype == torch.float8_e4m3fn and conv.bias.dtype == torch.float32
    assert fp8.unet.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # norms are not narrowed


def test_fp8_storage_needs_casting_layers(golden_model):
    with pytest.raises(ValueError, match="cast their weights per call"):
        golden_model.set_precision("fp32", weight_storage=torch.float8_e4m3fn)


class ReplayByRerunning:
    """A stand-in for CUDA graphs on the CPU: a 'replay' re-runs the recorded call on the same static buffers, so
    a wrapper that forgot to refresh an input (or the bank) would return stale numbers. The re-run reports its
    evaluations to the observer of the recording, never to the caller's: what the caller hears comes from the
    wrapper, as with a real replay, which runs no Python of the model."""

    calls_per_capture = 1

    def __init__(self):
        self.captures = 0

    def capture(self, run):
        self.captures += 1
        outputs = run()

        def replay():
            fresh = run()
            for static, new in zip(_flat(outputs), _flat(fresh)):
                static.copy_(new)

        return outputs, replay


def _flat(value):
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _flat(item)]


def test_graphed_model_replays_fresh_inputs_and_counts_like_the_model(golden, golden_model, golden_context, runs):
    from xportrait_core.model.graph_capture import GraphedModel

    graphs = ReplayByRerunning()
    graphed = GraphedModel(golden_model, graphs)
    plain = runs["plain"]  # the plain model's run, already made: batching the passes changes only float noise
    replayed = _run(golden, graphed, golden_context, batch_passes=True, windows_per_batch=1)
    assert max_abs(plain.latents, replayed.latents) <= FP32_NOISE
    assert replayed.evaluation_counts == plain.evaluation_counts
    # one signature for the bank and one for the window forward, replayed for every step and window
    assert graphs.captures == graphed.signatures_captured == 2


def test_compiled_blocks_equal_eager_and_share_graphs_across_widths(golden, golden_model, golden_context):
    """compile_blocks' mechanism on part of the golden model (a ControlNet's ResBlocks and feed-forwards, and two
    motion modules of different widths) with the aot_eager backend: same numbers, and one graph serves several
    widths (dynamic parameter shapes)."""
    import copy

    import torch._dynamo
    from torch._dynamo.utils import counters

    from xportrait_core.model.compilation import COMPILED_BLOCKS, compile_modules

    data = golden("window_t500")
    pose, _ = golden_hints(golden, range(16))
    net = copy.deepcopy(golden_model.pose_control_model)
    motion = [copy.deepcopy(golden_model.unet.input_blocks_motion_module[i][0]) for i in (0, 2)]  # 32 and 64 wide
    inputs = [torch.randn(16, m.temporal_transformer.proj_in.in_features, 8, 8) for m in motion]
    with torch.no_grad():
        eager = net(data["x_t"], pose, data["t"], golden_context) + [m(x, 16) for m, x in zip(motion, inputs)]
        torch._dynamo.reset()
        counters.clear()
        wrapped = compile_modules([net, *motion], backend="aot_eager")
        compiled = net(data["x_t"], pose, data["t"], golden_context) + [m(x, 16) for m, x in zip(motion, inputs)]
    torch._dynamo.reset()
    assert wrapped == sum(isinstance(m, COMPILED_BLOCKS) for n in (net, *motion) for m in n.modules())
    assert max(max_abs(a, b) for a, b in zip(eager, compiled)) <= FP32_NOISE
    assert counters["stats"]["unique_graphs"] < wrapped / 2  # graphs are shared, not one per block
