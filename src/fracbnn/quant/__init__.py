"""Quantizers and input encoders.

Every quantizer is a tiny module carrying ``precision`` (bits per value), so
tooling such as :mod:`fracbnn.summary` can count bits without special cases.
"""

from .quantizers import ActivationQuantizer, BinaryWeight, PrecisionGate, Quantizer
from .thermometer import ThermometerEncoder, thermometer_bits, thermometer_level, to_pixels

__all__ = [
    "ActivationQuantizer",
    "BinaryWeight",
    "PrecisionGate",
    "Quantizer",
    "ThermometerEncoder",
    "thermometer_bits",
    "thermometer_level",
    "to_pixels",
]
