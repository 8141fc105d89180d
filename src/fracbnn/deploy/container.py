"""Compatibility alias: the container now lives in :mod:`fracbnn.ir.container` (torch-free)."""

from ..ir.container import (DTYPES, FORMAT_VERSION, MAGIC, PackedFormatError, read_container,  # noqa: F401
                            write_container)
