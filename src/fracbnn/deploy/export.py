"""Trained PyTorch FracBNN -> packed integer model (the folding), for every registered model family.

What is folded where (formats in docs/deploy-format.md):

* residual stream: fixed point r = round(x * 2^F), saturated to B bits
  (F = ``frac_bits``, B = ``residual_bits``);
* per-channel coefficients: integers with P = ``param_frac_bits`` fraction
  bits relative to the accumulator they scale (see each rule in
  :mod:`fracbnn.deploy.converters.builder`);
* Q2 / sign quantizers: integer comparisons on r (quantize2 / sign_bit);
  k-bit shortcut quantizers: odd integer codes (quantize);
* precision gate: S_M > floor(3 theta / 2) per output channel;
* BN -> RPReLU -> + shortcut -> BN_res: one node, block_post;
* the head: global_sum_pool -> linear, the 1/(H*W) in the logit denominator.

Each model family has its converter (:mod:`fracbnn.deploy.converters`);
this module only adds the head and the metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from .. import __version__
from ..errors import FracBNNError
from ..ir.model import KIND, PackedModel, accumulator_bits, infer_shapes, value_bounds
from .converters import converter_for, supported_families
from .converters.builder import Builder, UnsupportedModelError, bn_affine, f64, q  # noqa: F401  (bn_affine re-exported)
from .preprocess import data_meta

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class FixedPoint:
    """Widths of the integer model; defaults chosen from the agreement study (docs/deploy-format.md)."""

    frac_bits: int = 22        # F: fraction bits of the residual stream
    residual_bits: int = 27    # B: total bits (with sign) of the residual stream, saturating (|x| < 16)
    param_frac_bits: int = 24  # P: fraction bits of the folded per-channel coefficients
    #: multipliers are kept to 2^-coef_frac_bits of an output unit per accumulator unit (and offsets to half a
    #: unit): their low bits are zero, so hardware stores them narrow (docs/deploy-format.md 4b)
    coef_frac_bits: int = 10

    def check(self) -> "FixedPoint":
        if not 0 <= self.frac_bits <= 24:
            raise FracBNNError(f"--frac-bits must be in 0..24, got {self.frac_bits}")
        if not self.frac_bits + 2 <= self.residual_bits <= 48:
            raise FracBNNError(f"--residual-bits must be in {self.frac_bits + 2}..48 (frac bits + 2 or more), "
                               f"got {self.residual_bits}")
        if not 1 <= self.coef_frac_bits <= 62:
            raise FracBNNError(f"coef_frac_bits must be in 1..62, got {self.coef_frac_bits}")
        if not 0 <= self.param_frac_bits <= 30:
            raise FracBNNError(f"--param-frac-bits must be in 0..30, got {self.param_frac_bits}")
        return self


def _head(b: Builder, model: nn.Module, x: str, input_size) -> tuple[int, int]:
    """global_sum_pool -> linear -> logits; returns (logit denominator, classifier fraction bits).

    The classifier's weights get P fraction bits, fewer if the worst-case
    logit would not fit int64 (wide layers over large maps, e.g. ReActNet's
    1024 channels x 7x7); the bias and the denominator follow.
    """
    F, P = b.frac_of(x), b.fx.param_frac_bits
    pool = getattr(model, "pool", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or pool.output_size not in (1, (1, 1)):
        raise UnsupportedModelError("only a global average pool before the classifier is supported")
    b.op(op="global_sum_pool", input=x, output="pool")
    last = infer_shapes(b.program, input_size, b.tensors)[x]
    hw = last[2] * last[3]  # folds the 1/(H*W) of the average pool into the logit denominator
    fc_w = f64(model.fc.weight)
    fc_b = f64(model.fc.bias) if model.fc.bias is not None else np.zeros(fc_w.shape[0])
    pool_bound = value_bounds(b.program, input_size, b.tensors)[1]["pool"]
    p = P
    while p > 0:
        w_i, b_i = q(fc_w, p), q(fc_b * hw, F + p)
        worst = int(np.abs(w_i).max(initial=0)) * pool_bound * fc_w.shape[1] + int(np.abs(b_i).max(initial=0))
        if worst.bit_length() + 1 <= 64:
            break
        p -= 1
    b.op(op="linear", input="pool", output="logits", weight=b.tensor("fc.weight", q(fc_w, p)),
         bias=b.tensor("fc.bias", q(fc_b * hw, F + p)))
    return hw * 2 ** (F + p), p


def export_model(model: nn.Module, fx: FixedPoint | None = None, *, class_names=None, source: dict | None = None,
                 input_size=None, residual_widths: dict[str, int] | None = None,
                 frac_widths: dict[str, int] | None = None) -> PackedModel:
    """Fold a trained FracBNN/BNN of any registered family into a :class:`PackedModel`.

    The input size is ``input_size``, else ``model.input_size``; the class
    names are ``class_names``, else ``model.classes`` (both restored from
    checkpoints that record them), else "0".."N-1". ``residual_widths`` gives
    saturating nodes (by output buffer) their own width instead of B
    (see :func:`fracbnn.deploy.widths.calibrated_export`); ``frac_widths``
    gives residual buffers (outputs of scale_shift / block_post) their own
    fraction bits F instead of ``fx.frac_bits`` (recorded in
    ``fixed_point.frac_widths``).
    """
    fx = (fx or FixedPoint()).check()
    model = getattr(model, "module", model)
    spec = getattr(model, "spec", {"name": type(model).__name__, "kwargs": {}})
    convert = converter_for(model)
    if convert is None:
        raise UnsupportedModelError(f"model {spec['name']!r} is not supported by the packed format "
                                    f"(supported families: {', '.join(supported_families())}; "
                                    "their -fracbnn and -bnn variants)")
    size = tuple(int(v) for v in (input_size if input_size is not None else model.input_size))
    b = Builder(fx, frac_widths)
    x = convert(model, b)
    unknown = sorted(set(b.frac_widths) - set(b.frac))
    if unknown:
        raise FracBNNError(f"frac_widths names buffers the model does not write ({', '.join(unknown[:3])}); "
                           "use the output buffers of its scale_shift / block_post nodes")
    for node in b.program:
        if residual_widths and node["op"] in ("scale_shift", "block_post") and node["output"] in residual_widths:
            node["bits"] = int(residual_widths[node["output"]])
    denominator, fc_frac_bits = _head(b, model, x, size)
    num_classes = b.tensors["fc.weight"].shape[0]
    if class_names is None:
        class_names = getattr(model, "classes", None)  # recorded by the trainer, restored from the checkpoint
    if class_names is None:
        class_names = [str(k) for k in range(num_classes)]  # nothing known: the class indices
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes:
        raise UnsupportedModelError(f"{len(class_names)} class names for a model with {num_classes} outputs")
    meta = {
        "kind": KIND,
        "fracbnn_version": __version__,
        "model": {"name": spec["name"], "kwargs": spec.get("kwargs", {})},
        "input_size": list(size),
        "num_classes": num_classes,
        "class_names": class_names,
        "fixed_point": {"frac_bits": fx.frac_bits,
                        "residual_bits": max(max(residual_widths.values()), fx.residual_bits) if residual_widths
                        else fx.residual_bits,
                        "param_frac_bits": fx.param_frac_bits, "coef_frac_bits": fx.coef_frac_bits,
                        "classifier_frac_bits": fc_frac_bits,
                        **({"frac_widths": {k: b.frac[k] for k in b.frac_widths}} if frac_widths else {})},
        "logit_denominator": denominator,
        "program": b.program,
        "accumulator_bits": accumulator_bits(b.program, size, b.tensors),
        "source": source or {},
        **data_meta(model, size),  # dataset and preprocessing (deploy/preprocess.py)
    }
    widest = max(meta["accumulator_bits"].items(), key=lambda kv: kv[1])
    if widest[1] > 64:
        raise UnsupportedModelError(f"with these widths the op writing {widest[0]} needs a {widest[1]}-bit "
                                    "accumulator (int64 holds 64 with the sign); lower --param-frac-bits or --residual-bits")
    packed = PackedModel(meta, b.tensors)
    packed.validate()
    return packed
