"""The thermometer input layer: encoder and binary convolution as one module.

Why one module: the thermometer code of a colour is decided by the pixel
value alone (through its level, the number of bits on), so the convolution of
the 96 bit planes with binary weights is, per tap, a lookup of the pixel's
level in a small table (the dot products of every level's code with that
tap's weights). On CPU the lookup (fused C kernel) is
several times cheaper than encoding 96 planes and convolving them; the result
is the same integer sum, bit for bit. Elsewhere (CUDA, float64, kernels not
built) the module encodes and convolves as written.
"""

from __future__ import annotations

import torch

from ..quant import ThermometerEncoder
from ..quant.thermometer import bits_per_channel, thermometer_bits, thermometer_level, to_pixels
from . import cpu_ops
from .layers import BinaryConv2d


def _level_code(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(level_of, code): the level (table row) of each pixel value, uint8 (256,), and the
    (L, T) +-1 code of each level, for L = T + 1 levels (0..T bits on)."""
    key = int(resolution)
    hit = _LEVEL_CODES.get(key)
    if hit is None:
        t = bits_per_channel(key)
        level_of = thermometer_level(torch.arange(256), key).to(torch.uint8)
        code = (torch.arange(t).view(1, t) < torch.arange(t + 1).view(t + 1, 1)).to(torch.float32) * 2 - 1
        hit = _LEVEL_CODES[key] = (level_of.contiguous(), code)
    return hit


_LEVEL_CODES: dict = {}


class _ThermoConvFn(torch.autograd.Function):
    """conv(thermometer(pixels), w) by table lookup; gradient for w only (pixels are data)."""

    @staticmethod
    def forward(ctx, pixels, w, resolution, stride, padding):
        o, _, k, _ = w.shape
        level_of, code = _level_code(resolution)  # code: (L, T), row l = the bits of level l
        colors, t = pixels.shape[1], code.shape[1]
        table = torch.einsum("lt,octuv->cuvlo", code, w.view(o, colors, t, k, k)).contiguous()  # exact integers
        ctx.save_for_backward(pixels)
        ctx.conf = (w.shape, table.shape, resolution, stride, padding)
        return cpu_ops.thermo_conv_forward(pixels, level_of, table, w.shape, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        (pixels,) = ctx.saved_tensors
        w_shape, table_shape, resolution, stride, padding = ctx.conf
        level_of, code = _level_code(resolution)
        dtable = cpu_ops.thermo_conv_table_grad(pixels, level_of, grad, table_shape, w_shape, stride, padding)
        grad_w = torch.einsum("lt,cuvlo->octuv", code, dtable).reshape(w_shape)
        return None, grad_w, None, None, None


class ThermometerConv2d(BinaryConv2d):
    """Images -> thermometer bits -> conv with sign(W): the FracBNN input layer.

    ``encoder`` (a :class:`ThermometerEncoder`) defines the code; its
    ``out_channels`` are this conv's ``in_channels``. Takes uint8 or [0, 1]
    float images of shape (N, colours, H, W). Square kernels, integer
    stride/padding, zero padding, no bias, groups 1.
    """

    is_input_layer = True

    def __init__(self, encoder: ThermometerEncoder, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, **kwargs):
        super().__init__(encoder.out_channels, out_channels, kernel_size, stride, padding, **kwargs)
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        w = self.weight_quantizer(self.weight)
        if self._can_lookup(images, w):
            pixels = images if images.dtype == torch.uint8 else to_pixels(images).to(torch.uint8)
            return _ThermoConvFn.apply(pixels.contiguous(), w, self.encoder.resolution, self.stride[0],
                                       self.padding[0])
        bits = self.encoder(images).to(w.dtype)
        return self._conv_forward(bits, w, self.bias)

    def _can_lookup(self, images: torch.Tensor, w: torch.Tensor) -> bool:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (cpu_ops.usable(w) and images.device.type == "cpu" and images.dim() == 4
                and images.shape[1] == self.encoder.in_channels and self.bias is None and self.groups == 1
                and k[0] == k[1] and s[0] == s[1] and not isinstance(p, str) and p[0] == p[1]
                and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and images.shape[2] + 2 * p[0] >= k[0] and images.shape[3] + 2 * p[0] >= k[0]
                and not torch.is_autocast_enabled("cpu"))


def thermometer_conv_reference(images: torch.Tensor, weight_sign: torch.Tensor, resolution: int, stride: int,
                               padding: int) -> torch.Tensor:
    """The written-out composition (encode all planes, then convolve), for tests and comparisons."""
    bits = thermometer_bits(images, resolution, dtype=weight_sign.dtype)
    return torch.nn.functional.conv2d(bits, weight_sign, None, stride, padding)
