"""Integer primitives of the IR, in numpy: rounding, saturation, bit packing, XNOR convolution.

These few functions define every rounding the integer model does; the ops in
:mod:`fracbnn.ir.ops` are written with them and nothing else. The C side has
one header with the same primitives (docs/deploy-format.md says which).
"""

from __future__ import annotations

import numpy as np


def round_shift(v: np.ndarray, s: int) -> np.ndarray:
    """Divide by 2^s rounding to nearest, ties toward +infinity: floor((v + 2^(s-1)) / 2^s); v for s = 0."""
    s = int(s)
    if s == 0:
        return v
    return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)


def saturate(v: np.ndarray, bits: int) -> np.ndarray:
    """Clip to the signed two's-complement range of ``bits`` bits."""
    hi = (1 << (int(bits) - 1)) - 1
    return np.clip(v, -hi - 1, hi)


def round_half_even_div(p, r: int):
    """round(p / r), ties to even, for non-negative integer arrays (numpy or torch)."""
    q = p // r
    rem = p - q * r
    up = (2 * rem > r) | ((2 * rem == r) & (q % 2 == 1))
    return q + up


def thermometer_level(pixels, resolution: int = 8):
    """Number of +1 bits of a pixel's thermometer code, n = round(p / R) ties to even."""
    return round_half_even_div(pixels, int(resolution))


def bits_per_channel(resolution: int) -> int:
    """T = round(255 / R) thermometer bits per colour channel."""
    return int(round_half_even_div(255, int(resolution)))


def pack_weight_bits(sign_w: np.ndarray) -> np.ndarray:
    """(Cout, Cin, kh, kw) weights in {-1, +1} -> uint8 (Cout, kh, kw, ceil(Cin/8)).

    Bit ``ci % 8`` (least significant first) of byte ``ci // 8`` is 1 for a
    +1 weight of input channel ci, 0 for -1; unused high bits are 0.
    """
    bits = (np.asarray(sign_w) > 0).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.packbits(bits, axis=-1, bitorder="little")


def unpack_weight_bits(packed: np.ndarray, in_channels: int) -> np.ndarray:
    """Inverse of :func:`pack_weight_bits`: uint8 0/1 bits of shape (Cout, Cin, kh, kw)."""
    bits = np.unpackbits(packed, axis=-1, count=in_channels, bitorder="little")
    return np.ascontiguousarray(bits.transpose(0, 3, 1, 2))


def conv_out(n: int, k: int, s: int, p: int) -> int:
    """Output side of a convolution with kernel k, stride s and padding p."""
    return (n + 2 * p - k) // s + 1


def binary_conv2d(x_bits: np.ndarray, w_bits: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """XNOR-popcount convolution over the valid taps only, int64 (N, O, Ho, Wo).

    For output (n, o, i, j): over the taps (c, u, v) whose input pixel
    (i*stride + u - padding, j*stride + v - padding) lies inside the image,
        S = 2 * #{taps: x bit == w bit} - #{valid taps}
    i.e. the convolution of the +-1 values with zero padding.

    Evaluated as float32 products of +-1/0 values: every partial sum is an
    integer of magnitude <= Cin*K*K < 2^24, so float32 holds it exactly (an
    implementation detail for speed, not part of the definition).
    """
    N, C, H, W = x_bits.shape
    O, _, K, _ = w_bits.shape
    if C * K * K >= 1 << 24:
        raise ValueError(f"{C * K * K} taps exceed the exact float32 range of the golden convolution")
    # +-1 values, and 0 in the padded border: a padded tap then adds nothing
    x = np.zeros((N, H + 2 * padding, W + 2 * padding, C), np.float32)
    x[:, padding:padding + H, padding:padding + W, :] = 2.0 * x_bits.transpose(0, 2, 3, 1) - 1.0
    w = 2.0 * w_bits.astype(np.float32) - 1.0  # (O, C, K, K)
    Ho, Wo = conv_out(H, K, stride, padding), conv_out(W, K, stride, padding)
    acc = np.zeros((N, Ho, Wo, O), np.float32)
    for u in range(K):
        for v in range(K):
            tap = x[:, u:u + stride * (Ho - 1) + 1:stride, v:v + stride * (Wo - 1) + 1:stride, :]
            acc += (tap.reshape(-1, C) @ w[:, :, u, v].T).reshape(N, Ho, Wo, O)
    return acc.astype(np.int64).transpose(0, 3, 1, 2)
