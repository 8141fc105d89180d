"""Pooling and channel duplication (the down-sampling shortcuts and the head)."""

from __future__ import annotations

import numpy as np

from ..op import IntegerOp, need, register_op


def _sum_pool2(r: np.ndarray) -> np.ndarray:
    N, C, H, W = r.shape
    h, w = H // 2, W // 2
    return r[:, :, :2 * h, :2 * w].astype(np.int64).reshape(N, C, h, 2, w, 2).sum(axis=(3, 5))


@register_op
class AvgPool2Dup(IntegerOp):
    """CIFAR down-sampling shortcut before its 1/4: the SUM of each 2x2 window, channels repeated.

    out[n, c, i, j] = sum over a, b in {0, 1} of r[n, c mod C, 2i + a, 2j + b]
    (2C output channels; odd trailing rows/columns are dropped). The 1/4 is
    folded into block_post's sc_mul and shift. Same as sum_pool2 then channel_dup.
    """

    name = "avgpool2_dup"

    def infer_shapes(self, node, shapes, tensors):
        x = shapes[0]
        need(x[2] >= 2 and x[3] >= 2, "a 2x2 pool needs at least 2x2 pixels")
        return [(x[0], 2 * x[1], x[2] // 2, x[3] // 2)]

    def bounds(self, node, bounds, shapes, tensors):
        return 4 * bounds[0], [4 * bounds[0]]

    def execute(self, node, inputs, tensors, ctx=None):
        s = _sum_pool2(inputs[0])
        return [np.concatenate([s, s], axis=1)]


@register_op
class SumPool2(IntegerOp):
    """2x2 stride-2 average pool before its 1/4: out[n, c, i, j] = sum over a, b in {0, 1} of x[n, c, 2i+a, 2j+b].

    Odd trailing rows/columns are dropped; the 1/4 is folded into the
    consumer's coefficients. ReActNet's pooled shortcut.
    """

    name = "sum_pool2"

    def infer_shapes(self, node, shapes, tensors):
        x = shapes[0]
        need(x[2] >= 2 and x[3] >= 2, "a 2x2 pool needs at least 2x2 pixels")
        return [(x[0], x[1], x[2] // 2, x[3] // 2)]

    def bounds(self, node, bounds, shapes, tensors):
        return 4 * bounds[0], [4 * bounds[0]]

    def execute(self, node, inputs, tensors, ctx=None):
        return [_sum_pool2(inputs[0])]


@register_op
class ChannelDup(IntegerOp):
    """Channels doubled by repetition: out[n, c, i, j] = x[n, c mod C, i, j] (2C channels).

    ReActNet's shortcut of a channel-doubling block.
    """

    name = "channel_dup"

    def infer_shapes(self, node, shapes, tensors):
        x = shapes[0]
        return [(x[0], 2 * x[1], x[2], x[3])]

    def bounds(self, node, bounds, shapes, tensors):
        return bounds[0], [bounds[0]]

    def execute(self, node, inputs, tensors, ctx=None):
        x = inputs[0]
        return [np.concatenate([x, x], axis=1)]


@register_op
class GlobalSumPool(IntegerOp):
    """Sum over all pixels per channel: int64 (N, C). The 1/(H*W) is in the logit denominator."""

    name = "global_sum_pool"

    def infer_shapes(self, node, shapes, tensors):
        x = shapes[0]
        need(len(x) == 4, "global_sum_pool needs a (N, C, H, W) input")
        return [(x[0], x[1])]

    def bounds(self, node, bounds, shapes, tensors):
        x = shapes[0]
        b = bounds[0] * x[2] * x[3]
        return b, [b]

    def execute(self, node, inputs, tensors, ctx=None):
        return [inputs[0].astype(np.int64).sum(axis=(2, 3))]
