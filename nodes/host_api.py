"""What the two hosts of the nodes share (`host.ComfyHost`, `standalone_host.StandaloneHost`): the `Host` protocol the
nodes program against, the model folders, the value on an XPORTRAIT_MODEL link and the sampling progress. No ComfyUI
import here."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from xportrait_core.options import CompileMode, Precision

if TYPE_CHECKING:
    import torch

    from xportrait_core.pipeline import FrameHooks, LoraChoice, XPortraitModel

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


def model_extensions(folder: str, pt_extensions: frozenset[str] | set[str]) -> set[str]:
    if folder == LANDMARK_FOLDER:
        return set(LANDMARK_EXTENSIONS)
    if folder == CHECKPOINT_FOLDER:
        return set(pt_extensions) | {ORIGINAL_CHECKPOINT_EXTENSION}
    return set(pt_extensions)


@dataclass
class ManagedModel:
    """What flows on an XPORTRAIT_MODEL link: the networks, the file they came from, the VAE object of the graph
    (the one copy of the checkpoint's VAE: the Reference node and the Sampler's init images encode through it), and
    the host's model manager around the networks (ComfyUI's ModelPatcher; None standalone)."""

    model: XPortraitModel
    name: str
    vae: Any = field(default=None, repr=False)
    patcher: Any = field(default=None, repr=False)
    compile_mode: CompileMode = "off"


class SamplingProgress:
    """Progress of one sampling run: each step is TICKS_PER_STEP ticks, filled in proportion to the network rows
    evaluated so far in the step (appearance net, each ControlNet, each UNet forward), so the bar moves within the
    first window; a latent preview of the first frame after each step when the host gives a previewer. ``bar``: the
    host's progress bar (update_absolute(value, total, preview)), None to log only."""

    TICKS_PER_STEP = 100

    def __init__(self, steps: int, bar: Any = None, previewer: Any = None) -> None:
        self.steps = steps
        self.total = steps * self.TICKS_PER_STEP
        self.value = 0
        self._bar = bar
        self._previewer = previewer

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


class Host(Protocol):
    """What the nodes need from their host. Each method has one answer per host; nodes never ask which host runs."""

    def register_model_folders(self) -> None: ...
    def list_model_files(self, folder: str) -> list[str]: ...
    def model_file_path(self, folder: str, name: str) -> str: ...
    def sampling_device(self) -> torch.device: ...
    def storage_device(self) -> torch.device: ...
    def auto_precision(self) -> Precision: ...
    def layer_ops(self, weights_in_fp8: bool) -> Any: ...
    def attention_function(self) -> Callable[..., torch.Tensor] | None: ...
    def manage(self, model: XPortraitModel, name: str, compile_mode: CompileMode = "off") -> ManagedModel: ...
    def loaded(self, managed: ManagedModel, loras: Sequence[LoraChoice] = (),
               memory_required: int = 0) -> contextlib.AbstractContextManager[XPortraitModel]: ...
    def fully_loaded(self, managed: ManagedModel) -> bool: ...
    def check_interrupt(self) -> bool: ...
    def frame_progress(self, what: str) -> FrameHooks: ...
    def sampling_progress(self, steps: int) -> SamplingProgress: ...
    def core_guider(self, run: Any) -> tuple[Any, Any]: ...
