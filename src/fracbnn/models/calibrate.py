"""Untrained models with the statistics of trained ones, for tests and benchmarks without a checkpoint.

A randomly initialised BNN has BatchNorm statistics (0, 1) that do not match
its real activations, and gates that are all open or all closed, so its
integer model exercises little. :func:`data_like` measures the BatchNorm
statistics on images and puts every channel's gate threshold at a quantile
of its own MSB pre-activation, so a chosen share of the gates is open, as in
a trained FracBNN (the authors' ResNet-20 opens 32-50 % per layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import FracConv2d, RPReLU


def smooth_images(n: int, size, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """uint8 (n, C, H, W) images of smooth random blobs (closer to photos than white noise)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand(n, channels, max(2, h // 8), max(2, w // 8), generator=g)
    img = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    img = img + 0.08 * torch.randn(n, channels, h, w, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def _calibrate_bn(model: nn.Module, images: torch.Tensor) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch gives exactly its statistics
    model.train()
    try:
        model(images)
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.eval()


@torch.no_grad()
def _place_thresholds(model: nn.Module, images: torch.Tensor, open_range, g: torch.Generator) -> None:
    convs = [m for m in model.modules() if isinstance(m, FracConv2d) and m.mode == "frac"]
    msb = {}

    def hook(mod, inp):
        codes = mod.input_quantizer.codes(inp[0])
        m_plane = 2.0 * (codes >> 1).to(inp[0].dtype) - 1.0
        w = torch.where(mod.weight >= 0, 1.0, -1.0).to(inp[0].dtype)
        msb[mod] = (2.0 / 3.0) * F.conv2d(m_plane, w, None, mod.stride, mod.padding)

    handles = [c.register_forward_pre_hook(hook) for c in convs]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    lo, hi = open_range
    for c in convs:
        z = msb[c].transpose(0, 1).reshape(c.out_channels, -1)
        share_open = lo + (hi - lo) * torch.rand(c.out_channels, generator=g, dtype=z.dtype)
        theta = torch.quantile(z, (1.0 - share_open).clamp(0, 1), dim=1).diagonal()
        # (2/3) S_M takes values 4/3 apart; half-way between two keeps every output off the threshold,
        # where float rounding in training and the exact integer gate could disagree
        c.threshold.copy_(theta + 2.0 / 3.0)


@torch.no_grad()
def data_like(model: nn.Module, images: torch.Tensor, seed: int = 0, open_range=(0.2, 0.8)) -> nn.Module:
    """Random affine BatchNorm/RPReLU parameters, statistics measured on ``images``, part-open gates; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            m.weight.copy_(1.0 + 0.3 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
        elif isinstance(m, RPReLU):
            for name, p in m.named_parameters():
                if "slope" in name:
                    p.copy_(0.25 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
    for _ in range(2):  # gates change the conv outputs the BatchNorms see, and the other way round
        _calibrate_bn(model, images)
        _place_thresholds(model, images, open_range, g)
    _calibrate_bn(model, images)
    return model.eval()
