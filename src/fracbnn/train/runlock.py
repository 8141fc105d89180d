"""An OS-level lock on a run folder, held for the whole life of a training run.

Two writers in one run folder interleave metrics and overwrite each other's
checkpoints, so ``fracbnn train`` (new or ``--resume``) takes an exclusive,
non-blocking lock on ``RUN_DIR/.lock`` and refuses to start when another
process holds it. The lock is the operating system's (``fcntl.flock`` on
POSIX, ``msvcrt.locking`` on Windows): it is released when the process ends
in any way, SIGKILL included, so a killed run never leaves a stale lock. The
lock file itself stays in the folder (deleting it would race with a waiting
process); it holds the id of the last process that locked it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FracBNNError

LOCK_FILE = ".lock"


class RunLockedError(FracBNNError):
    """Another live process is training in this run folder."""


class RunLock:
    """``with RunLock(run_dir):`` holds the folder's lock; raises RunLockedError if another process has it."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                holder = _read_pid(fd)
                raise RunLockedError(f"{self.path.parent} is in use by another fracbnn train"
                                     f"{f' (process {holder})' if holder else ''}; wait for it to finish or stop "
                                     "it, or choose another --out (nothing was changed)")
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


try:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # Windows: lock the first byte of the file
    try:
        import msvcrt

        def _try_lock(fd: int) -> bool:
            os.lseek(fd, 0, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
            return True

        def _unlock(fd: int) -> None:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    except ImportError:  # neither: no OS lock to take; a run still works, unprotected
        def _try_lock(fd: int) -> bool:
            return True

        def _unlock(fd: int) -> None:
            pass
