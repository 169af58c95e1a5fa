"""Converting a checkpoint to ``.safetensors`` one tensor at a time, checked against the X-Portrait layout first and
read back tensor by tensor after.

The released checkpoint is 12.3 GB (3.07 B parameters in fp32). Its tensors are memory-mapped from the source (a
``.th`` zip read with ``torch.load(mmap=True)``, or a ``.safetensors``), so they stay in the page cache, which the
kernel can drop, instead of anonymous memory: a conversion holds about one tensor (and its fp16 cast) at a time.
Before anything is written, every tensor's shape is compared with the layout of the X-Portrait model whose widths the
file claims (derived from its shapes, as loading does), so a wrong-shaped tensor or another model is refused.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..media.safe_output import atomic_output, check_output_path
from ..networks.config import XPortraitConfig
from .checkpoint import (
    FP16_MAX,
    SAFETENSORS_SUFFIX,
    SCHEDULE_KEYS,
    TEXT_EMBEDDING_KEY,
    TEXT_HEADS_METADATA,
    CheckpointError,
    TextHeadsError,
    _safetensors_metadata,
    _text_heads_from_metadata,
    check_checkpoint_file,
    check_state_dict,
    check_text_heads,
    identify_foreign_checkpoint,
    read_state_dict,
)
from .finite_weights import describe_non_finite
from .safetensors_stream import DTYPE_NAMES, data_size, write_safetensors
from .xportrait_model import XPortraitModel

log = logging.getLogger(__name__)

DTYPES_BY_NAME = {name: dtype for dtype, name in DTYPE_NAMES.items()}
HEADER_ROOM = 16 * 2**20  # bytes beyond the tensor data a destination needs (the JSON header, file-system slack)
GIGABYTE = 1e9


class SourceTensors:
    """The tensors of a checkpoint, read one at a time: `layout` gives every name's shape and dtype without reading
    data (as meta tensors, which the layout checks take), `tensor(name)` reads one."""

    def __init__(self, layout: dict[str, torch.Tensor], read: Callable[[str], torch.Tensor]) -> None:
        self.layout = layout
        self.tensor = read


def _meta_like(shape: tuple[int, ...] | list[int], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


@contextlib.contextmanager
def open_source(path: Path) -> Iterator[SourceTensors]:
    """The checkpoint's tensors, memory-mapped: `.safetensors` through safe_open, pickles through `read_state_dict`
    (a `.th` zip is memory-mapped; only the legacy pre-1.6 format is read whole)."""
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        state = read_state_dict(path)
        yield SourceTensors({k: _meta_like(v.shape, v.dtype) for k, v in state.items()}, state.__getitem__)
        return
    check_checkpoint_file(path)
    try:
        handle = safe_open(str(path), framework="pt")
        layout = {}
        for name in handle.keys():
            piece = handle.get_slice(name)
            layout[name] = _meta_like(piece.get_shape(), DTYPES_BY_NAME[piece.get_dtype()])
    except (SafetensorError, KeyError, OSError) as err:
        raise CheckpointError(f"checkpoint {path.name!r} could not be read as safetensors ({err}); it looks "
                              "truncated or corrupt: download or convert it again") from err
    with handle:
        yield SourceTensors(layout, handle.get_tensor)


def check_layout(tensors: SourceTensors, name: str, text_num_heads: int | None) -> None:
    """Every tensor's shape against the X-Portrait model whose widths the file's shapes claim: missing, unexpected
    or wrong-shaped tensors, or another model, are one CheckpointError before anything is written."""
    # shapes are enough, but the schedule's values are compared too (a few kB)
    layout = {k: tensors.tensor(k) if k in SCHEDULE_KEYS else v for k, v in tensors.layout.items()}
    foreign = identify_foreign_checkpoint(layout)
    if foreign:
        raise CheckpointError(f"{name!r} is {foreign}, not an X-Portrait checkpoint")
    # Shapes do not depend on the text encoder's head count: any count that divides its width builds the same layout.
    heads = text_num_heads or (1 if TEXT_EMBEDDING_KEY in layout else None)
    try:
        config = XPortraitConfig.from_state_dict(layout, text_num_heads=heads)
        with torch.device("meta"):
            reference = XPortraitModel(config).state_dict()
    except KeyError as err:
        raise CheckpointError(f"{name!r} is not an X-Portrait checkpoint: it lacks {err.args[0]!r}; only X-Portrait "
                              "checkpoints (model_state-415001.th) are converted") from err
    except (ValueError, RuntimeError) as err:
        raise CheckpointError(f"{name!r} does not have X-Portrait's layout ({err}); only X-Portrait checkpoints are "
                              "converted") from err
    check_state_dict(layout, name, reference)


def _keeps_float32(key: str) -> bool:
    """Buffers whose exact values matter: the schedule, the motion modules' position tables."""
    return key in SCHEDULE_KEYS or key.endswith(".pe")


def _target_dtype(key: str, dtype: torch.dtype, fp16: bool) -> torch.dtype:
    if fp16 and dtype.is_floating_point and dtype != torch.float16 and not _keeps_float32(key):
        return torch.float16
    return dtype


class _Converter:
    """Each tensor as it will be written: checked for NaN/inf (and fp16's range) and cast, one at a time."""

    def __init__(self, source: SourceTensors, layout: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                 name: str) -> None:
        self.source, self.layout, self.name = source, layout, name
        self.cast = 0

    def __call__(self, key: str) -> torch.Tensor:
        tensor = self.source.tensor(key).detach()
        target = self.layout[key][1]
        if tensor.is_floating_point():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = {key: int(finite.numel() - finite.sum())}
                raise CheckpointError(f"{self.name!r} is damaged: {describe_non_finite(bad, {key: tensor})}. A model "
                                      "with such weights renders black or noise; download the checkpoint again")
            del finite
        if target != tensor.dtype:
            if tensor.numel() and float(tensor.abs().max()) > FP16_MAX:
                raise CheckpointError(f"{self.name!r}: tensor '{key}' holds values beyond fp16's range "
                                      f"({FP16_MAX:g}), which would become infinite; convert without {{fp16}}")
            tensor = tensor.to(target)
            self.cast += 1
        return tensor.contiguous()

    def expected(self, key: str) -> torch.Tensor:
        """What the file must hold for `key` (no checks: they passed while writing)."""
        return self.source.tensor(key).detach().to(self.layout[key][1])


def _check_free_space(destination: Path, needed: int) -> None:
    free = shutil.disk_usage(destination.parent).free
    if free < needed + HEADER_ROOM:
        raise CheckpointError(f"the disk holding '{destination.parent}' has {free / GIGABYTE:.1f} GB free but "
                              f"{destination.name!r} needs {needed / GIGABYTE:.1f} GB; free space there or choose "
                              "another destination", option="convert_destination")


def _verify(partial: Path, destination: Path, converter: _Converter) -> None:
    """Read every tensor back from the written file and compare it with the source (or its cast), one at a time."""
    with safe_open(str(partial), framework="pt") as written:
        if set(written.keys()) != set(converter.layout):
            _differs(destination)
        for key, (_, dtype) in converter.layout.items():
            back = written.get_tensor(key)
            if back.dtype != dtype or not torch.equal(back, converter.expected(key)):
                _differs(destination)
            del back


def _differs(destination: Path) -> None:
    raise CheckpointError(f"verification of {destination.name!r} failed: the file read back differs from what was "
                          "written (a failing disk or file system?); nothing was written there")


def convert_to_safetensors(source: str | os.PathLike, destination: str | os.PathLike, fp16: bool = False,
                           text_num_heads: int | None = None) -> dict[str, int]:
    """Convert an X-Portrait checkpoint to ``.safetensors`` (optionally parameters in fp16; schedule and position
    tables stay float32), streaming tensor by tensor, then read every tensor back and verify it equals the source (or
    its fp16 cast) exactly. Returns counts of tensors written and cast.

    Checked before anything is written: the destination (a .safetensors name in a writable folder, not the source),
    the layout of every tensor against X-Portrait's, and the free disk space. Written atomically: nothing is ever
    left half-written (a full disk or an interrupt removes the temporary file), and the source is never touched.
    The text encoder's head count is kept: from the source's metadata, or `text_num_heads` (needed, and recorded,
    for a text encoder narrower than CLIP's 64-wide heads)."""
    source, destination = Path(source), Path(destination)
    check_output_path(destination, "destination", (SAFETENSORS_SUFFIX,), {"source checkpoint": source})
    with open_source(source) as tensors:
        heads = text_num_heads if text_num_heads is not None else _text_heads_from_metadata(source)
        check_layout(tensors, source.name, heads)
        try:
            check_text_heads(tensors.layout, source.name, heads)
        except TextHeadsError:
            if heads is not None:
                raise
            log.warning("%s: its text encoder's head count is unknown, so loading the converted file will ask for "
                        "it; give the head count (text_num_heads) when converting to record it", source.name)
        metadata = {**_safetensors_metadata(source), "format": "pt", "xportrait": "checkpoint",
                    "source": source.name}
        if heads is not None and TEXT_EMBEDDING_KEY in tensors.layout:
            metadata[TEXT_HEADS_METADATA] = str(heads)
        layout = {k: (tuple(v.shape), _target_dtype(k, v.dtype, fp16)) for k, v in tensors.layout.items()}
        _check_free_space(destination, data_size(layout))
        converter = _Converter(tensors, layout, source.name)
        try:
            with atomic_output(destination) as partial:
                write_safetensors(partial, layout, converter, metadata)
                _verify(partial, destination, converter)
        except OSError as err:
            raise _write_error(err, destination) from err
    return {"tensors": len(layout), "cast_to_fp16": converter.cast}


def _write_error(err: OSError, destination: Path) -> CheckpointError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    else:
        reason = err.strerror or str(err)
    return CheckpointError(f"writing {destination.name!r} failed ({reason}); nothing was written there (any earlier "
                           "file is unchanged). Free space or choose another destination", option="convert_destination")
