"""Compatibility alias: the packed model and its validation live in :mod:`fracbnn.ir` (torch-free)."""

from ..ir.arith import pack_weight_bits, unpack_weight_bits  # noqa: F401
from ..ir.container import PackedFormatError  # noqa: F401
from ..ir.model import KIND, PackedModel, accumulator_bits, infer_shapes, value_bounds  # noqa: F401
