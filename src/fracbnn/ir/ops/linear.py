"""The classifier."""

from __future__ import annotations

import numpy as np

from ..op import IntegerOp, max_abs, need, register_op


@register_op
class Linear(IntegerOp):
    """Integer logits: out[n, k] = sum_c p[n, c] * weight[k, c] + bias[k] (int64, exact).

    ``weight``: int64 (K, C); ``bias``: int64 (K,).
    """

    name = "linear"
    tensors = {"weight": "int64", "bias": "int64"}

    def infer_shapes(self, node, shapes, tensors):
        x = shapes[0]
        w, b = tensors[node["weight"]], tensors[node["bias"]]
        need(len(x) == 2, "linear needs a (N, C) input")
        need(w.ndim == 2 and w.shape[1] == x[1] and b.shape == (w.shape[0],), "weight/bias shape mismatch")
        return [(x[0], w.shape[0])]

    def bounds(self, node, bounds, shapes, tensors):
        w = tensors[node["weight"]]
        b = max_abs(w) * bounds[0] * w.shape[1] + max_abs(tensors[node["bias"]])
        return b, [b]

    def execute(self, node, inputs, tensors, ctx=None):
        w, b = tensors[node["weight"]], tensors[node["bias"]]
        return [inputs[0].astype(np.int64) @ w.T.astype(np.int64) + b.astype(np.int64)]
