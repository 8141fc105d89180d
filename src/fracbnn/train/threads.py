"""How many CPU threads training uses: all free cores, not cores that other processes are busy on.

torch's default is one thread per core. On a machine where other processes
already keep cores busy, its threads then wait for each other at every
parallel region (each op synchronises all of them), and training gets much
slower than with fewer threads: on a 2-core machine with one core busy, 2
threads trained at 11-16 images/s, 1 thread at 63-72 (issue 13). ``auto``
therefore uses the cores that are free now: the usable cores minus the
1-minute load average (rounded), at least 1 and at most torch's default.
The load average is a coarse, lagging signal, so a recipe or
``--threads N`` can always set the count.
"""

from __future__ import annotations

import os

import torch


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def current_load() -> float | None:
    """The 1-minute load average, or None where the OS does not report one (Windows)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def auto_threads(default: int | None = None, cores: int | None = None, load: float | None = None) -> int:
    """min(default, max(1, cores - round(load))): torch's default thread count, less the busy cores."""
    default = int(default or torch.get_num_threads())
    cores = int(cores or usable_cores())
    if load is None:
        return default
    return max(1, min(default, cores - int(round(load))))


def choose_threads(setting) -> tuple[int, str]:
    """(thread count, why) for a recipe's ``runtime.threads`` value ("auto"/None or a positive int)."""
    if setting not in (None, "auto"):
        return int(setting), "set by runtime.threads"
    default, cores, load = torch.get_num_threads(), usable_cores(), current_load()
    n = auto_threads(default, cores, load)
    load_text = "unknown load" if load is None else f"load {load:.2f}"
    return n, f"auto: {cores} cores, {load_text}; set runtime.threads or --threads to override"
