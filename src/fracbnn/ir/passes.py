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


def fit_residual_bits(packed: PackedModel, peaks: dict[str, int], frac_bits: int, headroom: float = 2.0
                      ) -> dict[str, int]:
    """Per saturating node, the narrowest width holding ``headroom`` x its measured peak (at least F + 2 bits)."""
    widths = {}
    for node in packed.program:
        if node["op"] in SATURATING:
            peak = int(np.ceil(peaks.get(node["output"], 0) * headroom))
            widths[node["output"]] = max(frac_bits + 2, peak.bit_length() + 1)
    return widths
