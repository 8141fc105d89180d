"""Trained PyTorch FracBNN -> packed integer model (the folding).

What is folded where (formats in docs/deploy-format.md):

* residual stream: fixed point r = round(x * 2^F), saturated to B bits
  (F = ``frac_bits``, B = ``residual_bits``);
* per-channel coefficients: integers with P = ``param_frac_bits`` fraction
  bits relative to the accumulator they scale (see each builder);
* Q2 / sign quantizers: integer comparisons on r (op quantize2 / sign_bit);
* precision gate: S_M > floor(3 theta / 2) per output channel;
* BN -> RPReLU -> + shortcut -> BN_res: one op, block_post.

All real-valued folding happens here in float64; engines never see a float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import FracBNNError
from ..nn import BinaryConv2d, FracConv2d
from ..quant import ActivationQuantizer, ThermometerEncoder
from .packed import KIND, PackedModel, accumulator_bits, infer_shapes, pack_weight_bits
from .preprocess import data_meta

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class UnsupportedModelError(FracBNNError):
    """The model has parts the packed format cannot express."""


@dataclass(frozen=True)
class FixedPoint:
    """Widths of the integer model; defaults chosen from the agreement study (docs/deploy-format.md)."""

    frac_bits: int = 22        # F: fraction bits of the residual stream
    residual_bits: int = 27    # B: total bits (with sign) of the residual stream, saturating (|x| < 16)
    param_frac_bits: int = 24  # P: fraction bits of the folded per-channel coefficients

    def check(self) -> "FixedPoint":
        if not 0 <= self.frac_bits <= 24:
            raise FracBNNError(f"--frac-bits must be in 0..24, got {self.frac_bits}")
        if not self.frac_bits + 2 <= self.residual_bits <= 48:
            raise FracBNNError(f"--residual-bits must be in {self.frac_bits + 2}..48 (frac bits + 2 or more), "
                               f"got {self.residual_bits}")
        if not 0 <= self.param_frac_bits <= 30:
            raise FracBNNError(f"--param-frac-bits must be in 0..30, got {self.param_frac_bits}")
        return self


def _q(x, scale_log2: int) -> np.ndarray:
    """round(x * 2^scale_log2) to int64, ties away from zero (numbers from float64 folding)."""
    v = np.asarray(x, np.float64) * (2.0 ** scale_log2)
    if not np.all(np.isfinite(v)):
        raise UnsupportedModelError("the model has NaN or infinite parameters; retrain or pick another checkpoint")
    if np.any(np.abs(v) >= 2.0 ** 62):
        raise UnsupportedModelError("a folded coefficient does not fit 62 bits; lower --param-frac-bits")
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as y = a x + b per channel (float64)."""
    if bn.running_mean is None:
        raise UnsupportedModelError("BatchNorm without running statistics cannot be folded")
    a = _f64(bn.weight) / np.sqrt(_f64(bn.running_var) + bn.eps) if bn.affine else \
        1.0 / np.sqrt(_f64(bn.running_var) + bn.eps)
    b = (_f64(bn.bias) if bn.affine else 0.0) - _f64(bn.running_mean) * a
    return a, b


def _binary_weight(conv: nn.Conv2d) -> np.ndarray:
    """sign(W) with sign(0) = +1, as the training forward pass uses it."""
    return np.where(_f64(conv.weight) >= 0, 1, -1).astype(np.int8)


class _Builder:
    def __init__(self, fx: FixedPoint):
        self.fx = fx
        self.program: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}

    def tensor(self, name: str, arr: np.ndarray) -> str:
        self.tensors[name] = arr
        return name

    def op(self, **kw) -> None:
        self.program.append(kw)

    def conv_attrs(self, conv: nn.Conv2d) -> dict:
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        if not (k[0] == k[1] and s[0] == s[1] and isinstance(p, tuple) and p[0] == p[1]):
            raise UnsupportedModelError(f"only square kernels/strides/paddings are supported, got {k} {s} {p}")
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.bias is not None or conv.padding_mode != "zeros":
            raise UnsupportedModelError("only plain convolutions (no groups, dilation, bias) are supported")
        return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel=k[0], stride=s[0],
                    padding=p[0])


def _block_conv(b: _Builder, conv: nn.Module, src: str, name: str) -> tuple[str, float]:
    """Quantize the residual ``src`` and convolve; returns (accumulator buffer, real value per unit)."""
    F = b.fx.frac_bits
    if isinstance(conv, FracConv2d):
        if conv.mode == "float":
            raise UnsupportedModelError(f"{name} is in 'float' mode (float weights); finish training to "
                                        "'binary' or 'frac' mode before exporting")
        bits, gated = 2, conv.mode == "frac"
    elif isinstance(conv, BinaryConv2d) and isinstance(conv.input_quantizer, ActivationQuantizer):
        bits, gated = conv.input_quantizer.bits, False
        if bits not in (1, 2):
            raise UnsupportedModelError(f"{name} uses {bits}-bit activations; the packed format supports 1 and 2")
    else:
        raise UnsupportedModelError(f"{name} is a {type(conv).__name__} with float weights; nothing to binarize "
                                    "(export FracBNN or BNN models)")
    w = b.tensor(f"{name}.weight", pack_weight_bits(_binary_weight(conv)))
    acc = f"{name}.acc"
    if bits == 1:
        b.op(op="sign_bit", input=src, output=f"{name}.bits")
        b.op(op="binary_conv", input=f"{name}.bits", output=acc, weight=w, **b.conv_attrs(conv))
        return acc, 1.0
    b.op(op="quantize2", input=src, output=[f"{name}.msb", f"{name}.lsb"], frac_bits=F)
    gate = None
    if gated:
        theta = _f64(conv.threshold)
        gate = b.tensor(f"{name}.gate_threshold", np.clip(np.floor(1.5 * theta), -2.0**40, 2.0**40).astype(np.int64))
    b.op(op="frac_conv", input=[f"{name}.msb", f"{name}.lsb"], output=acc, weight=w, gate_threshold=gate,
         **b.conv_attrs(conv))
    return acc, 1.0 / 3.0


def _post(b: _Builder, acc: str, unit: float, bn, rprelu, bn_res, shortcut: str, pooled: bool, out: str, name: str):
    """Fold BN -> RPReLU -> + shortcut -> BN_res into one block_post op.

    Real maths, per channel, with a = accumulator (real conv value a * unit):
        z = g a + h,  g = bn_a * unit,  h = bn_b + shift_in
        y = a2 * (PReLU_k(z) + shift_out + sc) + c2
    so y = (z > 0 ? a2 g a + a2 h : a2 k g a + a2 k h) + a2 (shift_out) + c2 + a2 sc.
    Coefficients are scaled by 2^(F + P + e) and the sum shifted right by P + e,
    with e = 2 for the pooled shortcut (its SUM of 4 carries the 1/4).
    """
    F, P = b.fx.frac_bits, b.fx.param_frac_bits
    bn_a, bn_b = bn_affine(bn)
    a2, c2 = bn_affine(bn_res)
    g, h = bn_a * unit, bn_b + _f64(rprelu.shift_in)
    k, d = _f64(rprelu.slope), a2 * _f64(rprelu.shift_out) + c2
    if k.size == 1:
        k = np.full_like(g, k.item())
    e = 2 if pooled else 0
    scale = F + P + e
    # positive side z > 0  <=>  sign * a > threshold (integer a)
    sign = np.sign(g).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = np.where(g != 0, -h / np.where(g == 0, 1.0, g), 0.0)
    thr = np.where(g > 0, np.floor(cut), np.where(g < 0, -np.ceil(cut), np.where(h > 0, -1, 0)))
    thr = np.clip(thr, -2.0**40, 2.0**40).astype(np.int64)
    t = b.tensor
    b.op(op="block_post", input=acc, shortcut=shortcut, output=out,
         sign=t(f"{name}.sign", sign), threshold=t(f"{name}.threshold", thr),
         pos_mul=t(f"{name}.pos_mul", _q(a2 * g, scale)), pos_add=t(f"{name}.pos_add", _q(a2 * h + d, scale)),
         neg_mul=t(f"{name}.neg_mul", _q(a2 * k * g, scale)), neg_add=t(f"{name}.neg_add", _q(a2 * k * h + d, scale)),
         sc_mul=t(f"{name}.sc_mul", _q(a2, P)), shift=P + e, bits=b.fx.residual_bits)


def export_model(model: nn.Module, fx: FixedPoint | None = None, *, class_names=None, source: dict | None = None
                 ) -> PackedModel:
    """Fold a trained CIFAR-style FracBNN/BNN ResNet into a :class:`PackedModel`.

    The input size is ``model.input_size``; the class names are ``class_names``,
    else ``model.classes`` (both restored from checkpoints that record them),
    else "0".."N-1".
    """
    from ..models.resnet_cifar import CifarResNet, DuplicateDownsample

    fx = (fx or FixedPoint()).check()
    model = getattr(model, "module", model)
    spec = getattr(model, "spec", {"name": type(model).__name__, "kwargs": {}})
    if not isinstance(model, CifarResNet):
        raise UnsupportedModelError(f"model {spec['name']!r} is not supported by the packed format yet "
                                    "(supported: resnet20/32/44/56 -fracbnn and -bnn)")
    if not isinstance(model.encoder, ThermometerEncoder) or not isinstance(model.stem, BinaryConv2d):
        raise UnsupportedModelError(f"model {spec['name']!r} has a float input layer and float convolutions; "
                                    "nothing to binarize (export a -fracbnn or -bnn model)")
    F, P = fx.frac_bits, fx.param_frac_bits
    b = _Builder(fx)
    enc = model.encoder
    b.op(op="thermometer", input="image", output="thermo", resolution=enc.resolution, bits=enc.bits)
    w = b.tensor("stem.weight", pack_weight_bits(_binary_weight(model.stem)))
    b.op(op="binary_conv", input="thermo", output="stem.acc", weight=w, **b.conv_attrs(model.stem))
    a, c = bn_affine(model.stem_bn)
    b.op(op="scale_shift", input="stem.acc", output="stem.out", mul=b.tensor("stem.mul", _q(a, F + P)),
         add=b.tensor("stem.add", _q(c, F + P)), shift=P, bits=fx.residual_bits)
    x = "stem.out"
    for i, stage in enumerate(model.stages):
        for j, blk in enumerate(stage):
            name = f"stages.{i}.{j}"
            if isinstance(blk.shortcut, DuplicateDownsample):
                sc, pooled = f"{name}.shortcut", True
                b.op(op="avgpool2_dup", input=x, output=sc)
            elif isinstance(blk.shortcut, nn.Identity):
                sc, pooled = x, False
            else:
                raise UnsupportedModelError(f"{name} has an unsupported shortcut {type(blk.shortcut).__name__}")
            acc, unit = _block_conv(b, blk.conv1, x, f"{name}.conv1")
            _post(b, acc, unit, blk.bn1, blk.rprelu1, blk.bn_res1, sc, pooled, f"{name}.y", f"{name}.post1")
            y = f"{name}.y"
            acc, unit = _block_conv(b, blk.conv2, y, f"{name}.conv2")
            _post(b, acc, unit, blk.bn2, blk.rprelu2, blk.bn_res2, y, False, f"{name}.out", f"{name}.post2")
            x = f"{name}.out"
    if not isinstance(model.pool, nn.AdaptiveAvgPool2d) or model.pool.output_size not in (1, (1, 1)):
        raise UnsupportedModelError("only a global average pool before the classifier is supported")
    b.op(op="global_sum_pool", input=x, output="pool")
    C, H, W = model.input_size
    last = infer_shapes(b.program, (C, H, W), b.tensors)[x]
    hw = last[2] * last[3]  # folds the 1/(H*W) of the average pool into the logit denominator
    fc_w, fc_b = _f64(model.fc.weight), _f64(model.fc.bias) if model.fc.bias is not None else 0.0
    b.op(op="linear", input="pool", output="logits", weight=b.tensor("fc.weight", _q(fc_w, P)),
         bias=b.tensor("fc.bias", _q(np.broadcast_to(fc_b, (fc_w.shape[0],)) * hw, F + P)))
    num_classes = fc_w.shape[0]
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
        "input_size": [C, H, W],
        "num_classes": num_classes,
        "class_names": class_names,
        "fixed_point": {"frac_bits": F, "residual_bits": fx.residual_bits, "param_frac_bits": P},
        "logit_denominator": hw * 2 ** (F + P),
        "program": b.program,
        "accumulator_bits": accumulator_bits(b.program, (C, H, W), b.tensors, fx.residual_bits),
        "source": source or {},
        **data_meta(model, (C, H, W)),  # dataset and preprocessing (deploy/preprocess.py)
    }
    widest = max(meta["accumulator_bits"].items(), key=lambda kv: kv[1])
    if widest[1] > 64:
        raise UnsupportedModelError(f"with these widths the op writing {widest[0]} needs a {widest[1]}-bit "
                                    "accumulator (int64 holds 64 with the sign); lower --param-frac-bits or --residual-bits")
    packed = PackedModel(meta, b.tensors)
    packed.validate()
    return packed
