"""The one seam between the node pack and ComfyUI.

Every ComfyUI import of the pack lives here. Each function has a standalone answer for when the nodes run without
ComfyUI (tests, scripts): models come from `$XPORTRAIT_MODELS_DIR` (default `<pack>/models`) laid out like ComfyUI's
models folder, the device is CUDA when available, progress goes to the log, nothing can interrupt.

Inside ComfyUI the host modules are already imported when the pack loads, so "running in ComfyUI" is read from
`sys.modules` instead of trying imports (importing `comfy.model_management` outside the server picks a device).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xportrait_core.options import CompileMode, Precision

if TYPE_CHECKING:
    import torch

    from xportrait_core.pipeline import XPortraitModel

log = logging.getLogger(__name__)

PACK_ROOT = Path(__file__).resolve().parents[1]
STANDALONE_MODELS_ENV = "XPORTRAIT_MODELS_DIR"

CHECKPOINT_FOLDER = "xportrait"
LANDMARK_FOLDER = "xportrait_landmarks"
LORA_FOLDER = "loras"
# Where each folder lives under a models directory (ComfyUI's `models/` or the standalone one).
FOLDER_SUBPATHS = {CHECKPOINT_FOLDER: "xportrait", LANDMARK_FOLDER: "xportrait/landmarks", LORA_FOLDER: "loras"}
# ComfyUI's supported_pt_extensions as of 0.3.64, used only without ComfyUI; inside it the host's own set is read.
STANDALONE_PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
ORIGINAL_CHECKPOINT_EXTENSION = ".th"  # the released model_state-415001.th
LANDMARK_EXTENSIONS = frozenset({".dat"})  # dlib shape predictors


def in_comfyui() -> bool:
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


# ------------------------------------------------------------------------------------------------ model files
def _extensions(folder: str, pt_extensions: frozenset[str] | set[str]) -> set[str]:
    if folder == LANDMARK_FOLDER:
        return set(LANDMARK_EXTENSIONS)
    if folder == CHECKPOINT_FOLDER:
        return set(pt_extensions) | {ORIGINAL_CHECKPOINT_EXTENSION}
    return set(pt_extensions)


def register_model_folders() -> None:
    """Declare `models/xportrait` and `models/xportrait/landmarks` to ComfyUI, keeping folders that
    extra_model_paths.yaml already added; only the extension sets are ours."""
    if not in_comfyui():
        return
    import folder_paths

    for folder in (CHECKPOINT_FOLDER, LANDMARK_FOLDER):
        folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, FOLDER_SUBPATHS[folder]))
        paths, _ = folder_paths.folder_names_and_paths[folder]
        folder_paths.folder_names_and_paths[folder] = (paths, _extensions(folder, folder_paths.supported_pt_extensions))


def standalone_models_dir() -> Path:
    return Path(os.environ.get(STANDALONE_MODELS_ENV) or PACK_ROOT / "models")


def list_model_files(folder: str) -> list[str]:
    """Relative names (subfolders with '/') of the files of a model folder, for a drop-down."""
    if in_comfyui():
        import folder_paths

        return list(folder_paths.get_filename_list(folder))
    root = standalone_models_dir() / FOLDER_SUBPATHS[folder]
    if not root.is_dir():
        return []
    extensions = _extensions(folder, STANDALONE_PT_EXTENSIONS)
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                  if path.is_file() and path.suffix.lower() in extensions)


def model_file_path(folder: str, name: str) -> str:
    """Full path of a drop-down pick; FileNotFoundError naming the folder when it is not there."""
    if in_comfyui():
        import folder_paths

        return folder_paths.get_full_path_or_raise(folder, name)
    path = standalone_models_dir() / FOLDER_SUBPATHS[folder] / name
    if not path.is_file():
        raise FileNotFoundError(f"'{name}' is not in {path.parent}; place the file there and pick it again.")
    return str(path)


# ------------------------------------------------------------------------------------- devices and memory
def sampling_device() -> torch.device:
    import torch

    if in_comfyui():
        import comfy.model_management as mm

        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def storage_device() -> torch.device:
    """Where a loaded model waits between runs (ComfyUI's offload device; the sampling device standalone)."""
    if in_comfyui():
        import comfy.model_management as mm

        return mm.unet_offload_device()
    return sampling_device()


def auto_precision() -> Precision:
    """ComfyUI's dtype choice for a UNet on its device (fp32 on CPU); standalone fp16 on CUDA, fp32 elsewhere."""
    import torch

    names: dict[torch.dtype, Precision] = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    if in_comfyui():
        import comfy.model_management as mm

        return names[mm.unet_dtype(sampling_device(), supported_dtypes=list(names))]
    return "fp16" if sampling_device().type == "cuda" else "fp32"


def layer_ops(weights_in_fp8: bool) -> Any:
    """The layer classes to build the networks from. Inside ComfyUI: its own `comfy.ops` (as its core models use),
    so ModelPatcher can load them partially, stream them under low VRAM and cast stored weights per layer;
    `manual_cast` (always casting) when the weights are stored in fp8. Standalone: None, the core's default
    (torch layers; casting layers for fp8)."""
    if not in_comfyui():
        return None
    import comfy.ops

    base = comfy.ops.manual_cast if weights_in_fp8 else comfy.ops.disable_weight_init

    class ComfyLayers:
        Linear, Conv2d, GroupNorm = base.Linear, base.Conv2d, base.GroupNorm
        LayerNorm, Embedding = base.LayerNorm, base.Embedding
        casts_weights = weights_in_fp8

    return ComfyLayers


def _patchable(model: XPortraitModel) -> Any:
    """The container ModelPatcher manages: the four denoising networks and the VAE (the init video is encoded
    while sampling), not the text encoder, which runs once per run where it is stored. A plain module, because
    ModelPatcher writes `.device` and bookkeeping attributes onto it (XPortraitModel.device is a property)."""
    import torch

    class XPortraitNetworks(torch.nn.Module):
        def __init__(self, networks: XPortraitModel) -> None:
            super().__init__()
            for name, network in zip(("unet", "appearance", "pose_control", "local_control"),
                                     networks.denoising_networks):
                self.add_module(name, network)
            self.add_module("vae", networks.first_stage_model)

    return XPortraitNetworks(model)


@dataclass
class ManagedModel:
    """What flows on an XPORTRAIT_MODEL link: the networks, the file they came from, and ComfyUI's
    ModelPatcher around them (None without ComfyUI)."""

    model: XPortraitModel
    name: str
    patcher: Any = field(default=None, repr=False)
    compile_mode: CompileMode = "off"


def manage(model: XPortraitModel, name: str, compile_mode: CompileMode = "off") -> ManagedModel:
    if not in_comfyui():
        return ManagedModel(model, name, compile_mode=compile_mode)
    import comfy.model_management as mm
    import comfy.model_patcher

    patcher = comfy.model_patcher.ModelPatcher(_patchable(model), load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    model.execution_device = patcher.load_device  # layers left on the offload device cast to it per call
    return ManagedModel(model, name, patcher, compile_mode)


def fully_loaded(managed: ManagedModel) -> bool:
    """Whether every weight is on the sampling device (inside ComfyUI a low-VRAM load streams some from the offload
    device per call; CUDA graphs cannot record such copies)."""
    if managed.patcher is None:
        return True
    return not getattr(managed.patcher.model, "model_lowvram", False)


@contextlib.contextmanager
def loaded(managed: ManagedModel, memory_required: int = 0) -> Iterator[XPortraitModel]:
    """The networks on the sampling device for the block. Inside ComfyUI, `load_models_gpu` makes room for the
    weights plus ``memory_required`` bytes of activations (other models are offloaded) and, where the card is too
    small, loads the networks partially: their comfy.ops layers that do not fit stay on the offload device and are
    streamed per call. Afterwards the accelerator cache is emptied."""
    if managed.patcher is None:
        yield managed.model
        return
    import comfy.model_management as mm

    mm.load_models_gpu([managed.patcher], memory_required=memory_required)
    try:
        yield managed.model
    finally:
        mm.soft_empty_cache()


def make_vae(model: XPortraitModel) -> Any:
    """A VAE object over the checkpoint's own VAE weights: ComfyUI's `comfy.sd.VAE` inside ComfyUI (so core
    VAE Encode/Decode nodes take it), `pipeline.ImageVAE` (same contract) outside."""
    from .comfy_types import comfy_vae_config, vae_state_dict

    if not in_comfyui():
        from xportrait_core.pipeline import ImageVAE

        return ImageVAE(model)
    import comfy.sd

    return comfy.sd.VAE(sd=vae_state_dict(model), config=comfy_vae_config(model))


# ------------------------------------------------------------------------------- progress, interrupt, preview
def check_interrupt() -> bool:
    """The sampler's should_interrupt hook. Inside ComfyUI the Cancel button's flag raises ComfyUI's own
    InterruptProcessingException here, which must travel up unchanged; standalone nothing interrupts."""
    if in_comfyui():
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()
    return False


def frame_progress(what: str) -> Any:
    """FrameHooks for a node that works frame by frame (alignment, landmarks, local patches, encoding): inside
    ComfyUI a ProgressBar moved after every frame or small group of frames and the Cancel flag checked before
    each (it raises ComfyUI's InterruptProcessingException); standalone progress goes to the debug log and nothing
    interrupts."""
    from xportrait_core.pipeline import FrameHooks

    bar = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if not in_comfyui():
            log.debug("%s: %d/%d", what, done, total)
            return
        if bar is None:
            import comfy.utils

            bar = comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)

    return FrameHooks(on_progress=on_progress, should_interrupt=check_interrupt)


class SamplingProgress:
    """Progress of one sampling run: each step is TICKS_PER_STEP ticks, filled in proportion to the network rows
    evaluated so far in the step (appearance net, each ControlNet, each UNet forward), so the bar moves within the
    first window; a latent preview of the first frame after each step when ComfyUI's preview method allows one."""

    TICKS_PER_STEP = 100

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.total = steps * self.TICKS_PER_STEP
        self.value = 0
        self._bar = None
        self._previewer = None
        if in_comfyui():
            import comfy.latent_formats
            import comfy.utils
            import latent_preview

            self._bar = comfy.utils.ProgressBar(self.total)
            # x0 from the core sampler is in the scaled (model) space, as the latent2rgb factors of SD15 expect.
            self._previewer = latent_preview.get_previewer(sampling_device(), comfy.latent_formats.SD15())

    def rows_done(self, step: int, rows: int, rows_per_step: int) -> None:
        self.value = step * self.TICKS_PER_STEP + self.TICKS_PER_STEP * rows // max(rows_per_step, 1)
        if self._bar is not None:
            self._bar.update_absolute(self.value, self.total)

    def step_done(self, step: int, total_steps: int, denoised: torch.Tensor) -> None:
        self.value = (step + 1) * self.TICKS_PER_STEP
        log.debug("X-Portrait sampling: step %d/%d", step + 1, total_steps)
        if self._bar is None:
            return
        preview = None
        if self._previewer is not None:
            preview = self._previewer.decode_latent_to_preview_image("JPEG", denoised[:1])
        self._bar.update_absolute(self.value, self.total, preview)


# ------------------------------------------------------------------------- the guider for core samplers
# Kept apart from the networks' own ModelPatcher (`manage`, `loaded`): the guider hands the core samplers a patcher
# around a schedule-only core BaseModel, and loads the networks through `loaded` while the sampler runs.
SCHEDULE_ONLY_MESSAGE = (
    "This MODEL is the noise schedule from the X-Portrait Guider's 'schedule' output, for scheduler nodes such as "
    "BasicScheduler; it cannot denoise by itself. Sample with SamplerCustomAdvanced and the guider's 'guider' "
    "output (KSampler and other nodes that sample a MODEL cannot run X-Portrait).")
CORE_CFG_OPTIONS = ("sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function")


def core_guider(run: Any) -> tuple[Any, Any]:
    """(GUIDER, MODEL) for SamplerCustomAdvanced and the scheduler nodes over `run` (nodes.guider_node.GuidedRun).

    The MODEL is a ModelPatcher around a core SD1.5 BaseModel without a diffusion model: the schedule (EPS,
    discrete, SD1.5 betas), latent format and latent processing that SamplerCustomAdvanced, the samplers and the
    scheduler nodes read. Standalone (no core samplers) the run itself is the guider and there is no MODEL."""
    if not in_comfyui():
        return run, None
    import comfy.model_management as mm
    import comfy.model_patcher

    guider_class, schedule_class = _guider_classes()
    patcher = comfy.model_patcher.ModelPatcher(schedule_class(run.scale_factor), load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    return guider_class(patcher, run), patcher


@functools.lru_cache(maxsize=1)
def _guider_classes() -> tuple[type, type]:
    import comfy.latent_formats
    import comfy.model_base
    import comfy.sampler_helpers
    import comfy.samplers
    import comfy.supported_models
    import torch

    from xportrait_core.pipeline import DDPM_TRAIN_STEPS, LINEAR_END, LINEAR_START

    class XPortraitSchedule(comfy.model_base.BaseModel):
        """SD1.5's sampling side without its UNet: what core samplers and scheduler nodes read from a model."""

        def __init__(self, scale_factor: float) -> None:
            config = comfy.supported_models.SD15({"disable_unet_model_creation": True})
            config.sampling_settings = {"beta_schedule": "linear", "linear_start": LINEAR_START,
                                        "linear_end": LINEAR_END, "timesteps": DDPM_TRAIN_STEPS}
            config.latent_format = comfy.latent_formats.SD15(scale_factor=scale_factor)
            super().__init__(config, comfy.model_base.ModelType.EPS)

        def get_dtype(self) -> torch.dtype:
            return torch.float32

        def apply_model(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(SCHEDULE_ONLY_MESSAGE)

    class XPortraitGuider(comfy.samplers.CFGGuider):
        """Core sampling with X-Portrait's denoiser: `outer_sample` loads the networks (LoRAs merged) for the run
        instead of loading the patcher's model, `predict_noise` returns the windowed, guided x0 estimate."""

        def __init__(self, schedule_patcher: Any, run: Any) -> None:
            super().__init__(schedule_patcher)
            self.run = run
            self._denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # set by outer_sample

        def outer_sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                         disable_pbar=False, seed=None):
            self.run.check_latent(noise.shape)
            device = self.model_patcher.load_device
            if denoise_mask is not None:
                denoise_mask = comfy.sampler_helpers.prepare_mask(denoise_mask, noise.shape, device)
            with self.run.denoiser(sigmas.tolist(), seed) as denoiser:
                self.inner_model, self._denoise = self.model_patcher.model, denoiser
                try:
                    return self.inner_sample(noise.to(device), latent_image.to(device), device, sampler,
                                             sigmas.to(device), denoise_mask, callback, disable_pbar, seed)
                finally:
                    self._denoise = None
                    del self.inner_model

        def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (the core's signature)
            hooks = [name for name in CORE_CFG_OPTIONS if model_options.get(name)]
            if hooks:
                raise ValueError(
                    f"X-Portrait Guider: this sampler needs ComfyUI's own CFG ({', '.join(hooks)}; the *_cfg_pp "
                    "samplers do), but X-Portrait's guidance runs inside its windowed denoiser. Pick a sampler "
                    "without _cfg_pp in KSamplerSelect.")
            assert self._denoise is not None, "core samplers call predict_noise inside outer_sample"
            return self._denoise(x, timestep)

    return XPortraitGuider, XPortraitSchedule
