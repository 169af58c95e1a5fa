"""CUDA graphs of the model's evaluations: each forward's kernels are recorded once per input signature and then
launched together, instead of one Python call per kernel.

Why: with 16-frame windows a large GPU finishes each kernel sooner than Python launches the next (docs/performance.md,
"Numbers behind the code's constants"), so the card waits. A captured graph replays the whole
forward from one call. Capturing costs about one forward per distinct signature (a step has at most two window
batches of different size, plus the appearance net), with no compilation, so the start-up stays small.

`GraphedModel` wraps an `XPortraitModel` behind the same sampling interface (`sampling.guidance.GuidedModel`):
inputs are copied into static buffers, the graph is replayed, the static outputs are copied out, and the network
evaluations a replay stands for are told to the call's observer as the eager model would tell them. Graphs share
one memory pool, since the window forwards run one after another. A signature whose capture fails runs eagerly.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .xportrait_model import EvaluationObserver

log = logging.getLogger(__name__)

WARMUP_RUNS = 1  # eager runs on a side stream before capture, so lazy initialisation (cuBLAS, cuDNN) happens first


class CudaGraphs:
    """The capture mechanism: record ``run`` as a CUDA graph; the returned callable replays it. ``run`` is called
    ``calls_per_capture`` times (warm-up, then the recorded call)."""

    calls_per_capture = WARMUP_RUNS + 1

    def __init__(self) -> None:
        self._pool: torch.cuda._POOL_HANDLE | None = None  # torch's type for a graph memory pool

    def capture(self, run: Callable[[], Any]) -> tuple[Any, Callable[[], None]]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = run()
        self._pool = graph.pool()
        return outputs, graph.replay


class _Captured:
    def __init__(self, static_inputs: list[Any], outputs: Any, replay: Callable[[], None],
                 counts: Counter[str]) -> None:
        self.static_inputs, self.outputs, self.replay, self.counts = static_inputs, outputs, replay, counts


def _signature(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, str(value.device))
    if isinstance(value, (list, tuple)):
        return tuple(_signature(item) for item in value)
    return value


def _static_copy(value: Any, seen: dict[int, torch.Tensor]) -> Any:
    """A static buffer of the same shape for every tensor in ``value``; a tensor passed twice gets one buffer
    (the model tells a shared text context by identity)."""
    if isinstance(value, torch.Tensor):
        if id(value) not in seen:
            seen[id(value)] = value.clone()
        return seen[id(value)]
    if isinstance(value, (list, tuple)):
        return type(value)(_static_copy(item, seen) for item in value)
    return value


def _copy_into(static: Any, value: Any) -> None:
    if isinstance(static, torch.Tensor):
        static.copy_(value)
    elif isinstance(static, (list, tuple)):
        for static_item, item in zip(static, value):
            _copy_into(static_item, item)


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(item) for item in value)
    return value


class GraphedModel:
    """The sampling interface of ``model`` with every evaluation replayed from a captured graph."""

    def __init__(self, model: Any, graphs: Any = None) -> None:
        """``graphs``: the capture mechanism (default `CudaGraphs`; tests pass one that replays by re-running)."""
        self.model = model
        self._graphs = graphs or CudaGraphs()
        self._captured: dict[Any, _Captured | None] = {}

    # What the sampler reads besides the evaluations.
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.model.compute_dtype

    @property
    def signatures_captured(self) -> int:
        return sum(1 for captured in self._captured.values() if captured is not None)

    def concat_reference_banks(self, banks: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        return self.model.concat_reference_banks(banks)

    def window_activation_bytes(self, *args: Any) -> int:
        return self.model.window_activation_bytes(*args)

    def hint_feature_bytes(self, *args: Any) -> int:
        return self.model.hint_feature_bytes(*args)

    def encode_control_hints(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_control_hints(*args)  # once per run: not worth a graph

    # The evaluations: positional arguments as the model takes them, the observer apart (it is no graph input).
    def write_reference_bank(self, *args: Any, observer: EvaluationObserver | None = None) -> list[torch.Tensor]:
        return self._run("write_reference_bank", args, observer)

    def eps_conditional(self, *args: Any, observer: EvaluationObserver | None = None) -> torch.Tensor:
        return self._run("eps_conditional", args, observer)

    def eps_unconditional(self, *args: Any, observer: EvaluationObserver | None = None) -> torch.Tensor:
        return self._run("eps_unconditional", args, observer)

    def eps_both_passes(self, *args: Any, observer: EvaluationObserver | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run("eps_both_passes", args, observer)

    def _run(self, method: str, args: Sequence[Any], observer: EvaluationObserver | None) -> Any:
        key = (method, _signature(list(args)))
        if key not in self._captured:
            self._captured[key] = self._capture(method, args)
        captured = self._captured[key]
        if captured is None:  # capture failed: eager, reporting as the model does
            return getattr(self.model, method)(*args, observer=observer)
        _copy_into(captured.static_inputs, list(args))
        captured.replay()
        outputs = _clone(captured.outputs)
        if observer is not None:
            for name, rows in captured.counts.items():
                observer(name, rows)
        return outputs

    def _capture(self, method: str, args: Sequence[Any]) -> _Captured | None:
        static_inputs = _static_copy(list(args), {})
        runs: Counter[str] = Counter()
        function = getattr(self.model, method)

        def count(name: str, rows: int) -> None:
            runs[name] += rows

        try:
            outputs, replay = self._graphs.capture(lambda: function(*static_inputs, observer=count))
        except RuntimeError as error:  # e.g. an operation CUDA graphs cannot record
            log.warning("%s cannot be captured as a CUDA graph (%s); it runs eagerly", method, error)
            return None
        per_call = Counter({name: rows // self._graphs.calls_per_capture for name, rows in runs.items()})
        log.info("captured %s for inputs %s", method, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)])
        return _Captured(static_inputs, outputs, replay, per_call)
