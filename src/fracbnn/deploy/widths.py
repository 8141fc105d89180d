"""Widths chosen per layer from calibration images: no silent saturation, no more bits than agreement needs.

One global residual format (F fraction bits, B total) either wastes bits on
quiet layers or clips the loud ones (the authors' ResNet-20 reaches |x| = 28
in its last block, beyond the default B = 27's |x| < 16).

* ``calibrated_export`` exports once with a wide stream (F + 8 bits,
  |x| < 128), measures every saturating node's peak on calibration images
  with the golden engine, gives each node the narrowest B holding
  ``headroom`` x its peak at that node's F, and exports again.
* ``search_frac_bits`` also narrows F per layer: the fewest fraction bits at
  which the packed model's top-1 still agrees with PyTorch on calibration
  images (first one F for all layers, then each layer lowered on its own
  while agreement holds, then checked on held-out calibration images), each
  trial a calibrated export.

The widths live in the nodes (``bits`` of scale_shift / block_post,
``frac_bits`` of the quantizers, and the folded constants), which every
engine and the hardware generator read; ``fixed_point.frac_widths`` in the
``.fbnn`` records each residual buffer's F.
"""

from __future__ import annotations

import numpy as np

from ..errors import FracBNNError
from ..ir.passes import SATURATING, fit_residual_bits, measure
from .export import FixedPoint, export_model

CALIBRATION_INT_BITS = 8  # the measuring export holds |x| < 2^(8-1) = 128


def residual_peaks(model, fx: FixedPoint, images: np.ndarray, **kwargs) -> dict[str, float]:
    """Largest |x| (real) that each saturating node produces on ``images``, before saturation."""
    wide = FixedPoint(fx.frac_bits, fx.frac_bits + CALIBRATION_INT_BITS, fx.param_frac_bits, fx.coef_frac_bits).check()
    probe = export_model(model, wide, **kwargs)
    ctx = measure(probe, images)
    clipped = {k: c for k, (c, _) in ctx.saturation.items() if c}
    if clipped:
        raise FracBNNError(f"{sum(clipped.values())} values exceed |x| < {2 ** (CALIBRATION_INT_BITS - 1)} on the "
                           f"calibration images (layers {', '.join(sorted(clipped)[:3])}); the model's activations are "
                           "out of the range this exporter calibrates; check the checkpoint")
    return {k: v / 2.0 ** fx.frac_bits for k, v in ctx.peaks.items()}


def _export_fitted(model, fx, peaks, frac_widths, headroom, template, **kwargs):
    """Export with per-layer F (``frac_widths``, default fx.frac_bits) and B fitted to ``peaks``.

    ``template``: any export of the model; its program names the saturating
    nodes (the same for every width), so a search's trials export only once."""
    frac = dict(frac_widths or {})
    F = {n["output"]: frac.get(n["output"], fx.frac_bits) for n in template.program if n["op"] in SATURATING}
    widths = fit_residual_bits(template, peaks, F, headroom)
    return export_model(model, fx, residual_widths=widths, frac_widths=frac or None, **kwargs), widths


def calibrated_export(model, fx: FixedPoint, images: np.ndarray, headroom: float = 2.0,
                      frac_widths: dict[str, int] | None = None, peaks: dict[str, float] | None = None, **kwargs):
    """(packed model with per-layer residual widths, calibration report)."""
    peaks = residual_peaks(model, fx, images, **kwargs) if peaks is None else peaks
    template = export_model(model, fx, **kwargs)
    packed, widths = _export_fitted(model, fx, peaks, frac_widths, headroom, template, **kwargs)
    report = {"images": int(len(images)), "headroom": headroom, "peaks": dict(peaks), "residual_bits": widths}
    if frac_widths:
        report["frac_bits"] = {k: int(v) for k, v in frac_widths.items()}
    packed.meta["calibration"] = report
    return packed, report


def _engine(packed):
    from .fast import FastEngine, available
    from .golden import GoldenEngine

    return FastEngine(packed) if available() else GoldenEngine(packed)


def search_frac_bits(model, fx: FixedPoint, images: np.ndarray, target: float = 0.998, headroom: float = 2.0,
                     min_frac_bits: int = 4, progress: bool = True, **kwargs):
    """(packed model, report) with the fewest fraction bits per layer keeping top-1 agreement >= ``target``.

    Agreement is with the PyTorch model's own top-1. The calibration images
    are split in two: the search runs on one half, the other half checks
    the result. Search: the lowest single F in [min_frac_bits, fx.frac_bits]
    that holds (bisection), then, layer by layer from the input, each
    layer's F lowered one bit at a time while agreement holds. Many trials
    on the same images select changes that happen to spare those images, so
    the result is then checked on the held-out half; while either half falls
    short, every lowered layer gets one bit back (toward fx.frac_bits).
    Every trial is a calibrated export (B follows each layer's F), so nothing
    saturates on the calibration images. Each half estimates the test-set
    agreement to about 0.1 % with 5,000 images, hence the default target
    0.998 for a 0.995 goal.
    """
    import torch
    from tqdm import tqdm

    with torch.inference_mode():
        ref = np.concatenate([model(torch.from_numpy(images[i:i + 250])).argmax(1).numpy()
                              for i in range(0, len(images), 250)])
    peaks = residual_peaks(model, fx, images, **kwargs)
    template = export_model(model, fx, **kwargs)
    layers = list(peaks)
    half = len(images) // 2
    parts = {"search": (images[:half], ref[:half]), "check": (images[half:], ref[half:])}
    trials = {}

    def agreement(frac: dict[str, int], part: str = "search") -> float:
        key = (part, tuple(sorted(frac.items())))
        if key not in trials:
            packed, _ = _export_fitted(model, fx, peaks, frac, headroom, template, **kwargs)
            x, r = parts[part]
            trials[key] = float((_engine(packed).logits(x).argmax(1) == r).mean()) if len(x) else 1.0
            bar.update(1)
        return trials[key]

    with tqdm(desc="frac-bits search", unit="trial", disable=not progress) as bar:
        lo, hi = min_frac_bits, fx.frac_bits  # invariant: hi holds (checked), lo - 1 is below the floor
        start = agreement({k: hi for k in layers})
        if start < target:
            raise FracBNNError(f"the model agrees with PyTorch on only {start:.2%} of the calibration images at "
                               f"F = {hi}, below the {target:.2%} target; lower --agreement, raise --frac-bits, "
                               "or check the checkpoint")
        while lo < hi:
            mid = (lo + hi) // 2
            if agreement({k: mid for k in layers}) >= target:
                hi = mid
            else:
                lo = mid + 1
        frac = {k: hi for k in layers}
        for name in layers:
            while frac[name] > min_frac_bits:
                trial = dict(frac, **{name: frac[name] - 1})
                if agreement(trial) < target:
                    break
                frac = trial
        backoff = 0

        def holds(f):
            return agreement(f) >= target and agreement(f, "check") >= target

        while not holds(frac) and any(v < fx.frac_bits for v in frac.values()):
            frac = {k: min(fx.frac_bits, v + 1) for k, v in frac.items()}
            backoff += 1
    packed, report = calibrated_export(model, fx, images, headroom, frac_widths=frac, peaks=peaks, **kwargs)
    report.update(uniform_frac_bits=hi, agreement=agreement(frac), agreement_held_out=agreement(frac, "check"),
                  backoff_bits=backoff, target=target, trials=len(trials))
    return packed, report


def saturation_report(packed, images: np.ndarray) -> dict[str, tuple[int, int]]:
    """Per saturating node, (values clipped, values) on ``images`` (golden engine)."""
    return dict(measure(packed, images).saturation)
