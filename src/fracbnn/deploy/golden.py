"""The golden engine: the integer program run node by node in numpy, as the op classes define it.

The definition of every op (its exact integer semantics, which the fast CPU
engine and the FPGA design reproduce bit for bit) is the op's class in
:mod:`fracbnn.ir.ops`; docs/deploy-format.md is generated from them. This
module is the engine around that interpreter, plus the per-op functions
under their historical names for tests and tools. No torch needed.
"""

from __future__ import annotations

import numpy as np

from ..ir.arith import binary_conv2d, round_shift, saturate  # noqa: F401  (re-exported)
from ..ir.interpreter import run_program as _run
from ..ir.op import ExecContext, get_op
from .engines import Engine


def _op(name, inputs, **attrs):
    """One tensor-free op's golden execution as a plain function (outputs, or the single output)."""
    outs = get_op(name)().execute(dict(attrs, op=name), list(inputs), {})
    return outs[0] if len(outs) == 1 else tuple(outs)


def op_thermometer(image, resolution, bits):
    return _op("thermometer", [image], resolution=int(resolution), bits=int(bits))


def op_quantize2(r, frac_bits):
    return _op("quantize2", [r], frac_bits=int(frac_bits))


def op_sign_bit(r):
    return _op("sign_bit", [r])


def run_program(packed, pixels: np.ndarray, collect_gates: dict | None = None) -> dict:
    """Execute the program on uint8 pixels; returns every named buffer.

    ``collect_gates``: a dict updated with (open, total) gate counts per frac_conv output.
    """
    ctx = ExecContext()
    if collect_gates is not None:
        ctx.gate_counts = collect_gates
    return _run(packed, pixels, ctx)


class GoldenEngine(Engine):
    """Reference engine: runs the interpreter in chunks of ``chunk`` images.

    Besides the logits it keeps, over every image seen, the gate counts and
    the saturation counts of each node (see fracbnn.ir.ExecContext).
    """

    name = "golden"

    def __init__(self, packed, chunk: int = 50):
        super().__init__(packed)
        self.chunk = int(chunk)
        self._ctx = ExecContext()

    @property
    def gate_counts(self) -> dict[str, tuple[int, int]]:
        """frac_conv output buffer -> (open gates, outputs) over every image seen so far."""
        return self._ctx.gate_counts

    @property
    def saturation_counts(self) -> dict[str, tuple[int, int]]:
        """Saturating node output -> (values clipped to its width, values) over every image seen so far."""
        return self._ctx.saturation

    def logits(self, pixels) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        out = [_run(self.packed, pixels[i:i + self.chunk], self._ctx)["logits"]
               for i in range(0, len(pixels), self.chunk)]
        if not out:
            return np.zeros((0, self.packed.num_classes), np.int64)
        return np.concatenate(out).astype(np.int64)
