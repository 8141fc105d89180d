"""Measurements on packed models that choose integer attributes of their nodes.

``measure`` runs the golden program and reports what it saw (gate counts,
clipped values, pre-saturation peaks); ``fit_residual_bits`` turns peaks into
per-node saturation widths, which the exporter writes into the nodes
(``export_model(..., residual_widths=...)``). Pure functions of their inputs.
"""

from __future__ import annotations

import numpy as np

from .interpreter import run_program
from .model import PackedModel
from .op import ExecContext

#: ops whose output is a saturating residual (the only places a value can clip)
SATURATING = ("scale_shift", "block_post")


def measure(packed: PackedModel, images: np.ndarray, chunk: int = 50) -> ExecContext:
    """Golden run over ``images``: gate counts, clipped values and pre-saturation peaks per node."""
    ctx = ExecContext()
    for i in range(0, len(images), chunk):
        run_program(packed, images[i:i + chunk], ctx)
    return ctx


def fit_residual_bits(packed: PackedModel, peaks: dict[str, float], frac_bits: int | dict[str, int],
                      headroom: float = 2.0) -> dict[str, int]:
    """Per saturating node, the narrowest width holding ``headroom`` x its measured peak (at least F + 2 bits).

    ``peaks`` are real values (|x|, not integers); ``frac_bits`` is one F for
    every node or a mapping from each saturating node's output buffer to its F.
    """
    widths = {}
    for node in packed.program:
        if node["op"] in SATURATING:
            out = node["output"]
            F = frac_bits if isinstance(frac_bits, int) else int(frac_bits[out])
            peak = int(np.ceil(peaks.get(out, 0.0) * headroom * 2.0 ** F))
            widths[out] = max(F + 2, peak.bit_length() + 1)
    return widths
