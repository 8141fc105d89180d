"""The input layer's encoder."""

from __future__ import annotations

import numpy as np

from ..arith import thermometer_level
from ..op import BITS, IntegerOp, need, register_op


@register_op
class Thermometer(IntegerOp):
    """uint8 pixels (N, C, H, W) -> bit planes (N, C*T, H, W), T = ``bits``.

    n = round_half_even(p / R) with R = ``resolution``; output channel
    c*T + k is 1 (+1) if k < n else 0 (-1) (colour-major, as in training).
    """

    name = "thermometer"
    params = {"resolution": "R, pixel values per thermometer step (1..255)", "bits": "T, bits per colour"}
    out_kind = BITS

    def infer_shapes(self, node, shapes, tensors):
        (x,) = shapes
        need(node["bits"] >= 1 and 1 <= node["resolution"] <= 255, "bad resolution or bits")
        return [(x[0], x[1] * node["bits"], x[2], x[3])]

    def bounds(self, node, bounds, shapes, tensors):
        return 1, [1]

    def execute(self, node, inputs, tensors, ctx=None):
        (image,) = inputs
        bits = node["bits"]
        n = thermometer_level(image.astype(np.int64), node["resolution"])  # (N, C, H, W)
        k = np.arange(bits).reshape(1, 1, bits, 1, 1)
        out = (k < n[:, :, None]).astype(np.uint8)
        N, C, H, W = image.shape
        return [out.reshape(N, C * bits, H, W)]
