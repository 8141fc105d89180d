"""Golden execution of a program: each node run by its op's ``execute``, in order."""

from __future__ import annotations

import numpy as np

from .op import ExecContext, get_op


def run_program(packed, pixels: np.ndarray, ctx: ExecContext | None = None) -> dict[str, np.ndarray]:
    """Execute the program on uint8 pixels (N, C, H, W); returns every named buffer."""
    t = packed.tensors
    buf = {"image": pixels}
    for node in packed.program:
        try:
            op = get_op(node["op"])
        except KeyError:  # validate() rejects unknown ops; this guards programs built in memory
            raise ValueError(f"unknown op {node['op']!r}") from None
        outs = op().execute(node, [buf[b] for b in op.input_buffers(node)], t, ctx)
        for b, v in zip(op.output_buffers(node), outs):
            buf[b] = v
    return buf
