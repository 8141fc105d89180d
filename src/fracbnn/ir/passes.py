"""Graph-to-graph passes on packed models: pure functions, each returning a new validated model.

A pass never touches the trained model; it rewrites integer attributes of
nodes whose meaning the op classes define (e.g. a saturation width), and
recomputes what the metadata derives from them.
"""

from __future__ import annotations

import copy

import numpy as np

from .interpreter import run_program
from .model import PackedModel, accumulator_bits
from .op import ExecContext

#: ops whose output is a saturating residual (the only places a value can clip)
SATURATING = ("scale_shift", "block_post")


def measure(packed: PackedModel, images: np.ndarray, chunk: int = 50) -> ExecContext:
    """Golden run over ``images``: gate counts, clipped values and pre-saturation peaks per node."""
    ctx = ExecContext()
    for i in range(0, len(images), chunk):
        run_program(packed, images[i:i + chunk], ctx)
    return ctx


def with_residual_bits(packed: PackedModel, bits: dict[str, int]) -> PackedModel:
    """A copy of ``packed`` whose saturating nodes (by output buffer) get the given widths."""
    meta = copy.deepcopy(packed.meta)
    for node in meta["program"]:
        if node["op"] in SATURATING and node["output"] in bits:
            node["bits"] = int(bits[node["output"]])
    meta["accumulator_bits"] = accumulator_bits(meta["program"], tuple(meta["input_size"]), packed.tensors)
    out = PackedModel(meta, packed.tensors)
    out.validate()
    return out


def fit_residual_bits(packed: PackedModel, peaks: dict[str, int], frac_bits: int, headroom: float = 2.0
                      ) -> dict[str, int]:
    """Per saturating node, the narrowest width holding ``headroom`` x its measured peak (at least F + 2 bits)."""
    widths = {}
    for node in packed.program:
        if node["op"] in SATURATING:
            peak = int(np.ceil(peaks.get(node["output"], 0) * headroom))
            widths[node["output"]] = max(frac_bits + 2, peak.bit_length() + 1)
    return widths
