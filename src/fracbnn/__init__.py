"""FracBNN: binary neural networks with fractional (1-to-2-bit) activations."""

__version__ = "0.1.0"
