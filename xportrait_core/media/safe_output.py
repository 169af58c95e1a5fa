"""Writing result files without ever losing one: every writer of videos, checkpoints and state files goes through
here.

- `check_output_path` is asked BEFORE any work is spent: a suffix that cannot be written, a folder given as the
  output, a missing or unwritable folder, or an output that is one of the run's inputs (or another output) is an
  `OutputPathError` naming the option, what is wrong and what to do.
- `atomic_output` writes to a temporary file beside the destination (same folder, so the final rename is atomic)
  and renames it over the destination only once complete. A full disk, an encoder error or Ctrl-C leaves the
  previous file at the destination untouched and removes the temporary file; a killed process can leave only a
  hidden `.NAME.partial-XXXXXXXX.SUFFIX` beside it, never a half-written destination.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

PARTIAL_MARK = ".partial-"  # in the names of the temporary files; nothing else is ever named like this
NEW_FILE_MODE = 0o666  # what open() gives a new file before the umask, so results get the usual permissions
RANDOM_NAME_BYTES = 4
DEFAULT_NAME_MAX = 255  # bytes per file name on ext4, xfs, btrfs, APFS and NTFS (in UTF-16 units there)


class OutputPathError(ValueError):
    """An output path that cannot (or must not) be written, found before any work is spent."""


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two paths name the same file: through symlinks, `..`, relative spellings and hard links."""
    first, second = Path(first), Path(second)
    with contextlib.suppress(OSError):
        if first.exists() and second.exists():
            return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


def check_output_path(path: str | os.PathLike, what: str, suffixes: Sequence[str] = (),
                      inputs: Mapping[str, str | os.PathLike | None] | None = None) -> Path:
    """Check that `path` can be written as an output, before any work is spent; returns it as a Path.

    what: how the user gave it (e.g. "output", "--comparison"), the start of every message.
    suffixes: the accepted suffixes (lower case, with the dot); empty accepts any.
    inputs: {how the user gave it: path} of the files this run reads (and outputs already checked): the output
        must be none of them, so that writing it never destroys an input.
    """
    path = Path(path)
    shown = f"{what} '{path}'"
    limit = name_max(path.parent)
    if len(os.fsencode(path.name)) > limit:  # first: the file system refuses even to look such a name up
        raise OutputPathError(f"{shown}: the name is {len(os.fsencode(path.name))} bytes long, more than this file "
                              f"system allows ({limit}); give a shorter name.")
    if path.is_dir():
        example = path / f"result{suffixes[0] if suffixes else ''}"
        raise OutputPathError(f"{shown} is a folder; give a file name, e.g. '{example}'.")
    if suffixes and path.suffix.lower() not in suffixes:
        found = f"a '{path.suffix}' file" if path.suffix else "a file without a suffix"
        raise OutputPathError(f"{shown}: cannot write {found}; the name must end in {_alternatives(suffixes)}.")
    for name, input_path in (inputs or {}).items():
        if input_path is not None and same_file(path, input_path):
            raise OutputPathError(f"{shown} is the {name} ('{input_path}'): writing it would destroy that file; "
                                  f"give the {what} another name.")
    folder = path.parent
    if not folder.exists():
        raise OutputPathError(f"{shown}: the folder '{folder}' does not exist; create it first (mkdir) or choose "
                              "another folder.")
    if not folder.is_dir():
        raise OutputPathError(f"{shown}: '{folder}' is a file, not a folder; choose another output path.")
    _check_writable(folder, shown)
    return path


def _alternatives(choices: Sequence[str]) -> str:
    """('.mp4', '.webm', '.gif') -> '.mp4, .webm or .gif'."""
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def _check_writable(folder: Path, shown: str) -> None:
    """Create and remove a probe file: the only test that also catches read-only mounts and root-owned folders."""
    try:
        descriptor, probe = _create_beside(folder / "write-probe")
    except OSError as error:
        reason = "it is read-only" if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else error.strerror
        raise OutputPathError(f"{shown}: cannot write into the folder '{folder}' ({reason}); choose another "
                              "folder or change its permissions.") from error
    os.close(descriptor)
    probe.unlink()


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, empty, uniquely named hidden file in the folder of `path`, with the same suffix (writers such as
    FFmpeg pick the format by suffix)."""
    tail = f"{PARTIAL_MARK}{secrets.token_hex(RANDOM_NAME_BYTES)}{path.suffix}"
    # the stem is shortened when needed, so a legal output name always has a legal temporary name
    room = name_max(path.parent) - len(os.fsencode("." + tail))
    stem = os.fsencode(path.stem)[:max(room, 1)].decode("utf-8", "ignore")  # no half character at the cut
    temporary = path.with_name(f".{stem}{tail}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    return descriptor, temporary


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of `folder` takes; POSIX's usual 255 when it cannot say."""
    try:
        return os.pathconf(folder if folder.exists() else Path.cwd(), "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write the whole output to; on success it is flushed to disk and
    renamed over `path` (atomic), on any error or interrupt it is removed and `path` stays as it was."""
    path = Path(path)
    descriptor, temporary = _create_beside(path)
    os.close(descriptor)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
