"""One queue per output folder: `folder_lock` holds an operating-system lock on a file in the folder while a queue
runs there, so that the same command started twice never renders a job twice. The lock goes with the process that
holds it (a killed queue leaves no stale lock), and the file names the process, so the second one can say which.
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE_NAME = ".queue.lock"
# Windows locks byte ranges, and a locked range cannot be read by others: the lock is taken far beyond the text that
# names the holder.
WINDOWS_LOCK_OFFSET = 1 << 20
HOLDER_BYTES = 200
BUSY_ERRNOS = frozenset({errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK})


class FolderBusyError(RuntimeError):
    """Another queue runs in this output folder."""


class FolderUnusableError(ValueError):
    """The output folder cannot be made or written (a file by that name, a read-only place)."""


@contextlib.contextmanager
def folder_lock(folder: Path, what: str = "--output") -> Iterator[None]:
    """Hold the output folder's lock while the block runs; FolderBusyError when another process holds it."""
    lock_path = folder / LOCK_FILE_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileExistsError:
        raise FolderUnusableError(f"{what} '{folder}' is a file, not a folder; give a folder for the outputs.") \
            from None
    except NotADirectoryError:
        raise FolderUnusableError(f"{what} '{folder}' lies inside a file, not a folder; give a folder for the "
                                  "outputs.") from None
    except OSError as error:
        raise FolderUnusableError(f"{what} '{folder}' cannot be written ({error.strerror}); give a folder you can "
                                  "write to.") from None
    try:
        if not _try_lock(descriptor):
            raise FolderBusyError(
                f"Another queue is running in {folder} ({_holder(lock_path)}): two queues on one output folder "
                "would render the same jobs twice. Wait for it to finish (or stop it), or give another --output."
            )
        _write_holder(descriptor)
        try:
            yield
        finally:
            _unlock(descriptor)
    finally:
        os.close(descriptor)


def _holder(lock_path: Path) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = lock_path.read_bytes()[:HOLDER_BYTES].decode().strip()
        if text:
            return text
    return "process unknown"


def _write_holder(descriptor: int) -> None:
    """Name this process in the lock file, padded to a fixed length so that it covers any earlier holder's text."""
    text = f"PID {os.getpid()} on {socket.gethostname()}".encode()[:HOLDER_BYTES]
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, text.ljust(HOLDER_BYTES))


if sys.platform == "win32":
    import msvcrt

    def _try_lock(descriptor: int) -> bool:
        os.lseek(descriptor, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(descriptor: int) -> None:
        os.lseek(descriptor, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(descriptor: int) -> bool:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in BUSY_ERRNOS:
                return False
            raise
        return True

    def _unlock(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
