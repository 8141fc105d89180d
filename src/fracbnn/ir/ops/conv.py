"""Binary convolutions: plain (1-bit input) and precision-gated (2-bit input as two planes)."""

from __future__ import annotations

import numpy as np

from ..arith import binary_conv2d, conv_out, unpack_weight_bits
from ..op import IntegerOp, need, register_op

_CONV_PARAMS = {"in_channels": "Cin", "out_channels": "Cout", "kernel": "K (square)", "stride": "s",
                "padding": "p (zero padding, counted as absent taps)"}


class _Conv(IntegerOp):
    params = _CONV_PARAMS

    def check_geometry(self, node, x, tensors):
        cin, cout, k, s, p = (node[a] for a in ("in_channels", "out_channels", "kernel", "stride", "padding"))
        need(k >= 1 and s >= 1 and p >= 0, "bad kernel/stride/padding")
        need(x[1] == cin, f"input has {x[1]} channels, op says {cin}")
        need(tensors[node["weight"]].shape == (cout, k, k, (cin + 7) // 8), "weight shape mismatch")
        ho, wo = conv_out(x[2], k, s, p), conv_out(x[3], k, s, p)
        need(ho >= 1 and wo >= 1, "kernel larger than the padded input")
        return (x[0], cout, ho, wo)

    @staticmethod
    def taps(node) -> int:
        return node["in_channels"] * node["kernel"] ** 2

    @staticmethod
    def weight_bits(node, tensors) -> np.ndarray:
        """The (Cout, Cin, K, K) 0/1 weights."""
        return unpack_weight_bits(tensors[node["weight"]], node["in_channels"])


@register_op
class BinaryConv(_Conv):
    """XNOR-popcount convolution of a bit plane: S = binary_conv2d(x, w), int64 (N, Cout, Ho, Wo).

    Over the taps (c, u, v) whose input pixel lies inside the image,
    S = 2 * #{x bit == w bit} - #{valid taps}: the convolution of the +-1
    values with zero padding (a padded tap adds nothing).
    ``weight``: uint8 (Cout, K, K, ceil(Cin/8)), input channels packed 8 per
    byte, least significant bit first, 1 = +1.
    """

    name = "binary_conv"
    tensors = {"weight": "uint8"}

    def infer_shapes(self, node, shapes, tensors):
        return [self.check_geometry(node, shapes[0], tensors)]

    def bounds(self, node, bounds, shapes, tensors):
        return self.taps(node), [self.taps(node)]

    def execute(self, node, inputs, tensors, ctx=None):
        return [binary_conv2d(inputs[0], self.weight_bits(node, tensors), node["stride"], node["padding"])]


@register_op
class FracConv(_Conv):
    """Precision-gated 2-bit convolution of an MSB and an LSB plane; A = 3 x (the real output), int64.

        S_M = binary_conv2d(msb), S_L = binary_conv2d(lsb)    (same weights)
        open = S_M > gate_threshold[o]       (per output channel o; all open if null)
        A = 2 * S_M + open * S_L

    The real output is (2/3) S_M + open (1/3) S_L; the trained gate
    (2/3) S_M > theta is exactly S_M > floor(3 theta / 2) for integer S_M.
    Where the gate is closed the LSB sum is not needed (an engine may skip it).
    """

    name = "frac_conv"
    arity = {"input": 2}
    tensors = {"weight": "uint8", "gate_threshold": "int64"}
    optional = frozenset({"gate_threshold"})

    def infer_shapes(self, node, shapes, tensors):
        need(shapes[0] == shapes[1], "frac_conv needs two equal-shaped bit planes")
        out = self.check_geometry(node, shapes[0], tensors)
        gate = self.tensor(node, tensors, "gate_threshold")
        need(gate is None or gate.shape == (node["out_channels"],), "gate threshold shape mismatch")
        return [out]

    def bounds(self, node, bounds, shapes, tensors):
        return 3 * self.taps(node), [3 * self.taps(node)]

    def execute(self, node, inputs, tensors, ctx=None):
        acc, is_open = self.with_gate(node, inputs, tensors)
        if ctx is not None:
            ctx.count_gates(node["output"], is_open)
        return [acc]

    def with_gate(self, node, inputs, tensors):
        """(A, boolean gate): the gate is True where the LSB pass is used."""
        m_bits, l_bits = inputs
        w = self.weight_bits(node, tensors)
        s_m = binary_conv2d(m_bits, w, node["stride"], node["padding"])
        gate = self.tensor(node, tensors, "gate_threshold")
        is_open = np.ones(s_m.shape, bool) if gate is None else s_m > gate.reshape(1, -1, 1, 1)
        if not is_open.any():
            return 2 * s_m, is_open
        s_l = binary_conv2d(l_bits, w, node["stride"], node["padding"])
        return 2 * s_m + np.where(is_open, s_l, 0), is_open
