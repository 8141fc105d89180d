"""File helpers shared by the torch side and the torch-free integer side.

Kept free of torch (and of every other fracbnn module) so that reading and
writing ``.fbnn`` files works where torch is not installed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


#: prefix/suffix of atomic_write's temporary files (a killed writer can leave one; see stray_temp_files)
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0o666 minus the umask (0644 usually).

    atomic_write applies it to its temporary file (mkstemp makes 0600), so
    checkpoints, recipes, metrics and plots all get the same mode.
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename it over ``path``.

    A crash or kill at any moment leaves either the old file or the new one,
    never a partial file; the temporary file is removed on failure (after a
    SIGKILL it stays, named ``.<name>.<random>.tmp``; the trainer deletes
    such files at its next start).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if hasattr(os, "fchmod"):  # POSIX; elsewhere mkstemp's mode is already the normal one
                os.fchmod(f.fileno(), default_file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def stray_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files atomic_write left under ``folder`` when its process was killed mid-write.

    Only call this while no other process can be writing there (the trainer
    holds the run folder's lock).
    """
    return sorted(p for p in Path(folder).rglob(f"{TMP_PREFIX}*{TMP_SUFFIX}")
                  if p.is_file() and p.name.count(".") >= 3)
