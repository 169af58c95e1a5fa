"""The host of the nodes without ComfyUI (tests, scripts): the pack's own answers to what `host.ComfyHost` takes from
ComfyUI. Models come from `$XPORTRAIT_MODELS_DIR` (default `<pack>/models`) laid out like ComfyUI's models folder,
the device is CUDA when available, the networks are torch layers with the pack's own attention, LoRAs are merged
into the weights for a run (and restored after it), progress goes to the log, nothing interrupts."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xportrait_core.options import CompileMode, Precision

from .host_api import (
    FOLDER_SUBPATHS,
    PACK_ROOT,
    STANDALONE_MODELS_ENV,
    STANDALONE_PT_EXTENSIONS,
    ManagedModel,
    SamplingProgress,
    model_extensions,
)

if TYPE_CHECKING:
    import torch

    from xportrait_core.pipeline import FrameHooks, LoraChoice, XPortraitModel

log = logging.getLogger(__name__)


def standalone_models_dir() -> Path:
    return Path(os.environ.get(STANDALONE_MODELS_ENV) or PACK_ROOT / "models")


class StandaloneHost:
    def register_model_folders(self) -> None:
        """Nothing to declare: the folders are read where they are."""

    def list_model_files(self, folder: str) -> list[str]:
        root = standalone_models_dir() / FOLDER_SUBPATHS[folder]
        if not root.is_dir():
            return []
        extensions = model_extensions(folder, STANDALONE_PT_EXTENSIONS)
        return sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                      if path.is_file() and path.suffix.lower() in extensions)

    def model_file_path(self, folder: str, name: str) -> str:
        path = standalone_models_dir() / FOLDER_SUBPATHS[folder] / name
        if not path.is_file():
            raise FileNotFoundError(f"'{name}' is not in {path.parent}; place the file there and pick it again.")
        return str(path)

    def sampling_device(self) -> torch.device:
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def storage_device(self) -> torch.device:
        return self.sampling_device()

    def auto_precision(self) -> Precision:
        return "fp16" if self.sampling_device().type == "cuda" else "fp32"

    def layer_ops(self, weights_in_fp8: bool) -> Any:
        return None  # the core's default: torch layers (casting layers for fp8)

    def attention_function(self) -> None:
        return None  # the pack's own choice (the attention option)

    def manage(self, model: XPortraitModel, name: str, compile_mode: CompileMode = "off") -> ManagedModel:
        from xportrait_core.pipeline import ImageVAE

        return ManagedModel(model, name, ImageVAE(model), compile_mode=compile_mode)

    @contextlib.contextmanager
    def loaded(self, managed: ManagedModel, loras: Sequence[LoraChoice] = (),
               memory_required: int = 0) -> Iterator[XPortraitModel]:
        """The networks where they are, with the LoRAs merged for the block (restored after it, an error too)."""
        from xportrait_core.pipeline import loras_merged

        with loras_merged(managed.model, loras):
            yield managed.model

    def fully_loaded(self, managed: ManagedModel) -> bool:
        return True

    def check_interrupt(self) -> bool:
        return False

    def frame_progress(self, what: str) -> FrameHooks:
        from xportrait_core.pipeline import FrameHooks

        def on_progress(done: int, total: int) -> None:
            log.debug("%s: %d/%d", what, done, total)

        return FrameHooks(on_progress=on_progress, should_interrupt=self.check_interrupt)

    def sampling_progress(self, steps: int) -> SamplingProgress:
        return SamplingProgress(steps)

    def core_guider(self, run: Any) -> tuple[Any, None]:
        """No core samplers: the run itself is the guider (`GuidedRun.denoiser`), and there is no MODEL."""
        return run, None
