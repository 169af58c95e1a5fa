"""Names the queue gives on disk: job folders (`anna__smile`, in any script: `анна__улыбка`) and the files downloaded
into them. Names are readable and safe on every filesystem, and never depend on a job's position in the batch.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .comfy_client import OutputFile

# Characters that some filesystem refuses (Windows: <>:"/\|?*) and control characters; letters and digits of every
# script stay as they are.
UNSAFE_CHARACTERS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
MAX_PART_BYTES = 100  # two parts and a suffix stay well under the 255 bytes most filesystems allow in a name


def safe_part(text: str, fallback: str) -> str:
    """`text` as one readable, filesystem-safe name part: composed Unicode (NFC, as macOS and Linux then agree),
    unsafe characters as '_', no leading or trailing dots and spaces, at most MAX_PART_BYTES of UTF-8."""
    name = UNSAFE_CHARACTERS.sub("_", unicodedata.normalize("NFC", text)).strip(" .")
    while len(name.encode()) > MAX_PART_BYTES:
        name = name[:-1]
    return name.strip(" .") or fallback


def job_name(source: Path, driving: Path) -> str:
    """The readable name of a job's folder: `<source name>__<driving name>`."""
    return f"{safe_part(source.stem, 'source')}__{safe_part(driving.stem, 'driving')}"


def output_names(outputs: Iterable[OutputFile]) -> dict[OutputFile, str]:
    """Where each of a job's output files goes in its folder: its own name, or, when several outputs share a name
    (two save nodes writing into different subfolders), the name prefixed with its subfolder (`a__XP_00001_.mp4`),
    and a counter if even that is shared. The same file listed twice is downloaded once."""
    unique = list(dict.fromkeys(outputs))
    plain = {output: safe_part(PurePosixPath(output.filename).name, "output") for output in unique}
    shared = Counter(plain.values())
    names: dict[OutputFile, str] = {}
    taken: set[str] = set()
    for output in unique:
        name = plain[output]
        if shared[name] > 1:
            folders = [safe_part(part, "_") for part in re.split(r"[\\/]", output.subfolder)
                       if part not in ("", ".", "..")]
            name = "__".join([*folders, name])
        base, counter = name, 1
        while name.lower() in taken:  # case-insensitive filesystems (Windows, macOS) would merge these
            counter += 1
            stem, dot, suffix = base.rpartition(".")
            name = f"{stem}_{counter}.{suffix}" if dot else f"{base}_{counter}"
        taken.add(name.lower())
        names[output] = name
    return names
