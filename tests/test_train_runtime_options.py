"""Runtime switches of CPU training that must work whether or not the C kernels were built."""

import sys

import torch

from fracbnn.nn import cpu_ops
from fracbnn.train.allocator import keep_freed_memory


def test_kernel_switch_and_training_note(monkeypatch):
    cpu = torch.device("cpu")
    assert cpu_ops.training_note(torch.device("cuda"), True) is None  # only CPU runs get a note
    with cpu_ops.disabled():
        assert not cpu_ops.enabled() and not cpu_ops.usable(torch.zeros(2))
        assert cpu_ops.training_note(cpu, False) is not None
    monkeypatch.setattr(cpu_ops, "_ops", None)  # as if no compiler was there at install
    assert not cpu_ops.built() and not cpu_ops.usable(torch.zeros(2))
    assert "not built" in cpu_ops.training_note(cpu, False)
    monkeypatch.undo()
    if cpu_ops.built():
        assert cpu_ops.training_note(cpu, False) is None
        assert "channels_last" in cpu_ops.training_note(cpu, True)


def test_keep_freed_memory_applies_on_glibc_linux():
    applied = keep_freed_memory()
    if sys.platform.startswith("linux"):
        import ctypes.util

        libc = ctypes.util.find_library("c") or ""
        if "musl" not in libc:
            assert applied is True
            assert keep_freed_memory() is True  # idempotent
    else:
        assert applied is False
