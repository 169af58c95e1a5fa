"""The one seam between the node pack and ComfyUI: a host object that hands the nodes ComfyUI's mechanisms as data.

`current()` picks the host once per process: `ComfyHost` (below) inside ComfyUI, `standalone_host.StandaloneHost` for
the command line, tests and scripts. The nodes ask the host for everything that differs between the two: model
folders and files, devices and the automatic precision, the layer classes and the attention function the networks
are built with, the model object and its loading (with the LoRAs), the VAE object, progress, the Cancel check and
the guider core samplers drive. Every ComfyUI import of the pack is in this module, inside ComfyHost's methods.

Inside ComfyUI the host modules are already imported when the pack loads, so "running in ComfyUI" is read from
`sys.modules` instead of trying imports (importing `comfy.model_management` outside the server picks a device).
Names that newer ComfyUI releases rebind at start-up (`comfy.model_patcher.CoreModelPatcher`) are looked up when
used, never bound at import (docs/comfyui_compat.md).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xportrait_core.options import CompileMode, Precision

from .host_api import (  # noqa: F401 (the nodes read the folder names from the seam)
    CHECKPOINT_FOLDER,
    FOLDER_SUBPATHS,
    LANDMARK_FOLDER,
    LORA_FOLDER,
    STANDALONE_MODELS_ENV,
    Host,
    ManagedModel,
    SamplingProgress,
    model_extensions,
)

if TYPE_CHECKING:
    import torch

    from xportrait_core.pipeline import FrameHooks, LoraChoice, XPortraitModel

log = logging.getLogger(__name__)

UNET_KEY_PREFIX = "networks.unet."  # where ComfyHost's model object holds the main UNet (LoRA patch keys)


def in_comfyui() -> bool:
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


@functools.lru_cache(maxsize=1)
def current() -> Host:
    """The host of this process, chosen once: ComfyUI when the pack was loaded by it, else standalone."""
    if in_comfyui():
        return ComfyHost()
    from .standalone_host import StandaloneHost

    return StandaloneHost()


# ------------------------------------------------------------------------------------------------ ComfyUI
SCHEDULE_ONLY_MESSAGE = (
    "This MODEL is the noise schedule from the X-Portrait Guider's 'schedule' output, for scheduler nodes such as "
    "BasicScheduler; it cannot denoise by itself. Sample with SamplerCustomAdvanced and the guider's 'guider' "
    "output (KSampler and other nodes that sample a MODEL cannot run X-Portrait).")
CORE_CFG_OPTIONS = ("sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function")


class ComfyHost:
    """ComfyUI's mechanisms: folder_paths, comfy.model_management, comfy.ops and optimized_attention, the model
    patcher class core loaders use (CoreModelPatcher, looked up per call), comfy.lora patches, comfy.sd.VAE,
    ProgressBar and latent previews, the Cancel flag, CFGGuider."""

    # --------------------------------------------------------------------------------------------- model files
    def register_model_folders(self) -> None:
        """Declare `models/xportrait` and `models/xportrait/landmarks` to ComfyUI, keeping folders that
        extra_model_paths.yaml already added; only the extension sets are ours."""
        import folder_paths

        for folder in (CHECKPOINT_FOLDER, LANDMARK_FOLDER):
            folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, FOLDER_SUBPATHS[folder]))
            paths, _ = folder_paths.folder_names_and_paths[folder]
            folder_paths.folder_names_and_paths[folder] = (
                paths, model_extensions(folder, folder_paths.supported_pt_extensions))

    def list_model_files(self, folder: str) -> list[str]:
        import folder_paths

        return list(folder_paths.get_filename_list(folder))

    def model_file_path(self, folder: str, name: str) -> str:
        import folder_paths

        return folder_paths.get_full_path_or_raise(folder, name)

    # ----------------------------------------------------------------------------------- devices and memory
    def sampling_device(self) -> torch.device:
        import comfy.model_management as mm

        return mm.get_torch_device()

    def storage_device(self) -> torch.device:
        """Where a loaded model waits between runs: ComfyUI's offload device."""
        import comfy.model_management as mm

        return mm.unet_offload_device()

    def auto_precision(self) -> Precision:
        """ComfyUI's dtype choice for a UNet on its device (fp32 on CPU)."""
        import comfy.model_management as mm
        import torch

        names: dict[torch.dtype, Precision] = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
        return names[mm.unet_dtype(self.sampling_device(), supported_dtypes=list(names))]

    def layer_ops(self, weights_in_fp8: bool) -> Any:
        """ComfyUI's own `comfy.ops` (as its core models use), so its model patcher can load them partially, stream
        them under low VRAM (or dynamically) and cast stored weights per layer; `manual_cast` (always casting) when
        the weights are stored in fp8."""
        import comfy.ops

        base = comfy.ops.manual_cast if weights_in_fp8 else comfy.ops.disable_weight_init

        class ComfyLayers:
            Linear, Conv2d, GroupNorm = base.Linear, base.Conv2d, base.GroupNorm
            LayerNorm, Embedding = base.LayerNorm, base.Embedding
            casts_weights = weights_in_fp8

        return ComfyLayers

    def attention_function(self) -> Callable[..., torch.Tensor]:
        """ComfyUI's optimized_attention: the implementation its flags chose (--use-pytorch-cross-attention,
        --use-split-cross-attention, --use-quad-cross-attention, xformers), with the (q, k, v, heads) call shape
        of the pack's attention."""
        import comfy.ldm.modules.attention

        return comfy.ldm.modules.attention.optimized_attention

    # ------------------------------------------------------------------------------------------ the model
    def patcher_class(self) -> type:
        """The model patcher core loaders construct, read now: `CoreModelPatcher`, which ComfyUI's main.py rebinds
        to ModelPatcherDynamic when dynamic VRAM is on (newer releases); ModelPatcher where it is absent (0.3.64)."""
        import comfy.model_patcher

        return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)

    def manage(self, model: XPortraitModel, name: str, compile_mode: CompileMode = "off") -> ManagedModel:
        """The networks in ComfyUI's model management: the four denoising networks inside a core model object (the
        SD1.5 schedule, latent format and the activation memory core's prepare_sampling asks for) under the patcher
        class core loaders use; the VAE taken out of the networks into a `comfy.sd.VAE` (one copy, core VAE nodes
        take it). The weights were assigned into the networks when loaded (built on the meta device), which is the
        `assign=patcher.is_dynamic()` loading dynamic VRAM needs."""
        import comfy.model_management as mm

        vae = self._comfy_vae(model)
        patcher = self.patcher_class()(comfy_classes().model(model), load_device=mm.get_torch_device(),
                                       offload_device=mm.unet_offload_device())
        model.execution_device = patcher.load_device  # layers left on the offload device cast to it per call
        return ManagedModel(model, name, vae, patcher, compile_mode)

    @staticmethod
    def _comfy_vae(model: XPortraitModel) -> Any:
        import comfy.sd

        from .comfy_types import comfy_vae_config, vae_state_dict

        config = comfy_vae_config(model)
        return comfy.sd.VAE(sd=vae_state_dict(model.take_vae()), config=config)

    def with_loras(self, managed: ManagedModel, loras: Sequence[LoraChoice]) -> Any:
        """The patcher to load for a run: the model's own, or a clone carrying the LoRAs as core weight patches
        (comfy.lora.load_lora + add_patches), which core applies when loading (low-VRAM and dynamic streaming
        included) and takes off again from its backups when another clone loads, after a Cancel too."""
        import comfy.lora

        from xportrait_core.pipeline import lora_patch_targets

        chosen = [choice for choice in loras if choice.strength != 0]
        if not chosen:
            return managed.patcher
        patcher = managed.patcher.clone()
        for choice in chosen:
            tensors, targets = lora_patch_targets(managed.model, choice, UNET_KEY_PREFIX)
            patches = comfy.lora.load_lora(tensors, targets, log_missing=False)
            patched = patcher.add_patches(patches, choice.strength)
            log.info("LoRA %s: %d layers patched at strength %g", choice.name, len(patched), choice.strength)
        return patcher

    @contextlib.contextmanager
    def loaded(self, managed: ManagedModel, loras: Sequence[LoraChoice] = (),
               memory_required: int = 0) -> Iterator[XPortraitModel]:
        """The networks on the sampling device with the LoRAs patched in, for the block: `load_models_gpu` makes
        room for the weights plus ``memory_required`` bytes of activations (other models are offloaded) and, where
        the card is too small, loads the networks partially (the comfy.ops layers that do not fit are streamed per
        call). Afterwards the accelerator cache is emptied."""
        import comfy.model_management as mm

        mm.load_models_gpu([self.with_loras(managed, loras)], memory_required=memory_required)
        try:
            yield managed.model
        finally:
            mm.soft_empty_cache()

    def fully_loaded(self, managed: ManagedModel) -> bool:
        """Whether every weight stays on the sampling device while sampling: not after a low-VRAM (partial) load,
        nor under dynamic VRAM, whose weights are streamed per layer (CUDA graphs cannot record such copies)."""
        patcher = managed.patcher
        dynamic = bool(getattr(patcher, "is_dynamic", lambda: False)())
        return not dynamic and not getattr(patcher.model, "model_lowvram", False)

    # ------------------------------------------------------------------------ progress, interrupt, preview
    def check_interrupt(self) -> bool:
        """The Cancel button's flag raises ComfyUI's own InterruptProcessingException here, which must travel up
        unchanged."""
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()
        return False

    def frame_progress(self, what: str) -> FrameHooks:
        """A ProgressBar moved after every frame or small group of frames, the Cancel flag checked before each."""
        from xportrait_core.pipeline import FrameHooks

        bar = None

        def on_progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                import comfy.utils

                bar = comfy.utils.ProgressBar(total)
            bar.update_absolute(done, total)

        return FrameHooks(on_progress=on_progress, should_interrupt=self.check_interrupt)

    def sampling_progress(self, steps: int) -> SamplingProgress:
        import comfy.latent_formats
        import comfy.utils
        import latent_preview

        bar = comfy.utils.ProgressBar(steps * SamplingProgress.TICKS_PER_STEP)
        # x0 from the sampler is in the scaled (model) space, as the latent2rgb factors of SD15 expect.
        previewer = latent_preview.get_previewer(self.sampling_device(), comfy.latent_formats.SD15())
        return SamplingProgress(steps, bar, previewer)

    # ------------------------------------------------------------------------- the guider for core samplers
    def core_guider(self, run: Any) -> tuple[Any, Any]:
        """(GUIDER, MODEL) for SamplerCustomAdvanced and the scheduler nodes over `run` (nodes.guider_node.GuidedRun):
        a CFGGuider over the model's patcher (a clone with the run's LoRAs), whose model object carries the schedule
        (EPS, discrete, SD1.5 betas), latent format and latent processing that the samplers and scheduler nodes
        read. The same patcher is the MODEL for the scheduler nodes."""
        patcher = self.with_loras(run.model, run.loras)
        return comfy_classes().guider(patcher, run), patcher


@dataclass(frozen=True)
class ComfyClasses:
    model: type
    guider: type


@functools.lru_cache(maxsize=1)
def comfy_classes() -> ComfyClasses:
    """The classes that subclass ComfyUI's own (made once, on first use: ComfyUI is imported by then)."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.samplers
    import comfy.supported_models
    import torch

    from xportrait_core.pipeline import DDPM_TRAIN_STEPS, LINEAR_END, LINEAR_START

    class XPortraitNetworks(torch.nn.Module):
        """The networks the patcher loads: the four evaluated at every step. Not the text encoder (it runs once per
        run where it is stored) nor the VAE (ComfyUI's VAE object holds it)."""

        def __init__(self, networks: XPortraitModel) -> None:
            super().__init__()
            for name, network in zip(("unet", "appearance", "pose_control", "local_control"),
                                     networks.denoising_networks):
                self.add_module(name, network)

    class XPortraitComfyModel(comfy.model_base.BaseModel):
        """The model object core asks: SD1.5's sampling side (schedule, latent format) without a core UNet, holding
        the X-Portrait networks, and reporting one window's activation memory for the run being prepared
        (`planned_window`, set by the guider) to core's prepare_sampling."""

        def __init__(self, networks: XPortraitModel) -> None:
            config = comfy.supported_models.SD15({"disable_unet_model_creation": True})
            config.sampling_settings = {"beta_schedule": "linear", "linear_start": LINEAR_START,
                                        "linear_end": LINEAR_END, "timesteps": DDPM_TRAIN_STEPS}
            config.latent_format = comfy.latent_formats.SD15(scale_factor=networks.config.vae.scale_factor)
            super().__init__(config, comfy.model_base.ModelType.EPS)
            self.networks = XPortraitNetworks(networks)
            self.window_bytes = networks.window_activation_bytes  # bound method: no second module reference
            self.compute_dtype = networks.compute_dtype
            self.planned_window: tuple[int, int] | None = None  # (window, references) of the run being prepared

        def get_dtype(self) -> torch.dtype:
            return self.compute_dtype

        def memory_required(self, input_shape: Sequence[int], cond_shapes: Any = None, **_: Any) -> int:
            """Activation bytes of one window's two passes. Core asks with the noise shape, doubled for its CFG
            batch (sampler_helpers.estimate_memory); X-Portrait's passes are per window, whatever the frame count.
            Newer cores add keyword arguments (memory_efficient_attention), which do not change this estimate."""
            window, references = self.planned_window or (min(int(input_shape[0]), 16), 1)
            latent_size = (int(input_shape[-2]), int(input_shape[-1]))
            return int(self.window_bytes(latent_size, window, window, references))

        def apply_model(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(SCHEDULE_ONLY_MESSAGE)

    class XPortraitGuider(comfy.samplers.CFGGuider):
        """Core sampling with X-Portrait's denoiser. Core's `sample`/`outer_sample` run as for any guider:
        prepare_sampling loads the patcher (LoRA patches applied, room for `memory_required`), then pre_run,
        cleanup and cleanup_models. `predict_noise` returns the windowed, guided x0 estimate; `sample` only scopes
        the run (its latent shape checked, its sigmas and seed kept for the denoiser, which predict_noise builds on
        its first call, once core has loaded the networks)."""

        def __init__(self, patcher: Any, run: Any) -> None:
            super().__init__(patcher)
            self.run = run
            self._run_plan: tuple[list[float], int | None] | None = None  # (sigmas, seed) while sample runs
            self._denoise: Any = None

        def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                   disable_pbar=False, seed=None):
            self.run.check_latent(noise.shape)
            self.model_patcher.model.planned_window = self.run.window_plan
            self._run_plan = (sigmas.tolist(), seed)
            try:
                return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar,
                                      seed)
            finally:
                if self._denoise is not None:
                    self.run.log_denoiser(self._denoise)
                self._run_plan, self._denoise = None, None
                self.model_patcher.model.planned_window = None

        def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (the core's signature)
            hooks = [name for name in CORE_CFG_OPTIONS if model_options.get(name)]
            if hooks:
                raise ValueError(
                    f"X-Portrait Guider: this sampler needs ComfyUI's own CFG ({', '.join(hooks)}; the *_cfg_pp "
                    "samplers do), but X-Portrait's guidance runs inside its windowed denoiser. Pick a sampler "
                    "without _cfg_pp in KSamplerSelect.")
            if self._denoise is None:
                assert self._run_plan is not None, "core samplers call predict_noise inside sample"
                sigmas, run_seed = self._run_plan
                self._denoise = self.run.make_denoiser(self.run.model.model, sigmas, run_seed)
            return self._denoise(x, timestep)

    return ComfyClasses(model=XPortraitComfyModel, guider=XPortraitGuider)
