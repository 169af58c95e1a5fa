"""Windowed, classifier-free-guided denoiser in sigma space: the full video in, its clean-latent estimate out.

This is the k-diffusion idea: windowing and guidance wrap the networks as a denoiser `(x, sigma) -> denoised`, so
every sampler function (`samplers`, and ComfyUI's core samplers through the X-Portrait Guider) drives the same object.
x are sigma-space latents (`sigmas`); the networks see x / sqrt(1 + sigma^2) at the DDPM timestep nearest to sigma
and predict eps; denoised = x - sigma * eps.

Per step it runs, as the original does but without its repetitions:
- the appearance net ONCE (not once per window), with the step's t and the conditional context, on all
  reference sets at once (batch = references, or references x frames in per-frame mode); every window reads that
  bank (shared: the bank broadcasts; per-frame: the window takes its frames' rows);
- per window: the conditional pass (bank + pose and local ControlNets) and the unconditional pass (plain UNet
  with motion modules, never needs the bank), eps = eps_u + cfg * (eps_c - eps_u); cfg 1 skips the
  unconditional pass and cfg 0 the conditional one (and the bank);
- the guided eps of overlapping windows are averaged per frame (see `windows.WindowAverager`).

Steps. A step's windows (and, with random placement, its window offset) are planned from the step index, which is
read off the run's sigma schedule (`sigmas.step_for_sigma`): samplers that call the denoiser several times per step
(heun, dpm_2, dpmpp_2s_ancestral, dpmpp_sde) evaluate one consistent plan per step and draw one offset, and with one
call per step the offsets are drawn one per step, in order, so replayed offsets line up step by step.

`bank_mode="per_window"` is the original's cost model (the appearance net on the window's per-frame reference
latents in every window), kept for benchmarks and for checking that both modes agree.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from ..model.device_memory import free_bytes
from ..networks.reference_attention import select_bank_frames
from ..options import LATENT_CHANNELS, VAE_DOWNSCALE
from .sigmas import step_for_sigma, timestep_for_sigma
from .windows import WindowAverager, WindowPlanner

BankMode = Literal["once_per_step", "per_window"]
HINT_CHANNELS = 3  # pose and local hints are RGB images
EVALUATED_NETS: tuple[str, ...] = ("appearance", "pose_control", "local_control", "unet")
# Automatic batching on a GPU (see WindowedGuidedDenoiser): activations may use this share of the free memory, the
# hint videos a smaller one; beyond EFFICIENT_BATCH_ROWS rows per UNet forward a large GPU gains little more
# (bench/bench_gpu.py --windows-per-batch measures it) while the memory keeps growing.
ACTIVATION_SHARE_OF_FREE_MEMORY = 0.6
HINTS_SHARE_OF_FREE_MEMORY = 0.1
CPU_HINT_FEATURES_BUDGET = 512 * 1024**2  # the CPU's RAM is shared with everything else: a fixed bound
EFFICIENT_BATCH_ROWS = 64

EvaluationObserver = Callable[[str, int], None]  # (network, rows) after each network evaluation


class SamplingInterrupted(Exception):
    """Raised during a step (between windows, or between two network evaluations of a window) when the interrupt
    check asks to stop."""


class GuidedModel(Protocol):
    """What the denoiser needs from `xportrait_core.model.xportrait_model.XPortraitModel` (a protocol: sampling
    never needs the class itself). `frames_per_video`: how many consecutive rows the motion modules see as one
    video (the window); `observer(network, rows)` is told of every network evaluation."""

    device: torch.device
    compute_dtype: torch.dtype

    def write_reference_bank(self, reference_latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                             observer: EvaluationObserver | None = None) -> list[torch.Tensor]: ...

    def concat_reference_banks(self, banks: list[list[torch.Tensor]]) -> list[torch.Tensor]: ...

    def eps_conditional(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                        bank: list[torch.Tensor], pose_hint: torch.Tensor, local_hint: torch.Tensor,
                        frames_per_video: int, observer: EvaluationObserver | None = None) -> torch.Tensor: ...

    def eps_unconditional(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                          frames_per_video: int, observer: EvaluationObserver | None = None) -> torch.Tensor: ...

    def eps_both_passes(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                        uncond_context: torch.Tensor, bank: list[torch.Tensor], pose_hint: torch.Tensor,
                        local_hint: torch.Tensor, frames_per_video: int,
                        observer: EvaluationObserver | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def window_activation_bytes(self, latent_size: tuple[int, int], conditional_rows: int, unconditional_rows: int,
                                references: int) -> int: ...

    def encode_control_hints(self, pose_hint: torch.Tensor, local_hint: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def hint_feature_bytes(self, frames: int, latent_size: tuple[int, int]) -> int: ...


@dataclass(frozen=True)
class Conditioning:
    """Everything besides the noisy latents that guides the denoising of a video of F frames.

    reference_latents: main reference first, then extra references; each (1, 4, h, w) (`shared`: one latent,
        its bank broadcast to every frame) or (F, 4, h, w) (`per_frame`: one latent per frame, as the original's
        per-frame VAE posterior samples); all references in the same mode. Never noised.
    pose_hints, local_hints: (F, 3, 8h, 8w) in [-1, 1].
    context, uncond_context: (1, 77, C) text contexts of the conditional and unconditional pass (the prompt is
        the same for every frame, so it is encoded once).
    The per-frame tensors may live on the CPU; the denoiser moves one window at a time to the model.
    """

    reference_latents: Sequence[torch.Tensor]
    pose_hints: torch.Tensor
    local_hints: torch.Tensor
    context: torch.Tensor
    uncond_context: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.pose_hints.shape[0])

    @property
    def latent_size(self) -> tuple[int, int]:
        return int(self.reference_latents[0].shape[-2]), int(self.reference_latents[0].shape[-1])

    @property
    def reference_mode(self) -> str:
        """`shared` or `per_frame`, read from the references' batch size."""
        return "shared" if self.reference_latents[0].shape[0] == 1 else "per_frame"


def check_conditioning(cond: Conditioning) -> None:
    """Raise ValueError, addressed to the user, when the conditioning tensors do not fit together."""
    if len(cond.reference_latents) == 0:
        raise ValueError("at least one reference latent is needed (the source portrait)")
    for name, hints in (("pose hints", cond.pose_hints), ("local hints", cond.local_hints)):
        if hints.dim() != 4 or hints.shape[1] != HINT_CHANNELS:
            raise ValueError(f"{name} must be (F, 3, H, W) images, got shape {tuple(hints.shape)}")
    if cond.local_hints.shape[0] != cond.pose_hints.shape[0]:
        raise ValueError(
            f"pose hints have {cond.pose_hints.shape[0]} frames but local hints {cond.local_hints.shape[0]}; "
            "both come from the same driving video and need one image per frame"
        )
    frames = cond.num_frames
    first = cond.reference_latents[0]
    for index, ref in enumerate(cond.reference_latents):
        if ref.dim() != 4 or ref.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"reference latent {index} must be (B, 4, h, w), got shape {tuple(ref.shape)}")
        if ref.shape[0] not in (1, frames):
            raise ValueError(
                f"reference latent {index} has batch {ref.shape[0]}; expected 1 (one latent shared by all frames) "
                f"or {frames} (one per frame)"
            )
        if ref.shape != first.shape:
            raise ValueError(
                f"reference latent {index} has shape {tuple(ref.shape)} but the main reference {tuple(first.shape)}; "
                "all references need the same size and the same mode (shared or per-frame)"
            )
    h, w = cond.latent_size
    for name, hints in (("pose hints", cond.pose_hints), ("local hints", cond.local_hints)):
        height, width = hints.shape[-2:]
        if height % VAE_DOWNSCALE or width % VAE_DOWNSCALE:
            raise ValueError(
                f"{name} are {height}x{width} pixels; both sides must be divisible by {VAE_DOWNSCALE} "
                "(the VAE downscale); resize or crop the driving video"
            )
        if (height, width) != (VAE_DOWNSCALE * h, VAE_DOWNSCALE * w):
            raise ValueError(
                f"{name} are {height}x{width} pixels but the reference latents are {h}x{w}; hints must be exactly "
                f"{VAE_DOWNSCALE}x the latent size ({VAE_DOWNSCALE * h}x{VAE_DOWNSCALE * w}): resize them to the "
                "reference image's size"
            )
    for name, context in (("context", cond.context), ("uncond_context", cond.uncond_context)):
        if context.dim() != 3 or context.shape[0] != 1:
            raise ValueError(
                f"{name} must be (1, 77, C), one text encoding shared by all frames; got {tuple(context.shape)}"
            )


@dataclass(frozen=True)
class DenoiserHooks:
    """Callbacks for hosts.

    on_window(step_index, window_index, windows_in_step) after every window.
    on_progress(step_index, rows_done, rows_per_step) after every network evaluation (appearance net, each
        ControlNet, each UNet forward), counted in network rows: moves within the first window.
    should_interrupt() before every batch of windows and after every network evaluation; True (or an exception it
        raises) stops the run with SamplingInterrupted within one network evaluation.
    """

    on_window: Callable[[int, int, int], None] | None = None
    on_progress: Callable[[int, int, int], None] | None = None
    should_interrupt: Callable[[], bool] | None = None


class WindowedGuidedDenoiser:
    """The denoiser callable over the full video: `(x, sigma) -> denoised`, x and denoised (F, 4, h, w) in sigma
    space; sigma a float or a tensor holding one noise level for all frames (ComfyUI passes one per frame).

    schedule: the run's sigmas (descending, as the sampler was given them), which place each call in a step. The
    video lives where the caller keeps it (possibly the CPU); the windows of a step go to the model's device in
    batches, are evaluated, and their guided eps come back, so the model-side memory is one batch's, whatever F. A
    batch holds several windows (rows stacked: the motion modules see each window's rows as one video) and, unless
    ``batch_passes`` is False, both guidance passes of them in one UNet forward: fewer, larger kernels, which is what
    a GPU needs. ``windows_per_batch`` None sizes batches from the device's free memory (`device_memory`,
    `model.memory_estimate`); on the CPU one window at a time keeps the memory lean. Batching changes no result
    beyond float noise: every window of a step sees the same latents, and the average is taken after all of them.

    After a run: `calls` holds (step index, timestep) per call, `evaluation_counts` the rows each network evaluated,
    `offsets_used` the random window offsets drawn (or replayed), one per step.
    """

    def __init__(
        self,
        model: GuidedModel,
        conditioning: Conditioning,
        cfg: float,
        planner: WindowPlanner,
        schedule: Sequence[float] | torch.Tensor,
        *,
        bank_mode: BankMode = "once_per_step",
        batch_passes: bool = True,
        windows_per_batch: int | None = None,
        hooks: DenoiserHooks = DenoiserHooks(),
    ) -> None:
        check_conditioning(conditioning)
        schedule = [float(s) for s in (schedule.tolist() if isinstance(schedule, torch.Tensor) else schedule)]
        if not schedule or any(later > earlier for earlier, later in zip(schedule, schedule[1:])):
            raise ValueError(f"the sigma schedule must be non-empty and descend (noisiest first), got {schedule}")
        # The options reach here checked (SamplerOptions, the pipeline); what is left are the callers' invariants.
        assert cfg >= 0 and bank_mode in ("once_per_step", "per_window"), (cfg, bank_mode)
        assert planner.num_frames == conditioning.num_frames, (planner.num_frames, conditioning.num_frames)
        assert windows_per_batch is None or windows_per_batch >= 1, windows_per_batch
        self._device, self._dtype = model.device, model.compute_dtype
        self.model = model
        self.cond = conditioning
        self.cfg = float(cfg)
        self.planner = planner
        self.schedule = schedule
        self.bank_mode = bank_mode
        self.hooks = hooks
        self.calls: list[tuple[int, int]] = []
        self.evaluation_counts: Counter[str] = Counter({net: 0 for net in EVALUATED_NETS})
        self._needs_cond = self.cfg != 0.0
        self._needs_uncond = self.cfg != 1.0
        self._shared = conditioning.reference_mode == "shared"
        # Small, reused by every window of every step: move once.
        self._context = self._to_model(conditioning.context)
        self._uncond_context = self._to_model(conditioning.uncond_context)
        if torch.equal(conditioning.context, conditioning.uncond_context):
            self._uncond_context = self._context  # one context: the batched forward projects it once
        self._references = [self._to_model(ref) for ref in conditioning.reference_latents]
        self._pose_hints, self._local_hints = self._place_hints()
        self.batch_passes, self.windows_per_batch = self._plan_batches(batch_passes, windows_per_batch)
        self._step_index = 0
        self._rows_done = 0
        self._rows_per_step = 1

    @property
    def offsets_used(self) -> list[int]:
        return self.planner.offsets_used

    # -------------------------------------------------------------------------------------------- planning
    def _to_model(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self._device, self._dtype)

    def _place_hints(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What each batch's ControlNets take. Their hint block depends on the hint images alone, so when both
        ControlNets' features of every frame fit (on a GPU in a small share of its free memory, on the CPU within a
        fixed budget) they are computed once here, instead of at every step of every window. Otherwise the images
        go to the GPU once when they fit there, or stay where they are and each batch takes its frames across."""
        hints = (self.cond.pose_hints, self.cond.local_hints)
        if not self._needs_cond:
            return hints
        free = free_bytes(self._device)
        budget = CPU_HINT_FEATURES_BUDGET if free is None else HINTS_SHARE_OF_FREE_MEMORY * free
        if self.model.hint_feature_bytes(self.cond.num_frames, self.cond.latent_size) <= budget:
            encoded = [self.model.encode_control_hints(self._to_model(pose), self._to_model(local))
                       for pose, local in zip(hints[0].split(self.planner.window), hints[1].split(self.planner.window))]
            return torch.cat([pose for pose, _ in encoded]), torch.cat([local for _, local in encoded])
        size = 2 * self.cond.pose_hints.numel() * self._dtype.itemsize
        if free is not None and size <= HINTS_SHARE_OF_FREE_MEMORY * free:
            return self._to_model(hints[0]), self._to_model(hints[1])
        return hints

    def _plan_batches(self, batch_passes: bool, windows_per_batch: int | None) -> tuple[bool, int]:
        """Whether both passes share a forward, and how many windows one forward takes."""
        both = batch_passes and self._needs_cond and self._needs_uncond
        if windows_per_batch is not None:
            return both, windows_per_batch
        free = free_bytes(self._device)
        if free is None:  # CPU: one window, one pass at a time (no faster batched there: docs/performance.md)
            return False, 1
        budget = ACTIVATION_SHARE_OF_FREE_MEMORY * free
        rows = self.planner.window
        cond_rows = rows if self._needs_cond else 0
        uncond_rows = rows if self._needs_uncond else 0

        def need(conditional: int, unconditional: int) -> int:
            return self.model.window_activation_bytes(self.cond.latent_size, conditional, unconditional,
                                                      len(self._references))

        if both and need(cond_rows, uncond_rows) > budget:
            both = False  # not even one window's two passes fit together: run them one after the other
        per_window = need(cond_rows, uncond_rows) if both else max(need(cond_rows, 0), need(0, uncond_rows))
        efficient = EFFICIENT_BATCH_ROWS // (rows * (2 if both else 1))
        return both, max(1, min(int(budget // per_window), efficient, self.planner.windows_per_step))

    def rows_per_step(self, windows_in_step: int) -> int:
        """Network rows evaluated in one step (appearance net, ControlNets, UNet passes): the progress unit."""
        window_rows = windows_in_step * self.planner.window
        rows = 0
        if self._needs_cond:
            if self.bank_mode == "once_per_step":
                rows += sum(ref.shape[0] for ref in self._references)
            else:
                rows += window_rows * len(self._references)
            rows += 3 * window_rows  # pose ControlNet, local ControlNet, conditional UNet
        if self._needs_uncond:
            rows += window_rows
        return rows

    # ----------------------------------------------------------------------------------------- evaluation
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma_t.numel() not in (1, x.shape[0]) or bool((sigma_t != sigma_t[0]).any()):
            raise ValueError(f"every frame must be at the same noise level (one sigma for the video); got sigmas of "
                             f"shape {tuple(sigma_t.shape)} for {x.shape[0]} frames")
        sigma_t = sigma_t[0]
        value = float(sigma_t)
        timestep, step = timestep_for_sigma(value), step_for_sigma(self.schedule, value)
        self.calls.append((step, timestep))
        eps = self.eps(x / (sigma_t**2 + 1) ** 0.5, timestep, step)
        return x - eps * sigma_t

    def eps(self, latents_vp: torch.Tensor, timestep: int, step_index: int) -> torch.Tensor:
        """Guided eps (F, 4, h, w) of variance-preserving latents (F, 4, h, w) at DDPM `timestep`, in step
        `step_index`'s windows."""
        assert latents_vp.shape[0] == self.cond.num_frames, (latents_vp.shape, self.cond.num_frames)
        windows = self.planner.windows_for_step(step_index)
        self._step_index, self._rows_done = step_index, 0
        self._rows_per_step = self.rows_per_step(len(windows))
        step_bank = None
        if self._needs_cond and self.bank_mode == "once_per_step":
            step_bank = self._write_bank(self._references, timestep)
        averager = WindowAverager(latents_vp.shape, latents_vp.device)
        for first in range(0, len(windows), self.windows_per_batch):
            batch = windows[first:first + self.windows_per_batch]
            if self.hooks.should_interrupt is not None and self.hooks.should_interrupt():
                raise SamplingInterrupted(f"interrupted at step {step_index + 1}, before window {first + 1}")
            eps = self._batch_eps(latents_vp, torch.cat(batch), timestep, step_bank)
            for index, frames in enumerate(batch):
                averager.add(frames, eps[index * len(frames):(index + 1) * len(frames)])
                if self.hooks.on_window is not None:
                    self.hooks.on_window(step_index, first + index, len(windows))
        return averager.average().to(latents_vp.dtype)

    def _evaluated(self, network: str, rows: int) -> None:
        """The observer every model evaluation reports to: counts, progress, and the interrupt check."""
        self.evaluation_counts[network] += rows
        self._rows_done += rows
        if self.hooks.on_progress is not None:
            self.hooks.on_progress(self._step_index, min(self._rows_done, self._rows_per_step), self._rows_per_step)
        if self.hooks.should_interrupt is not None and self.hooks.should_interrupt():
            raise SamplingInterrupted(f"interrupted at step {self._step_index + 1}, during a window")

    def _batch_eps(
        self, latents_vp: torch.Tensor, frames: torch.Tensor, timestep: int, step_bank: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """Guided eps (rows, 4, h, w) of the windows whose frames are concatenated in ``frames``, on the device."""
        x_t = self._to_model(latents_vp[frames.to(latents_vp.device)])
        timesteps = torch.full((len(frames),), float(timestep), dtype=torch.float32, device=self._device)
        window = self.planner.window
        if not self._needs_cond:
            return self.model.eps_unconditional(x_t, timesteps, self._uncond_context, window,
                                                  observer=self._evaluated)
        bank = self._batch_bank(frames, timestep, step_bank)
        pose = self._to_model(self._pose_hints[frames.to(self._pose_hints.device)])
        local = self._to_model(self._local_hints[frames.to(self._local_hints.device)])
        if self.batch_passes:
            eps_cond, eps_uncond = self.model.eps_both_passes(
                x_t, timesteps, self._context, self._uncond_context, bank, pose, local, window,
                observer=self._evaluated)
        else:
            eps_cond = self.model.eps_conditional(x_t, timesteps, self._context, bank, pose, local, window,
                                                  observer=self._evaluated)
            del pose, local
            if not self._needs_uncond:
                return eps_cond
            eps_uncond = self.model.eps_unconditional(x_t, timesteps, self._uncond_context, window,
                                                      observer=self._evaluated)
        return eps_uncond + self.cfg * (eps_cond - eps_uncond)

    def _batch_bank(
        self, frames: torch.Tensor, timestep: int, step_bank: list[torch.Tensor] | None
    ) -> list[torch.Tensor]:
        """Bank entries for the batch's frames: (1, tokens, C) broadcast, or (rows, tokens, C)."""
        if step_bank is None:  # per_window: the original recomputes it from the windows' reference latents
            window_refs = [
                ref.expand(len(frames), -1, -1, -1) if self._shared else ref[frames.to(ref.device)]
                for ref in self._references
            ]
            return self._write_bank(window_refs, timestep)
        return select_bank_frames(step_bank, frames)

    def _write_bank(self, references: list[torch.Tensor], timestep: int) -> list[torch.Tensor]:
        """One appearance-net call over all references (stacked on the batch), then the banks concatenated along
        tokens, main reference first. references: each (B, 4, h, w). Returns entries (B, R * tokens_i, C_i)."""
        batch = references[0].shape[0]
        stacked = torch.cat(references, dim=0)
        timesteps = torch.full((stacked.shape[0],), float(timestep), dtype=torch.float32, device=self._device)
        flat = self.model.write_reference_bank(stacked, timesteps, self._context, observer=self._evaluated)
        if len(references) == 1:
            return flat
        banks = [[entry[r * batch:(r + 1) * batch] for entry in flat] for r in range(len(references))]
        return self.model.concat_reference_banks(banks)
