"""Layers of binary and fractional-activation networks."""

from .layers import (
    CONV_MODES,
    BinaryConv2d,
    FracConv2d,
    GateCounter,
    RPReLU,
    gate_regularizer,
    gate_statistics,
    reset_gate_statistics,
    set_conv_mode,
    sparsity_by_layer,
)
from .input_layer import ThermometerConv2d

__all__ = [
    "CONV_MODES",
    "BinaryConv2d",
    "FracConv2d",
    "GateCounter",
    "RPReLU",
    "ThermometerConv2d",
    "gate_regularizer",
    "gate_statistics",
    "reset_gate_statistics",
    "set_conv_mode",
    "sparsity_by_layer",
]
