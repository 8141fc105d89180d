"""Folded per-channel fixed-point epilogues: BatchNorm, RPReLU and the residual addition."""

from __future__ import annotations

import numpy as np

from ..arith import round_shift, saturate
from ..op import IntegerOp, max_abs, need, register_op

_SHIFT = {"shift": "right shift after the sum (rounding, ties up)", "bits": "B, saturation width of the output"}


def _saturate(v, node, ctx):
    """saturate(v, bits), reporting clipped values and the peak to the execution context."""
    if ctx is not None:
        ctx.count_saturation(node["output"], v, node["bits"])
    return saturate(v, node["bits"])


def _check_shift(node):
    need(0 <= node["shift"] < 62 and 2 <= node["bits"] <= 62, "bad shift or bits")


@register_op
class ScaleShift(IntegerOp):
    """Per-channel affine into the residual format: saturate(round_shift(s * mul[c] + add[c], shift), bits).

    ``mul``, ``add``: int64 (C,). Folds the stem's BatchNorm.
    """

    name = "scale_shift"
    tensors = {"mul": "int64", "add": "int64"}
    params = _SHIFT

    def infer_shapes(self, node, shapes, tensors):
        x = shapes[0]
        for t in ("mul", "add"):
            need(tensors[node[t]].shape == (x[1],), f"{t} shape mismatch")
        _check_shift(node)
        return [x]

    def bounds(self, node, bounds, shapes, tensors):
        b = max_abs(tensors[node["mul"]]) * bounds[0] + max_abs(tensors[node["add"]])
        return b, [min(b, 1 << (node["bits"] - 1))]

    def execute(self, node, inputs, tensors, ctx=None):
        v = lambda t: tensors[node[t]].reshape(1, -1, 1, 1)  # noqa: E731
        acc = inputs[0].astype(np.int64) * v("mul") + v("add")
        return [_saturate(round_shift(acc, node["shift"]), node, ctx)]


@register_op
class BlockPost(IntegerOp):
    """BatchNorm -> RPReLU -> + shortcut -> BatchNorm, folded; per channel c:

        pos = sign[c] * a > threshold[c]          (the RPReLU's positive side)
        acc = (pos ? pos_mul[c] * a + pos_add[c] : neg_mul[c] * a + neg_add[c])
              + sc_mul[c] * shortcut
        out = saturate(round_shift(acc, shift), bits)

    ``a`` is a convolution's accumulator, ``shortcut`` any integer buffer of
    the same shape (a residual, a pooled residual, quantized shortcut codes);
    every coefficient is int64 (C,).
    """

    name = "block_post"
    inputs = ("input", "shortcut")
    tensors = {k: "int64" for k in ("sign", "threshold", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul")}
    params = _SHIFT

    def infer_shapes(self, node, shapes, tensors):
        x, sc = shapes
        need(sc == x, f"shortcut shape {sc} differs from conv output {x}")
        for t in self.tensors:
            need(tensors[node[t]].shape == (x[1],), f"{t} shape mismatch")
        _check_shift(node)
        return [x]

    def bounds(self, node, bounds, shapes, tensors):
        a, sc = bounds
        m = lambda t: max_abs(tensors[node[t]])  # noqa: E731
        b = max(m("pos_mul") * a + m("pos_add"), m("neg_mul") * a + m("neg_add")) + m("sc_mul") * sc
        return b, [min(b, 1 << (node["bits"] - 1))]

    def execute(self, node, inputs, tensors, ctx=None):
        v = lambda t: tensors[node[t]].reshape(1, -1, 1, 1)  # noqa: E731
        a = inputs[0].astype(np.int64)
        pos = v("sign") * a > v("threshold")
        acc = np.where(pos, v("pos_mul") * a + v("pos_add"), v("neg_mul") * a + v("neg_add"))
        acc = acc + v("sc_mul") * inputs[1].astype(np.int64)
        return [_saturate(round_shift(acc, node["shift"]), node, ctx)]
