"""The folding rules shared by every model family: one function per trained pattern -> IR nodes.

All real-valued folding happens here in float64; engines never see a float.
Formats (docs/deploy-format.md): the residual stream is r = round(x 2^F)
saturated to B bits; coefficients have P fraction bits relative to the
accumulator they scale.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import FracBNNError
from ...ir.arith import pack_weight_bits
from ...nn import BinaryConv2d, FracConv2d
from ...quant import ActivationQuantizer, ThermometerEncoder


class UnsupportedModelError(FracBNNError):
    """The model has parts the packed format cannot express."""


def q(x, scale_log2: int) -> np.ndarray:
    """round(x * 2^scale_log2) to int64, ties away from zero (numbers from float64 folding)."""
    v = np.asarray(x, np.float64) * (2.0 ** scale_log2)
    if not np.all(np.isfinite(v)):
        raise UnsupportedModelError("the model has NaN or infinite parameters; retrain or pick another checkpoint")
    if np.any(np.abs(v) >= 2.0 ** 62):
        raise UnsupportedModelError("a folded coefficient does not fit 62 bits; lower --param-frac-bits")
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


def q_grid(x, scale_log2: int, shift: int, keep: int) -> np.ndarray:
    """q(x, scale_log2) on the grid of multiples of 2^(shift - keep): the coefficient keeps ``keep`` fraction
    bits below the unit its op's right shift by ``shift`` produces (the low bits are zero; hardware stores it
    narrow and shifts it back). The golden value is still the int64 itself."""
    k = max(0, shift - keep)
    return q(x, scale_log2 - k) << np.int64(k)


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as y = a x + b per channel (float64)."""
    if bn.running_mean is None:
        raise UnsupportedModelError("BatchNorm without running statistics cannot be folded")
    a = f64(bn.weight) / np.sqrt(f64(bn.running_var) + bn.eps) if bn.affine else \
        1.0 / np.sqrt(f64(bn.running_var) + bn.eps)
    b = (f64(bn.bias) if bn.affine else 0.0) - f64(bn.running_mean) * a
    return a, b


def binary_weight(conv: nn.Conv2d) -> np.ndarray:
    """sign(W) with sign(0) = +1, as the training forward pass uses it."""
    return np.where(f64(conv.weight) >= 0, 1, -1).astype(np.int8)


class Builder:
    """Accumulates nodes and tensors; each method is one folding rule."""

    def __init__(self, fx, frac_widths: dict[str, int] | None = None):
        self.fx = fx
        self.frac_widths = {str(k): int(v) for k, v in (frac_widths or {}).items()}
        self.frac: dict[str, int] = {}  # residual buffer -> its fraction bits F (per layer; fx.frac_bits by default)
        self.program: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}

    def tensor(self, name: str, arr: np.ndarray) -> str:
        self.tensors[name] = arr
        return name

    def op(self, **kw) -> None:
        self.program.append(kw)

    # -- fixed-point formats of residual buffers
    def frac_of(self, buffer: str) -> int:
        """Fraction bits F of a residual buffer (r = round(x 2^F))."""
        return self.frac.get(buffer, self.fx.frac_bits)

    def unit(self, buffer: str) -> float:
        """Real value of one integer unit of a residual buffer, 2^-F."""
        return 2.0 ** -self.frac_of(buffer)

    def same_format(self, out: str, src: str) -> None:
        """``out`` holds values of ``src``'s format (a pool or duplication of it)."""
        self.frac[out] = self.frac_of(src)

    def _new_residual(self, out: str) -> int:
        """F of a residual buffer this rule writes: its entry in ``frac_widths``, else the global F."""
        F = self.frac_widths.get(out, self.fx.frac_bits)
        if not 0 <= F <= 24:
            raise FracBNNError(f"fraction bits for {out} must be in 0..24, got {F}")
        self.frac[out] = F
        return F

    @staticmethod
    def conv_attrs(conv: nn.Conv2d) -> dict:
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        if not (k[0] == k[1] and s[0] == s[1] and isinstance(p, tuple) and p[0] == p[1]):
            raise UnsupportedModelError(f"only square kernels/strides/paddings are supported, got {k} {s} {p}")
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.bias is not None or conv.padding_mode != "zeros":
            raise UnsupportedModelError("only plain convolutions (no groups, dilation, bias) are supported")
        return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel=k[0], stride=s[0],
                    padding=p[0])

    # -- rules
    def thermometer_stem(self, encoder, stem, stem_bn, name: str = "stem") -> str:
        """Thermometer -> binary conv -> BatchNorm into the residual format; returns the residual buffer."""
        if not isinstance(encoder, ThermometerEncoder) or not isinstance(stem, BinaryConv2d):
            raise UnsupportedModelError("the model has a float input layer and float convolutions; nothing to "
                                        "binarize (export a -fracbnn or -bnn model)")
        F, P = self._new_residual(f"{name}.out"), self.fx.param_frac_bits
        self.op(op="thermometer", input="image", output="thermo", resolution=encoder.resolution, bits=encoder.bits)
        w = self.tensor(f"{name}.weight", pack_weight_bits(binary_weight(stem)))
        self.op(op="binary_conv", name=name, input="thermo", output=f"{name}.acc", weight=w, **self.conv_attrs(stem))
        a, c = bn_affine(stem_bn)
        self.op(op="scale_shift", input=f"{name}.acc", output=f"{name}.out",
                mul=self.tensor(f"{name}.mul", q_grid(a, F + P, P, self.fx.coef_frac_bits)),
                add=self.tensor(f"{name}.add", q_grid(c, F + P, P, 1)), shift=P, bits=self.fx.residual_bits)
        return f"{name}.out"

    def block_conv(self, conv: nn.Module, src: str, name: str) -> tuple[str, float]:
        """Quantize the residual ``src`` and convolve; returns (accumulator buffer, real value per unit)."""
        F = self.frac_of(src)
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
        w = self.tensor(f"{name}.weight", pack_weight_bits(binary_weight(conv)))
        acc = f"{name}.acc"
        if bits == 1:
            self.op(op="sign_bit", input=src, output=f"{name}.bits")
            self.op(op="binary_conv", name=name, input=f"{name}.bits", output=acc, weight=w, **self.conv_attrs(conv))
            return acc, 1.0
        self.op(op="quantize2", input=src, output=[f"{name}.msb", f"{name}.lsb"], frac_bits=F)
        gate = None
        if gated:
            theta = f64(conv.threshold)
            gate = self.tensor(f"{name}.gate_threshold",
                               np.clip(np.floor(1.5 * theta), -2.0**40, 2.0**40).astype(np.int64))
        self.op(op="frac_conv", name=name, input=[f"{name}.msb", f"{name}.lsb"], output=acc, weight=w,
                gate_threshold=gate,
                **self.conv_attrs(conv))
        return acc, 1.0 / 3.0

    def quantized_shortcut(self, quantizer, src: str, name: str) -> tuple[str, float]:
        """A k-bit (k >= 2) activation quantizer on the residual: (buffer of odd codes v, real value per unit 1/L)."""
        bits = int(quantizer.bits)
        if bits < 2:
            raise UnsupportedModelError(f"{name}: a {bits}-bit shortcut quantizer is not supported (2..8 are)")
        self.op(op="quantize", input=src, output=name, frac_bits=self.frac_of(src), bits=bits)
        return name, 1.0 / ((1 << bits) - 1)

    def block_post(self, acc: str, unit: float, bn, rprelu, bn_res, shortcut: str, sc_unit: float, out: str,
                   name: str, pooled: bool = False) -> None:
        """Fold BN -> RPReLU -> + shortcut -> BN_res into one block_post node.

        Real maths, per channel, with a = accumulator (real conv value a * unit):
            z = g a + h,  g = bn_a * unit,  h = bn_b + shift_in
            y = a2 * (PReLU_k(z) + shift_out + sc) + c2
        so y = (z > 0 ? a2 g a + a2 h : a2 k g a + a2 k h) + a2 (shift_out) + c2 + a2 sc.
        Coefficients are scaled by 2^(F + P + e) and the sum shifted right by
        P + e, with e = 2 for a pooled shortcut (its SUM of 4 carries the 1/4).
        ``sc_unit`` is the shortcut buffer's real value per integer unit
        (2^-F_src for the residual stream, 1/L for k-bit codes); F is the
        output's own fraction bits, so formats may change from layer to layer.
        """
        F, P = self._new_residual(out), self.fx.param_frac_bits
        bn_a, bn_b = bn_affine(bn)
        a2, c2 = bn_affine(bn_res)
        g, h = bn_a * unit, bn_b + f64(rprelu.shift_in)
        k, d = f64(rprelu.slope), a2 * f64(rprelu.shift_out) + c2
        if k.size == 1:
            k = np.full_like(g, k.item())
        e = 2 if pooled else 0
        scale, cf = F + P + e, self.fx.coef_frac_bits
        # positive side z > 0  <=>  sign * a > threshold (integer a)
        sign = np.sign(g).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            cut = np.where(g != 0, -h / np.where(g == 0, 1.0, g), 0.0)
        thr = np.where(g > 0, np.floor(cut), np.where(g < 0, -np.ceil(cut), np.where(h > 0, -1, 0)))
        thr = np.clip(thr, -2.0**40, 2.0**40).astype(np.int64)
        # shortcut term: a2 * real(sc) * 2^(F+P+e), real(sc) = v * sc_unit / 4^pooled, so sc_mul = a2 sc_unit 2^(F+P)
        # (for a residual shortcut of the same F, sc_unit = 2^-F: sc_mul = round(a2 2^P))
        sc_mul = q(a2 * sc_unit, F + P)
        t = self.tensor
        self.op(op="block_post", input=acc, shortcut=shortcut, output=out,
                sign=t(f"{name}.sign", sign), threshold=t(f"{name}.threshold", thr),
                pos_mul=t(f"{name}.pos_mul", q_grid(a2 * g, scale, P + e, cf)),
                pos_add=t(f"{name}.pos_add", q_grid(a2 * h + d, scale, P + e, 1)),
                neg_mul=t(f"{name}.neg_mul", q_grid(a2 * k * g, scale, P + e, cf)),
                neg_add=t(f"{name}.neg_add", q_grid(a2 * k * h + d, scale, P + e, 1)),
                sc_mul=t(f"{name}.sc_mul", sc_mul), shift=P + e, bits=self.fx.residual_bits)

    def conv_block(self, conv, bn, rprelu, bn_res, src: str, shortcut: str, sc_unit: float, names: tuple[str, str],
                   out: str, pooled: bool = False) -> str:
        """out = bn_res(rprelu(bn(conv(Q(src)))) + shortcut): the conv rule then block_post; ``names``: (conv, post)."""
        acc, unit = self.block_conv(conv, src, names[0])
        self.block_post(acc, unit, bn, rprelu, bn_res, shortcut, sc_unit, out, names[1], pooled)
        return out
