"""Keep freed activation memory in the process during CPU training (glibc malloc).

Why: every training step allocates and frees several hundred MB of
activations. glibc returns large freed blocks to the kernel (``munmap`` and
heap trimming), so the next step touches fresh pages and pays a page fault
per 4 KiB: measured on 2 cores, about 94,000 faults per ResNet-20 FracBNN
step of 128 images, and 0.92 s per step instead of 0.72 s with the setting
(benchmarks/train_throughput.py applies it to every model it compares;
``--no-keep-freed-memory`` leaves it off). Raising the mmap and trim thresholds keeps the
memory for reuse, which is what a long-running training process wants; the
price is that the process does not give the peak back to the system before
it exits. Other allocators (jemalloc, tcmalloc) behave like this already.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc caps the mmap threshold at 32 MiB on 64-bit systems (larger blocks are still mapped).
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 2**31 - 1

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds for this process; True if applied (Linux with glibc only)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    _applied = ok
    return ok
