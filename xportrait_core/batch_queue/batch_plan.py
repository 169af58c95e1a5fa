"""The batch's plan: which source is animated with which driving (`collect_pairs`, `read_pairs_file`), and the
digests of their contents (`plan_jobs`), on which a job's identity is built. Malformed input is a QueueInputError
saying which file, which entry and what was expected, before any server is contacted.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
DRIVING_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"})
DIGEST_CHUNK_BYTES = 1 << 20


class QueueInputError(ValueError):
    """The workflow, sources, drivings or pairs file cannot make a batch."""


# ---- batch plan ---------------------------------------------------------------------------------

def collect_pairs(sources: Path, drivings: Path) -> list[tuple[Path, Path]]:
    """Every source with every driving: each argument is one file or a folder of them (sorted by name)."""
    return [(s, d) for s in _files(sources, SOURCE_SUFFIXES, "source image")
            for d in _files(drivings, DRIVING_SUFFIXES, "driving video")]


def read_pairs_file(path: Path) -> list[tuple[Path, Path]]:
    """Pairs from a CSV (`source,driving` per row, header optional) or JSON file (a list of
    `{"source": ..., "driving": ...}` objects or `[source, driving]` lists). Relative paths are taken
    from the pairs file's folder."""
    rows = _pairs_file_rows(path)
    pairs: list[tuple[Path, Path]] = []
    for number, row in enumerate(rows, start=1):
        where = f"Pairs file {path}, entry {number}"
        if not isinstance(row, (list, tuple)) or len(row) != 2:
            raise QueueInputError(f"{where}: expected a source and a driving, got {shown(row)}.")
        cells = []
        for cell, kind in zip(row, ("source", "driving")):
            if not isinstance(cell, str) or not cell.strip():
                raise QueueInputError(f"{where}: the {kind} must be a file path (text), got {shown(cell)}.")
            cells.append(Path(cell) if Path(cell).is_absolute() else path.parent / cell)
        source, driving = cells
        for item, kind in ((source, "Source image"), (driving, "Driving video")):
            if item.is_dir():
                raise QueueInputError(f"{where}: {kind} {item} is a folder; a pairs file lists files.")
            if not item.is_file():
                raise QueueInputError(f"{where}: {kind} {item} does not exist.")
        pairs.append((source, driving))
    if not pairs:
        raise QueueInputError(f"Pairs file {path} lists no pairs.")
    return pairs


def _pairs_file_rows(path: Path) -> list[Any]:
    """The raw rows of a pairs file: CSV rows (without an optional header), or the JSON list's entries."""
    if path.is_dir():
        raise QueueInputError(f"Pairs file {path} is a folder; give a .csv or .json file (or use --sources and "
                              "--drivings with folders).")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise QueueInputError(f"Pairs file {path} does not exist.") from None
    except UnicodeDecodeError as error:
        raise QueueInputError(f"Pairs file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8.") from None
    except OSError as error:
        raise QueueInputError(f"Pairs file {path} cannot be read ({error.strerror}).") from None
    if path.suffix.lower() == ".json":
        expected = 'a JSON list of {"source": ..., "driving": ...} objects or [source, driving] lists'
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            raise QueueInputError(f"Pairs file {path} is not valid JSON ({error}); expected {expected}.") from None
        if not isinstance(entries, list):
            raise QueueInputError(f"Pairs file {path} holds {shown(entries)}; expected {expected}.")
        return [(entry.get("source"), entry.get("driving")) if isinstance(entry, dict) else entry
                for entry in entries]
    rows = [tuple(cell.strip() for cell in row) for row in csv.reader(text.splitlines()) if any(c.strip() for c in row)]
    if rows and [cell.lower() for cell in rows[0]] == ["source", "driving"]:
        rows = rows[1:]
    return rows


def shown(value: Any) -> str:
    """A value from a user's file as a message shows it: JSON spelling, cut short."""
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, tuple) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class PlannedPair:
    """A source and a driving to animate, with their contents' digests (a job's identity is built on them)."""

    source: Path
    driving: Path
    source_digest: str
    driving_digest: str


def plan_jobs(pairs: list[tuple[Path, Path]]) -> list[PlannedPair]:
    """The batch's pairs with their files' digests (each file is read once)."""
    digests: dict[Path, str] = {}
    planned = []
    for source, driving in pairs:
        for path in (source, driving):
            if path not in digests:
                digests[path] = file_digest(path)
        # Absolute paths keep the state file valid when a re-run starts from another folder.
        planned.append(PlannedPair(source.resolve(), driving.resolve(), digests[source], digests[driving]))
    return planned


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content, read in chunks (driving videos can be large)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(DIGEST_CHUNK_BYTES), b""):
                digest.update(chunk)
    except OSError as error:
        raise QueueInputError(f"{path} cannot be read ({error.strerror}).") from None
    return digest.hexdigest()


def _files(path: Path, suffixes: frozenset[str], kind: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise QueueInputError(f"{kind.capitalize()} path {path} does not exist; give a file or a folder.")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not found:
        raise QueueInputError(f"Folder {path} holds no {kind} files ({', '.join(sorted(suffixes))}).")
    return found
