"""Writing a ``.safetensors`` file one tensor at a time, so a checkpoint of any size is never held in memory.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a JSON header naming
every tensor's dtype, shape and byte range, padded with spaces to a multiple of 8, then the tensors' bytes back to
back in the header's order. The header needs only shapes and dtypes, so it is written first and the data streamed.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import torch

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
HEADER_ALIGNMENT = 8  # the data starts 8-byte aligned, as safetensors' own writer leaves it


def header_bytes(layout: Mapping[str, tuple[tuple[int, ...], torch.dtype]], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and padded JSON header for tensors of `layout` ({name: (shape, dtype)}) in its order."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, (shape, dtype) in layout.items():
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor '{name}' has dtype {dtype}, which safetensors cannot store")
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(text)) + text


def data_size(layout: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> int:
    """Bytes of tensor data a file of `layout` holds (the header adds a few hundred kB at most)."""
    return sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size() for shape, dtype in layout.values())


def write_safetensors(path: Path, layout: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                      tensor_of: Callable[[str], torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write the file at `path` (already a temporary name: the caller renames it), asking `tensor_of(name)` for each
    tensor in turn, so only one is in memory at a time. Each must match its layout entry."""
    with open(path, "wb") as stream:
        stream.write(header_bytes(layout, metadata))
        for name, (shape, dtype) in layout.items():
            tensor = tensor_of(name)
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"tensor '{name}' is {tuple(tensor.shape)} {tensor.dtype}, but the header says "
                                 f"{tuple(shape)} {dtype}")
            _write_tensor(stream, tensor)
            del tensor


def _write_tensor(stream: BinaryIO, tensor: torch.Tensor) -> None:
    if not tensor.numel():
        return
    # The bytes as they are in memory (little-endian on every platform torch supports), without a copy when the
    # tensor is already contiguous (a memory-mapped source tensor goes from the page cache to the file).
    flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    stream.write(flat.numpy().data)
