"""File helpers shared by the torch side and the torch-free integer side.

Kept free of torch (and of every other fracbnn module) so that reading and
writing ``.fbnn`` files works where torch is not installed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename it over ``path``.

    A crash or kill at any moment leaves either the old file or the new one,
    never a partial file; the temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
