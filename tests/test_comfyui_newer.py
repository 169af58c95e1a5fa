"""What newer ComfyUI releases do with a custom node's model, emulated with stand-in `comfy` modules (ComfyUI cannot
be imported here; tests/test_comfyui_*.py run the real 0.3.64). Each stand-in follows the newer source, read from the
stored Comfy-Org/ComfyUI snapshots (version 0.38.1 by comfyui_version.py at commit 20ca544e; the files' commits are
named where used), and where 0.3.64 differs its file under /work/env/ComfyUI says how:

- main.py (commit 02018c7e): with dynamic VRAM on, `comfy.model_patcher.CoreModelPatcher =
  comfy.model_patcher.ModelPatcherDynamic`, at start-up, after `comfy.model_patcher` was first imported.
- comfy/model_patcher.py (commit 08d0e510): `CoreModelPatcher = ModelPatcher` at the end of the module,
  `ModelPatcherDynamic(ModelPatcher).is_dynamic()` is True; clone() shares the model, add_patches(patches,
  strength_patch) returns the keys. 0.3.64's comfy/model_patcher.py has no CoreModelPatcher.
- comfy/sd.py and comfy/clip_vision.py (newer): weights loaded with `load_state_dict(..., assign=patcher.is_dynamic())`.
- comfy/sampler_helpers.py (commit 53757775): estimate_memory asks `model.model.memory_required(shape, cond_shapes=...,
  memory_efficient_attention=...)` (through call_model_memory_required) with the noise batch doubled, then
  load_models_gpu with that memory; 0.3.64's asks without the last keyword.
- comfy/samplers.py (0.3.64, and the newer file at commit e0d4ea77 keeps the shape): CFGGuider.sample ->
  outer_sample (prepare_sampling, pre_run, inner_sample -> sampler -> guider(x, sigma, model_options, seed) ->
  predict_noise, cleanup).
- comfy/lora.py: load_lora(lora, to_load) -> {model key: patch}.
"""
from __future__ import annotations

import enum
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from nodes import host
from nodes.loader_nodes import LoadModel
from xportrait_core.model.checkpoint import save_model_checkpoint
from xportrait_core.model.lora import LoraChoice
from xportrait_core.model.tiny_model import build_random_model
from xportrait_core.networks.layer_ops import TorchLayers

CHECKPOINT = "tiny.safetensors"
TO_Q_KOHYA = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # a layer of the tiny UNet


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False, fast_disk=False):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        self.patches: dict = {}
        self.model_options: dict = {"transformer_options": {}}
        self.events: list = []
        if getattr(model, "device", None) is None:
            model.device = offload_device

    def is_dynamic(self):
        return False

    def clone(self):
        twin = self.__class__(self.model, self.load_device, self.offload_device)
        twin.patches = {key: list(value) for key, value in self.patches.items()}
        return twin

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        for key, patch in patches.items():
            self.patches.setdefault(key, []).append((strength_patch, patch))
        return list(patches)

    def pre_run(self):
        self.events.append("pre_run")

    def cleanup(self):
        self.events.append("cleanup")


class ModelPatcherDynamic(ModelPatcher):
    def is_dynamic(self):
        return True


class CFGGuider:
    """0.3.64's comfy/samplers.py CFGGuider, reduced to the calls a guider subclass meets."""

    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options

    def __call__(self, *args, **kwargs):
        return self.outer_predict_noise(*args, **kwargs)

    def outer_predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006
        return self.predict_noise(x, timestep, model_options, seed)

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006
        raise NotImplementedError("core's CFG")

    def outer_sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                     disable_pbar=False, seed=None):
        management = sys.modules["comfy.model_management"]
        patcher = self.model_patcher
        shape = [noise.shape[0] * 2, *noise.shape[1:]]  # sampler_helpers.estimate_memory
        memory = patcher.model.memory_required(shape, cond_shapes={}, memory_efficient_attention=None)
        management.load_models_gpu([patcher], memory_required=memory)
        self.inner_model = patcher.model
        patcher.pre_run()
        try:
            extra_args = {"model_options": {"transformer_options": {"sample_sigmas": sigmas}}, "seed": seed}
            return sampler(self, sigmas, extra_args, noise + latent_image)
        finally:
            patcher.cleanup()

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        self.conds = {}
        return self.outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)


def euler(model, sigmas, extra_args, x):
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        denoised = model(x, sigma, **extra_args)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x


@pytest.fixture
def newer_comfyui(monkeypatch, tmp_path):
    """Stand-in modules with a newer ComfyUI's behaviour (see the module docstring); the pack's host is ComfyHost."""
    def module(name, **members):
        made = types.ModuleType(name)
        made.__dict__.update(members)
        monkeypatch.setitem(sys.modules, name, made)
        return made

    models = tmp_path / "models"
    (models / "xportrait").mkdir(parents=True)
    save_model_checkpoint(build_random_model(seed=0), models / "xportrait" / CHECKPOINT)
    module("folder_paths", get_full_path_or_raise=lambda folder, name: str(models / "xportrait" / name))
    loads = []
    management = module("comfy.model_management", get_torch_device=lambda: torch.device("cpu"),
                        unet_offload_device=lambda: torch.device("cpu"),
                        unet_dtype=lambda device, supported_dtypes: torch.float32,
                        load_models_gpu=lambda patchers, memory_required=0: loads.append((patchers, memory_required)),
                        soft_empty_cache=lambda: None, throw_exception_if_processing_interrupted=lambda: None)
    patcher = module("comfy.model_patcher", ModelPatcher=ModelPatcher, ModelPatcherDynamic=ModelPatcherDynamic,
                     CoreModelPatcher=ModelPatcher)
    attention_calls = []

    def optimized_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False):
        attention_calls.append(q.shape)
        batch, tokens, width = q.shape
        split = [t.reshape(t.shape[0], t.shape[1], heads, width // heads).transpose(1, 2) for t in (q, k, v)]
        return F.scaled_dot_product_attention(*split).transpose(1, 2).reshape(batch, tokens, width)

    vaes = []

    class VAE:
        def __init__(self, sd=None, config=None):
            self.sd, self.config = sd, config
            vaes.append(self)

    class ModelType(enum.Enum):
        EPS = 1

    class BaseModel(torch.nn.Module):
        def __init__(self, model_config, model_type=ModelType.EPS, device=None):
            super().__init__()
            self.model_config, self.latent_format, self.device = model_config, model_config.latent_format, device

    class SD15:
        def __init__(self, unet_config):
            self.unet_config, self.sampling_settings, self.latent_format = unet_config, {}, None

    lora_maps = []

    def load_lora(lora, to_load, log_missing=True):
        lora_maps.append(dict(to_load))
        return {target: ("lora", source) for source, target in to_load.items()}

    comfy = module("comfy", model_management=management, model_patcher=patcher)
    for name, members in {"sd": {"VAE": VAE}, "lora": {"load_lora": load_lora},
                          "ops": {"disable_weight_init": TorchLayers, "manual_cast": TorchLayers},
                          "model_base": {"BaseModel": BaseModel, "ModelType": ModelType},
                          "supported_models": {"SD15": SD15},
                          "latent_formats": {"SD15": lambda scale_factor=0.18215: ("SD15", scale_factor)},
                          "samplers": {"CFGGuider": CFGGuider}}.items():
        setattr(comfy, name, module(f"comfy.{name}", **members))
    attention = module("comfy.ldm.modules.attention", optimized_attention=optimized_attention)
    comfy.ldm = module("comfy.ldm", modules=module("comfy.ldm.modules", attention=attention))
    host.current.cache_clear()
    host.comfy_classes.cache_clear()
    yield types.SimpleNamespace(patcher=patcher, loads=loads, vaes=vaes, attention_calls=attention_calls,
                                lora_maps=lora_maps, models=models)
    host.current.cache_clear()
    host.comfy_classes.cache_clear()


def test_a_core_model_patcher_rebound_to_a_dynamic_subclass_is_the_class_the_model_is_loaded_with(newer_comfyui,
                                                                                                  monkeypatch):
    """main.py rebinds CoreModelPatcher after the pack's modules were imported (and the host chosen): the host
    reads it when it builds the patcher, and the weights are assigned as core loaders do when is_dynamic()."""
    assert isinstance(host.current(), host.ComfyHost)
    newer_comfyui.patcher.CoreModelPatcher = ModelPatcherDynamic  # what main.py does at start-up
    assigns = []
    original = torch.nn.Module.load_state_dict

    def recording(self, state_dict, strict=True, assign=False):
        assigns.append(assign)
        return original(self, state_dict, strict=strict, assign=assign)

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", recording)
    managed, vae = LoadModel().load(CHECKPOINT, "auto", "auto")
    assert type(managed.patcher) is ModelPatcherDynamic and managed.patcher.is_dynamic()
    assert assigns == [True]
    assert not host.current().fully_loaded(managed)  # dynamic weights are streamed: no CUDA graphs


def test_without_core_model_patcher_as_in_0_3_64_the_plain_model_patcher_is_used(newer_comfyui):
    del newer_comfyui.patcher.CoreModelPatcher
    managed, _ = LoadModel().load(CHECKPOINT, "auto", "auto")
    assert type(managed.patcher) is ModelPatcher and host.current().fully_loaded(managed)


def test_the_vae_is_held_once_by_comfyuis_vae_object_and_the_patcher_holds_the_four_networks(newer_comfyui):
    expected = {key for key in build_random_model(seed=0).state_dict() if key.startswith("first_stage_model.")}
    managed, vae = LoadModel().load(CHECKPOINT, "auto", "auto")
    assert newer_comfyui.vaes == [vae] and managed.vae is vae
    assert {f"first_stage_model.{key}" for key in vae.sd} == expected
    assert not hasattr(managed.model, "first_stage_model")
    assert {name for name, _ in managed.patcher.model.networks.named_children()} == {
        "unet", "appearance", "pose_control", "local_control"}


def test_the_networks_compute_attention_with_comfyuis_optimized_attention_and_the_same_result(newer_comfyui):
    managed, _ = LoadModel().load(CHECKPOINT, "auto", "auto")
    own = build_random_model(seed=0)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t, context = torch.tensor([500, 500]), torch.randn(1, 77, own.config.unet.context_dim)
    with torch.no_grad():
        ours = managed.model.eps_unconditional(x, t, context, frames_per_video=2)
        assert newer_comfyui.attention_calls  # every spatial and temporal attention went through the host's
        torch.testing.assert_close(ours, own.eps_unconditional(x, t, context, frames_per_video=2),
                                   rtol=1e-5, atol=1e-5)
    assert managed.model.attention_backend == "optimized_attention"
    newer_comfyui.attention_calls.clear()
    chosen, _ = LoadModel().load(CHECKPOINT, "auto", "sdpa")  # a backend named explicitly is the pack's own
    with torch.no_grad():
        chosen.model.eps_unconditional(x, t, context, frames_per_video=2)
    assert newer_comfyui.attention_calls == [] and chosen.model.attention_backend == "sdpa"


class StubRun:
    """The GuidedRun calls the guider makes, recorded."""

    def __init__(self, managed, loras=()):
        self.model, self.loras, self.window_plan = managed, tuple(loras), (12, 2)
        self.checked, self.made, self.logged = [], [], []

    def check_latent(self, shape):
        self.checked.append(tuple(shape))

    def make_denoiser(self, networks, sigmas, seed):
        self.made.append((networks, sigmas, seed))
        return lambda x, sigma: x * 0.5

    def log_denoiser(self, denoiser):
        self.logged.append(denoiser)


def test_core_runs_its_own_sample_and_outer_sample_around_the_guiders_predict_noise(newer_comfyui):
    managed, _ = LoadModel().load(CHECKPOINT, "auto", "auto")
    run = StubRun(managed)
    guider, schedule = host.current().core_guider(run)
    assert schedule is guider.model_patcher is managed.patcher  # no LoRA: the model's own patcher
    overridden = {name for name in type(guider).__dict__ if not name.startswith("__")}
    assert overridden == {"sample", "predict_noise"}  # outer_sample, inner_sample: core's
    noise, sigmas = torch.randn(20, 4, 8, 8), torch.tensor([2.0, 1.0, 0.0])
    out = guider.sample(noise, torch.zeros_like(noise), euler, sigmas, seed=7)
    assert out.shape == noise.shape and run.checked == [tuple(noise.shape)]
    assert run.made == [(managed.model, [2.0, 1.0, 0.0], 7)]  # one denoiser per run, built once core loaded
    ((patchers, memory),) = newer_comfyui.loads
    assert patchers == [managed.patcher] and managed.patcher.events == ["pre_run", "cleanup"]
    assert memory == managed.model.window_activation_bytes((8, 8), 12, 12, 2) > 0  # the run's window, 2 refs
    assert managed.patcher.model.planned_window is None and len(run.logged) == 1
    guider.sample(noise, torch.zeros_like(noise), euler, sigmas, seed=8)
    assert [seed for _, _, seed in run.made] == [7, 8]  # a new run, a new denoiser


def test_loras_become_core_patches_on_a_clone_of_the_models_patcher(newer_comfyui, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "tiny_lora.safetensors"
    save_file({f"{TO_Q_KOHYA}.lora_down.weight": torch.randn(2, 32),
               f"{TO_Q_KOHYA}.lora_up.weight": torch.randn(32, 2)}, str(path))
    managed, _ = LoadModel().load(CHECKPOINT, "auto", "auto")
    key = "networks.unet.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    seam = host.current()
    guider, schedule = seam.core_guider(StubRun(managed, [LoraChoice(str(path), 0.5)]))
    assert newer_comfyui.lora_maps == [{TO_Q_KOHYA: key}]
    assert schedule is guider.model_patcher and schedule is not managed.patcher
    assert schedule.model is managed.patcher.model
    assert schedule.patches == {key: [(0.5, ("lora", TO_Q_KOHYA))]} and managed.patcher.patches == {}
    assert seam.core_guider(StubRun(managed, [LoraChoice(str(path), 0.0)]))[1] is managed.patcher
    with seam.loaded(managed, [LoraChoice(str(path), 1.0)], memory_required=123) as networks:
        (loaded_patchers, memory), = newer_comfyui.loads
        assert networks is managed.model and memory == 123
        assert loaded_patchers[0].patches == {key: [(1.0, ("lora", TO_Q_KOHYA))]}
    weights = managed.model.unet.state_dict()
    assert torch.equal(weights[key.removeprefix("networks.unet.")],
                       build_random_model(seed=0).unet.state_dict()[key.removeprefix("networks.unet.")])
