"""The golden engine: the integer definition of a packed FracBNN, in numpy.

Each ``op_*`` function below is one program op; its docstring is the exact
integer semantics that every other engine (the fast CPU engine, the FPGA
design) must reproduce bit for bit. Buffers are numpy integer arrays in
NCHW order: bit planes are uint8 0/1 (1 means +1, 0 means -1), everything
else is int64. Two helpers define all rounding:

    round_shift(v, s) = floor((v + 2^(s-1)) / 2^s) for s >= 1, v for s = 0
                        (round to nearest, ties toward +infinity; an
                        arithmetic shift right after adding half)
    saturate(v, b)    = min(max(v, -2^(b-1)), 2^(b-1) - 1)

The binary convolutions are evaluated as float32 matrix products of +-1/0
values: every partial sum is an integer of magnitude <= Cin*kh*kw < 2^24, so
float32 represents it exactly and the result is the integer sum. This is an
implementation detail for speed, not part of the definition.
"""

from __future__ import annotations

import numpy as np

from ..quant.thermometer import thermometer_level
from .engines import Engine
from .packed import PackedModel, unpack_weight_bits


def round_shift(v: np.ndarray, s: int) -> np.ndarray:
    """Divide by 2^s rounding to nearest, ties toward +infinity (see module doc)."""
    s = int(s)
    if s == 0:
        return v
    return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)


def saturate(v: np.ndarray, bits: int) -> np.ndarray:
    """Clip to the signed two's-complement range of ``bits`` bits."""
    hi = (1 << (int(bits) - 1)) - 1
    return np.clip(v, -hi - 1, hi)


def op_thermometer(image: np.ndarray, resolution: int, bits: int) -> np.ndarray:
    """uint8 pixels (N, C, H, W) -> uint8 bits (N, C*T, H, W), T = ``bits``.

    n = round_half_even(p / R) (``fracbnn.quant.thermometer_level``); output
    channel c*T + k is 1 (+1) if k < n else 0 (-1).
    """
    n = thermometer_level(image.astype(np.int64), resolution)  # (N, C, H, W)
    k = np.arange(bits).reshape(1, 1, bits, 1, 1)
    out = (k < n[:, :, None]).astype(np.uint8)
    N, C, H, W = image.shape
    return out.reshape(N, C * bits, H, W)


def binary_conv2d(x_bits: np.ndarray, w_bits: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """XNOR-popcount convolution over the valid taps only.

    For output (n, o, i, j): over the taps (c, u, v) whose input pixel
    (i*stride + u - padding, j*stride + v - padding) lies inside the image,
        S = 2 * #{taps: x bit == w bit} - #{valid taps}
    i.e. the convolution of the +-1 values with zero padding. Returns int64.
    """
    N, C, H, W = x_bits.shape
    O, _, K, _ = w_bits.shape
    # +-1 values, and 0 in the padded border: a padded tap then adds nothing,
    # which is exactly "count only the valid taps".
    x = np.zeros((N, H + 2 * padding, W + 2 * padding, C), np.float32)
    x[:, padding:padding + H, padding:padding + W, :] = 2.0 * x_bits.transpose(0, 2, 3, 1) - 1.0
    w = 2.0 * w_bits.astype(np.float32) - 1.0  # (O, C, K, K)
    Ho = (H + 2 * padding - K) // stride + 1
    Wo = (W + 2 * padding - K) // stride + 1
    acc = np.zeros((N, Ho, Wo, O), np.float32)
    for u in range(K):
        for v in range(K):
            tap = x[:, u:u + stride * (Ho - 1) + 1:stride, v:v + stride * (Wo - 1) + 1:stride, :]
            # sum of x*w over the input channels at this tap, as one (N*Ho*Wo, C) x (C, O) product
            acc += (tap.reshape(-1, C) @ w[:, :, u, v].T).reshape(N, Ho, Wo, O)
    return acc.astype(np.int64).transpose(0, 3, 1, 2)


def op_binary_conv(x_bits, weight, in_channels, stride, padding) -> np.ndarray:
    """S = binary_conv2d(x, unpack(weight)); int64 (N, Cout, Ho, Wo)."""
    return binary_conv2d(x_bits, unpack_weight_bits(weight, in_channels), stride, padding)


def op_quantize2(r: np.ndarray, frac_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """2-bit quantizer Q2 on a fixed-point value x = r / 2^F, as MSB and LSB bit planes.

    Q2's code c = round_half_even((clamp(x, -1, 1) + 1) * 3/2) in 0..3 equals
        c = [3r > -2^(F+1)] + [r >= 0] + [3r > 2^(F+1)]
    (the level boundaries x = -2/3, 0, +2/3; an integer r is never exactly on
    +-2/3, and at x = 0 the tie 1.5 rounds to the even code 2, hence >=).
    Returns m = c >> 1 and l = c & 1 as uint8 planes (1 means +1).
    """
    r = r.astype(np.int64)
    b = np.int64(1) << np.int64(frac_bits + 1)
    c = (3 * r > -b).astype(np.int64) + (r >= 0) + (3 * r > b)
    return (c >> 1).astype(np.uint8), (c & 1).astype(np.uint8)


def op_sign_bit(r: np.ndarray) -> np.ndarray:
    """1-bit quantizer sign(x) with sign(0) = +1: bit = [r >= 0] as uint8."""
    return (r >= 0).astype(np.uint8)


def op_frac_conv(m_bits, l_bits, weight, in_channels, stride, padding, gate_threshold) -> np.ndarray:
    """Precision-gated 2-bit convolution; returns A = 3 x (the real conv output), int64.

        S_M = binary_conv2d(M), S_L = binary_conv2d(L)      (same weights)
        open = S_M > gate_threshold[o]    (per output channel o; all open if None)
        A = 2 * S_M + open * S_L

    The real output is (2/3) S_M + open * (1/3) S_L, and the gate test
    (2/3) S_M > theta is exactly S_M > floor(3 theta / 2) for integer S_M.
    Where the gate is closed the LSB sum is not needed (an engine may skip it).
    """
    return frac_conv_with_gate(m_bits, l_bits, weight, in_channels, stride, padding, gate_threshold)[0]


def frac_conv_with_gate(m_bits, l_bits, weight, in_channels, stride, padding, gate_threshold):
    """:func:`op_frac_conv` plus its boolean gate (True where the LSB pass is used)."""
    w = unpack_weight_bits(weight, in_channels)
    s_m = binary_conv2d(m_bits, w, stride, padding)
    s_l = binary_conv2d(l_bits, w, stride, padding)
    if gate_threshold is None:
        return 2 * s_m + s_l, np.ones(s_m.shape, bool)
    is_open = s_m > gate_threshold.reshape(1, -1, 1, 1)
    return 2 * s_m + np.where(is_open, s_l, 0), is_open


def op_scale_shift(s: np.ndarray, mul, add, shift, bits) -> np.ndarray:
    """Per-channel affine into the residual format: saturate(round_shift(s*mul[c] + add[c], shift), bits)."""
    acc = s.astype(np.int64) * mul.reshape(1, -1, 1, 1) + add.reshape(1, -1, 1, 1)
    return saturate(round_shift(acc, shift), bits)


def op_avgpool2_dup(r: np.ndarray) -> np.ndarray:
    """Down-sampling shortcut before its 1/4: the SUM of each 2x2 window, channels repeated.

    out[n, c, i, j] = sum over a, b in {0, 1} of r[n, c mod C, 2i + a, 2j + b]
    (2C output channels; odd trailing rows/columns are dropped). The 1/4 is
    folded into block_post's sc_mul and shift.
    """
    N, C, H, W = r.shape
    h, w = H // 2, W // 2
    s = r[:, :, :2 * h, :2 * w].astype(np.int64).reshape(N, C, h, 2, w, 2).sum(axis=(3, 5))
    return np.concatenate([s, s], axis=1)


def op_block_post(a, shortcut, sign, threshold, pos_mul, pos_add, neg_mul, neg_add, sc_mul, shift, bits):
    """BatchNorm -> RPReLU -> + shortcut -> BatchNorm, folded, per channel c:

        pos = sign[c] * a > threshold[c]          (the RPReLU's positive side)
        acc = (pos ? pos_mul[c] * a + pos_add[c] : neg_mul[c] * a + neg_add[c])
              + sc_mul[c] * shortcut
        out = saturate(round_shift(acc, shift), bits)
    """
    v = lambda t: t.reshape(1, -1, 1, 1)  # noqa: E731
    a = a.astype(np.int64)
    pos = v(sign) * a > v(threshold)
    acc = np.where(pos, v(pos_mul) * a + v(pos_add), v(neg_mul) * a + v(neg_add))
    acc = acc + v(sc_mul) * shortcut.astype(np.int64)
    return saturate(round_shift(acc, shift), bits)


def op_global_sum_pool(r: np.ndarray) -> np.ndarray:
    """Sum over all pixels per channel: int64 (N, C). (The 1/(H*W) is in the logit denominator.)"""
    return r.astype(np.int64).sum(axis=(2, 3))


def op_linear(p: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Integer logits: out[n, k] = sum_c p[n, c] * weight[k, c] + bias[k] (int64, exact)."""
    return p.astype(np.int64) @ weight.T.astype(np.int64) + bias.astype(np.int64)


def run_program(packed: PackedModel, pixels: np.ndarray, collect_gates: dict | None = None) -> dict:
    """Execute the program on uint8 pixels; returns every named buffer."""
    t = packed.tensors
    buf = {"image": pixels}
    for op in packed.program:
        kind, out = op["op"], op["output"]
        if kind == "thermometer":
            buf[out] = op_thermometer(buf[op["input"]], op["resolution"], op["bits"])
        elif kind == "binary_conv":
            buf[out] = op_binary_conv(buf[op["input"]], t[op["weight"]], op["in_channels"], op["stride"],
                                      op["padding"])
        elif kind == "quantize2":
            buf[out[0]], buf[out[1]] = op_quantize2(buf[op["input"]], op["frac_bits"])
        elif kind == "sign_bit":
            buf[out] = op_sign_bit(buf[op["input"]])
        elif kind == "frac_conv":
            m, l = (buf[b] for b in op["input"])
            gate = t[op["gate_threshold"]] if op["gate_threshold"] is not None else None
            buf[out], is_open = frac_conv_with_gate(m, l, t[op["weight"]], op["in_channels"], op["stride"],
                                                    op["padding"], gate)
            if collect_gates is not None:  # (open, total) per layer, for sparsity statistics
                prev = collect_gates.get(out, (0, 0))
                collect_gates[out] = (prev[0] + int(is_open.sum()), prev[1] + is_open.size)
        elif kind == "scale_shift":
            buf[out] = op_scale_shift(buf[op["input"]], t[op["mul"]], t[op["add"]], op["shift"], op["bits"])
        elif kind == "avgpool2_dup":
            buf[out] = op_avgpool2_dup(buf[op["input"]])
        elif kind == "block_post":
            buf[out] = op_block_post(buf[op["input"]], buf[op["shortcut"]], *(t[op[k]] for k in (
                "sign", "threshold", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul")), op["shift"], op["bits"])
        elif kind == "global_sum_pool":
            buf[out] = op_global_sum_pool(buf[op["input"]])
        elif kind == "linear":
            buf[out] = op_linear(buf[op["input"]], t[op["weight"]], t[op["bias"]])
        else:  # validate() rejects unknown ops; this guards programs built in memory
            raise ValueError(f"unknown op {kind!r}")
    return buf


class GoldenEngine(Engine):
    """Reference engine: runs :func:`run_program` in chunks of ``chunk`` images."""

    name = "golden"

    def __init__(self, packed: PackedModel, chunk: int = 50):
        super().__init__(packed)
        self.chunk = int(chunk)
        #: frac_conv output buffer -> (open gates, outputs) over every image seen so far
        self.gate_counts: dict[str, tuple[int, int]] = {}

    def logits(self, pixels) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        out = [run_program(self.packed, pixels[i:i + self.chunk], self.gate_counts)["logits"]
               for i in range(0, len(pixels), self.chunk)]
        if not out:
            return np.zeros((0, self.packed.num_classes), np.int64)
        return np.concatenate(out).astype(np.int64)
