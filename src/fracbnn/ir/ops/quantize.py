"""Activation quantizers on the fixed-point residual stream r (value r / 2^F)."""

from __future__ import annotations

import numpy as np

from ..op import BITS, IntegerOp, need, register_op


def uniform_code(r: np.ndarray, frac_bits: int, bits: int) -> np.ndarray:
    """Code c in 0..L (L = 2^k - 1) of the k-bit quantizer on x = r / 2^F, int64.

    The trained quantizer is c = round_half_even((clamp(x, -1, 1) + 1) L / 2).
    For integer r the only reachable tie is the middle one (x = 0, between
    codes (L-1)/2 and (L+1)/2, the even one being the upper), where rounding
    half up agrees, so c = clamp(floor((L (r + 2^F) + 2^F) / 2^(F+1)), 0, L).
    """
    L = (1 << int(bits)) - 1
    one = np.int64(1) << np.int64(frac_bits)
    c = (np.int64(L) * (r.astype(np.int64) + one) + one) >> np.int64(frac_bits + 1)
    return np.clip(c, 0, L)


@register_op
class Quantize2(IntegerOp):
    """2-bit quantizer Q2 on r (value r / 2^F), as MSB and LSB bit planes.

    The code c = round_half_even((clamp(x, -1, 1) + 1) * 3/2) in 0..3 equals
        c = [3r > -2^(F+1)] + [r >= 0] + [3r > 2^(F+1)]
    (level boundaries x = -2/3, 0, +2/3; r is never exactly on +-2/3, and at
    x = 0 the tie 1.5 rounds to the even code 2, hence >=).
    Outputs m = c >> 1 and l = c & 1 (1 means +1); the value is (2M + L)/3
    with M = 2m - 1, L = 2l - 1.
    """

    name = "quantize2"
    arity = {"output": 2}
    params = {"frac_bits": "F of the input"}
    out_kind = BITS

    def infer_shapes(self, node, shapes, tensors):
        need(0 <= node["frac_bits"] <= 60, "bad frac_bits")
        return [shapes[0], shapes[0]]

    def bounds(self, node, bounds, shapes, tensors):
        return 1, [1, 1]

    def execute(self, node, inputs, tensors, ctx=None):
        r = inputs[0].astype(np.int64)
        b = np.int64(1) << np.int64(node["frac_bits"] + 1)
        c = (3 * r > -b).astype(np.int64) + (r >= 0) + (3 * r > b)
        return [(c >> 1).astype(np.uint8), (c & 1).astype(np.uint8)]


@register_op
class SignBit(IntegerOp):
    """1-bit quantizer sign(x) with sign(0) = +1: bit = [r >= 0]."""

    name = "sign_bit"
    out_kind = BITS

    def infer_shapes(self, node, shapes, tensors):
        return [shapes[0]]

    def bounds(self, node, bounds, shapes, tensors):
        return 1, [1]

    def execute(self, node, inputs, tensors, ctx=None):
        return [(inputs[0] >= 0).astype(np.uint8)]


@register_op
class Quantize(IntegerOp):
    """k-bit quantizer Qk (k = ``bits``, 2..8) on r (value r / 2^F), as a signed odd integer.

    With L = 2^k - 1 and the code c = clamp(floor((L (r + 2^F) + 2^F) / 2^(F+1)), 0, L)
    (the trained round_half_even((clamp(x, -1, 1) + 1) L / 2), see
    ``uniform_code``), the output is v = 2c - L in -L..L, whose real value is
    v / L. Used for ReActNet's 4-bit shortcuts; the 1/L is folded into the
    consumer's coefficients.
    """

    name = "quantize"
    params = {"frac_bits": "F of the input", "bits": "k, 2..8"}

    def infer_shapes(self, node, shapes, tensors):
        need(2 <= node["bits"] <= 8 and 0 <= node["frac_bits"] <= 52, "bad bits or frac_bits")
        return [shapes[0]]

    def bounds(self, node, bounds, shapes, tensors):
        L = (1 << node["bits"]) - 1
        return L * (bounds[0] + (1 << node["frac_bits"])) + (1 << node["frac_bits"]), [L]

    def execute(self, node, inputs, tensors, ctx=None):
        L = (1 << node["bits"]) - 1
        return [2 * uniform_code(inputs[0], node["frac_bits"], node["bits"]) - L]
