"""The built-in integer ops; importing this package registers them (in documentation order)."""

from . import encode, conv, quantize, affine, pool, linear  # noqa: F401
