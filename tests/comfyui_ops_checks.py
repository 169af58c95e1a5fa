"""Checks of the networks built from ComfyUI's own layer classes, run with ComfyUI's Python by
tests/test_comfyui_ops.py (ComfyUI's modules cannot be imported into the test interpreter):

    COMFYUI_PATH=... python tests/comfyui_ops_checks.py      # prints one JSON object

- the golden model built with comfy.ops layers gives the same eps as with torch layers;
- ModelPatcher reports the networks' real size;
- a partial (low-VRAM) load, where ComfyUI streams the layers that do not fit, gives the same eps;
- fp8 storage through comfy.ops.manual_cast loads and runs;
- the networks computing attention with ComfyUI's optimized_attention give the same eps as the pack's SDPA.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = PACK_ROOT / "tests" / "golden"
GOLDEN_TEXT_HEADS = 2
PARTIAL_SHARE = 0.3  # load about this share of the weights; the rest is streamed per layer


def _import_pack_as_comfyui_does():
    """The pack as a package under a name of its own (ComfyUI's `nodes` module would shadow ours)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("xportrait_pack", PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # this machine has no GPU; ComfyUI must not look for one
    import comfy.model_management  # noqa: F401 - `host.in_comfyui()` reads these two from sys.modules
    import folder_paths  # noqa: F401
    import torch
    from safetensors.torch import load_file

    pack = _import_pack_as_comfyui_does()
    host = pack.nodes.host.current()
    from xportrait_core.model.checkpoint import load_model

    assert isinstance(host, pack.nodes.host.ComfyHost)
    inputs = load_file(str(GOLDEN / "window_t500.safetensors"))
    x, t, refs = inputs["x_t"], inputs["t"], inputs["image_control"]
    hint = torch.rand(16, 3, 8 * x.shape[-2], 8 * x.shape[-1], generator=torch.Generator().manual_seed(0)) * 2 - 1

    def load(precision: str, ops):
        model, _ = load_model(GOLDEN / "tiny_weights.safetensors", precision=precision, attention_backend="sdpa",
                              text_num_heads=GOLDEN_TEXT_HEADS, ops=ops)
        return model

    def eps(model) -> tuple:
        with torch.no_grad():
            context = model.encode_empty_prompt()
            bank = model.write_reference_bank(refs, t, context)
            return model.eps_both_passes(x, t, context, context, bank, hint, hint)

    plain = load("fp32", None)
    comfy_built = load("fp32", host.layer_ops(weights_in_fp8=False))
    reference = eps(plain)
    layer_class = type(comfy_built.unet.out[2])
    result = {"layer_class": layer_class.__module__ + "." + layer_class.__qualname__}
    result["ops_max_abs"] = max((a - b).abs().max().item() for a, b in zip(reference, eps(comfy_built)))

    attention_model = load("fp32", host.layer_ops(weights_in_fp8=False))
    attention_model.use_attention_function(host.attention_function(), "comfyui")
    result["attention_max_abs"] = max((a - b).abs().max().item() for a, b in zip(reference, eps(attention_model)))

    managed = host.manage(comfy_built, "tiny")  # the VAE goes to a comfy.sd.VAE; the patcher holds the four networks
    expected = sum(t.numel() * t.element_size() for net in comfy_built.denoising_networks
                   for t in net.state_dict().values())
    expected += sum(t.numel() * t.element_size() for t in managed.patcher.model.model_sampling.state_dict().values())
    result["vae_class"] = type(managed.vae).__module__ + "." + type(managed.vae).__qualname__
    result["patcher_size"], result["expected_size"] = managed.patcher.model_size(), expected

    budget = int(PARTIAL_SHARE * expected)
    managed.patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=budget)
    streamed = [m for m in managed.patcher.model.modules() if getattr(m, "comfy_cast_weights", False)]
    result["streamed_layers"] = len(streamed)
    result["lowvram"] = bool(getattr(managed.patcher.model, "model_lowvram", False))
    result["partial_max_abs"] = max((a - b).abs().max().item() for a, b in zip(reference, eps(comfy_built)))
    managed.patcher.unpatch_model(device_to=torch.device("cpu"))

    fp8 = load("fp8_e4m3fn", host.layer_ops(weights_in_fp8=True))
    conv = fp8.unet.out[2]
    result["fp8_weight_dtype"] = str(conv.weight.dtype)
    fp8_eps = eps(fp8)[0]
    result["fp8_relative"] = ((fp8_eps - reference[0]).norm() / reference[0].norm()).item()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
