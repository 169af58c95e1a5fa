"""What a checkpoint file is, from its first bytes and its zip directory: a cheap check made before any work, so a
text file, an HTML page, a Git LFS pointer, a truncated download or a `.safetensors` under a `.th` name is named for
what it is at once (and never handed to torch.load, whose messages advise `weights_only=False`).
"""
from __future__ import annotations

import json
import pickletools
import struct
import zipfile
from pathlib import Path

SAFETENSORS_SUFFIX = ".safetensors"
ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6) format starts with its magic number pickled (protocol 2, LONG1 0x1950a86a20f9469cfc6c)
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
PICKLE_SCAN_BYTES = 2**20  # a plain pickle is recognised by parsing (never running) at most this much of it
LFS_POINTER = b"version https://git-lfs"
SNIFF_BYTES = 512
LENGTH_BYTES = 8  # safetensors: the header's length, a little-endian u64
SMALLEST_CHECKPOINT = 64  # bytes: no tensor file is smaller; the released one is 12.3 GB
REAL_CHECKPOINT = "model_state-415001.th"
SHOWN_TEXT = 40


def file_kind(path: Path) -> str:
    """"safetensors", "torch zip", "legacy pickle", "python pickle", "lfs pointer", "text" or "unknown", from the
    first bytes."""
    with open(path, "rb") as stream:
        head = stream.read(SNIFF_BYTES)
    if head.startswith(ZIP_MAGIC):
        return "torch zip"
    if head.startswith(LFS_POINTER):
        return "lfs pointer"
    if _is_safetensors(head):
        return "safetensors"
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "legacy pickle"
    if _is_pickle(path):
        return "python pickle"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            pass
    return "unknown"


def _is_pickle(path: Path) -> bool:
    """Whether the file starts with a complete pickle, parsed opcode by opcode without running any of it."""
    with open(path, "rb") as stream:
        data = stream.read(PICKLE_SCAN_BYTES)
    try:
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name == "STOP":
                return True
    except (ValueError, EOFError, UnicodeDecodeError):
        return False
    return False


def _is_safetensors(head: bytes) -> bool:
    # a u64 length then the JSON header's "{" (a truncated file is still one: `_safetensors_header_problem` says so)
    return len(head) > LENGTH_BYTES and head[LENGTH_BYTES:LENGTH_BYTES + 2] in (b'{"', b"{}")


def unreadable_reason(path: Path) -> str | None:
    """Why `path` (an existing file) cannot be a checkpoint, in one sentence with what to do; None when it may be
    one (the full read can still find it damaged)."""
    size = path.stat().st_size
    kind = file_kind(path) if size else "empty"
    named_safetensors = path.suffix.lower() == SAFETENSORS_SUFFIX
    if kind == "empty":
        return "is empty (0 bytes): the download or copy failed; download it again"
    if kind == "lfs pointer":
        return ("is a Git LFS pointer (a small text file), not the weights: fetch the real file (git lfs pull) or "
                "download it directly")
    if kind == "python pickle":
        return ("is a plain Python pickle, not a checkpoint written by torch.save: it was not loaded (a pickle can run "
                f"code); use {REAL_CHECKPOINT} or a .safetensors file")
    if kind == "text":
        with open(path, "rb") as stream:
            start = stream.read(SHOWN_TEXT).decode("utf-8", "replace").split("\n")[0]
        return (f"is a text file ({size} bytes, starting {start!r}), not a checkpoint (an error page saved instead of "
                f"the download?); download {REAL_CHECKPOINT} again")
    if kind == "unknown" or size < SMALLEST_CHECKPOINT:
        return (f"is not a PyTorch or safetensors checkpoint ({size} bytes of another kind); give {REAL_CHECKPOINT} "
                "or a converted .safetensors")
    if kind == "safetensors" and not named_safetensors:
        return (f"is a safetensors file named '{path.suffix}'; rename it to '{path.stem}{SAFETENSORS_SUFFIX}' (it "
                "loads as it is then)")
    if kind != "safetensors" and named_safetensors:
        what = "a PyTorch checkpoint" if kind in ("torch zip", "legacy pickle") else "not a safetensors file"
        return f"is named {SAFETENSORS_SUFFIX} but is {what}; rename it to '{path.stem}.th'"
    if kind == "torch zip":
        return _zip_problem(path)
    if kind == "safetensors":
        return _safetensors_header_problem(path)
    return None


def _zip_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "is truncated or corrupt (a damaged zip: an interrupted download?); download it again"
    if not any(name.endswith("data.pkl") for name in names):
        return "is a zip file but not a PyTorch checkpoint (it holds no data.pkl)"
    return None


def _safetensors_header_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(LENGTH_BYTES))
        if length > size - LENGTH_BYTES:
            return (f"is truncated or corrupt: {size} bytes, shorter than its own header says (an interrupted "
                    "download or copy?); download or convert it again")
        try:
            header = json.loads(stream.read(length))
        except (ValueError, UnicodeDecodeError):
            return "has a damaged safetensors header; download or convert it again"
    if not isinstance(header, dict):
        return "has a damaged safetensors header; download or convert it again"
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    needed = LENGTH_BYTES + length + max(ends, default=0)
    if needed > size:
        return (f"is truncated or corrupt: {size} bytes of the {needed} its header lists (an interrupted download "
                "or copy?); download or convert it again")
    return None
