"""Residual widths chosen per layer from calibration images, so that nothing saturates silently.

One global residual width B either wastes bits on quiet layers or clips the
loud ones (the authors' ResNet-20 reaches |x| = 28 in its last block, beyond
the default B = 27's |x| < 16). ``calibrated_export`` exports once with a
wide stream (F + 8 bits, |x| < 128), measures every saturating node's peak
on calibration images with the golden engine, gives each node the narrowest
width holding ``headroom`` x its peak, and exports again with those widths.
The widths live in the nodes' ``bits`` attributes, which every engine and
the hardware generator already read.
"""

from __future__ import annotations

import numpy as np

from ..errors import FracBNNError
from ..ir.passes import fit_residual_bits, measure
from .export import FixedPoint, export_model

CALIBRATION_INT_BITS = 8  # the measuring export holds |x| < 2^(8-1) = 128


def calibrated_export(model, fx: FixedPoint, images: np.ndarray, headroom: float = 2.0, **kwargs):
    """(packed model with per-layer residual widths, calibration report)."""
    wide = FixedPoint(fx.frac_bits, fx.frac_bits + CALIBRATION_INT_BITS, fx.param_frac_bits).check()
    probe = export_model(model, wide, **kwargs)
    ctx = measure(probe, images)
    clipped = {k: c for k, (c, _) in ctx.saturation.items() if c}
    if clipped:
        raise FracBNNError(f"{sum(clipped.values())} values exceed |x| < {2 ** (CALIBRATION_INT_BITS - 1)} on the "
                           f"calibration images (layers {', '.join(sorted(clipped)[:3])}); the model's activations are "
                           "out of the range this exporter calibrates; check the checkpoint")
    widths = fit_residual_bits(probe, ctx.peaks, fx.frac_bits, headroom)
    packed = export_model(model, fx, residual_widths=widths, **kwargs)
    report = {"images": int(len(images)), "headroom": headroom,
              "peaks": {k: v / 2.0 ** fx.frac_bits for k, v in ctx.peaks.items()}, "residual_bits": widths}
    packed.meta["calibration"] = report
    return packed, report


def saturation_report(packed, images: np.ndarray) -> dict[str, tuple[int, int]]:
    """Per saturating node, (values clipped, values) on ``images`` (golden engine)."""
    return dict(measure(packed, images).saturation)
