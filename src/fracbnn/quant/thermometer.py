"""Thermometer encoding of 8-bit pixels into bipolar bit planes.

Definition (on integer pixel values p in 0..255, resolution R):
    T = round(255 / R) bits per colour channel,
    n = round(p / R), rounding half to even (as ``torch.round`` in the paper's
        code; with R = 8 the ties are p = 8j + 4: p = 4 -> 0, p = 12 -> 2),
    bit k (k = 0..T-1) = +1 if k < n else -1,
    output channel index = colour * T + k (colour-major).

Everything is computed with integer arithmetic, so the result never depends on
float rounding. Float images in [0, 1] (``ToTensor`` style, value p / 255)
are first mapped back to their pixel value with round(x * 255), which is exact
because the float error is far below 0.5.
"""

from __future__ import annotations

import torch
from torch import nn

# one definition for the trained model and the integer IR (works on numpy arrays and tensors)
from ..ir.arith import bits_per_channel  # noqa: F401
from ..ir.arith import thermometer_level  # noqa: F401


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Integer pixel values (int64) from uint8 or float-in-[0, 1] images.

    Float values outside [0, 1] are clamped to 0..255 so a stray
    normalised image cannot produce out-of-range codes.
    """
    if images.dtype == torch.uint8:
        return images.to(torch.int64)
    if images.is_floating_point():
        return torch.round(images.to(torch.float64) * 255.0).clamp_(0, 255).to(torch.int64)
    if images.dtype in (torch.int16, torch.int32, torch.int64):
        return images.to(torch.int64).clamp(0, 255)
    raise TypeError(f"expected uint8 or float images, got {images.dtype}")


def thermometer_table(resolution: int = 8, dtype=torch.float32, device=None) -> torch.Tensor:
    """(256, T) table: row p is the encoding of pixel value p (the definition above, in integers)."""
    key = (int(resolution), dtype, str(device))
    table = _TABLES.get(key)
    if table is None:
        t = bits_per_channel(resolution)
        n_levels = thermometer_level(torch.arange(256), resolution)  # (256,)
        on = torch.arange(t).view(1, t) < n_levels.view(256, 1)
        table = _TABLES[key] = (on.to(dtype) * 2 - 1).to(device)
    return table


_TABLES: dict = {}


def thermometer_bits(images: torch.Tensor, resolution: int = 8, dtype=torch.float32) -> torch.Tensor:
    """Encode (N, C, H, W) images to (N, C*T, H, W) values in {-1, +1}.

    Implemented as a lookup of each pixel's row in :func:`thermometer_table`
    (the encoding depends on the pixel value only): several times faster than
    comparing every bit, and identical by construction.
    """
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    table = thermometer_table(resolution, dtype, images.device)
    t = table.shape[1]
    out = torch.nn.functional.embedding(to_pixels(images), table)  # (N, C, H, W, T)
    n, c, h, w = images.shape
    # contiguous NCHW (reshape alone returns a channels-last view when C == 1)
    return out.permute(0, 1, 4, 2, 3).contiguous().view(n, c * t, h, w)


class ThermometerEncoder(nn.Module):
    """Module wrapper of :func:`thermometer_bits`; any batch or image size.

    It has no parameters and produces no gradient (its input is data).
    """

    precision = 1

    def __init__(self, resolution: int = 8, in_channels: int = 3):
        super().__init__()
        if int(resolution) < 1 or int(resolution) > 255:
            raise ValueError(f"resolution must be in 1..255, got {resolution}")
        self.resolution = int(resolution)
        self.in_channels = int(in_channels)
        self.bits = bits_per_channel(self.resolution)

    @property
    def out_channels(self) -> int:
        return self.in_channels * self.bits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"ThermometerEncoder expects (N, {self.in_channels}, H, W) images, got {tuple(images.shape)}"
            )
        dtype = torch.get_default_dtype()
        return thermometer_bits(images, self.resolution, dtype=dtype)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, bits={self.bits}, in_channels={self.in_channels}"
