"""CIFAR-style ResNets (ResNet-20 by default) in FracBNN, BNN and float form.

One definition serves all variants; the options decide the input layer
(thermometer + binary conv, or float conv on normalised RGB) and the kind of
convolution inside the blocks. Block, following SPEC section 2:

    y = bn_res1( rprelu1( bn1( conv1(x) ) ) + shortcut(x) )
    z = bn_res2( rprelu2( bn2( conv2(y) ) ) + y )

where each conv quantizes its own input (2-bit for FracBNN, 1-bit for BNN).
The residual path stays full precision; the down-sampling shortcut is a 2x2
average pool followed by concatenating the result with itself.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import BinaryConv2d, FracConv2d, RPReLU, ThermometerConv2d
from ..quant import ActivationQuantizer, ThermometerEncoder
from .registry import register_model

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

BLOCK_CONVS = ("frac", "binary", "float")
INPUT_LAYERS = ("thermometer", "float")


class DuplicateDownsample(nn.Module):
    """2x2 average pool, then the channels are doubled by self-concatenation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.avg_pool2d(x, 2)
        return torch.cat((x, x), dim=1)


class NormalizedImage(nn.Module):
    """uint8 or [0, 1] float images -> (x - mean) / std, for float input layers."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.mean.dtype)
        if images.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.mean) / self.std


def check_model_options(input_layer: str, block_conv: str) -> None:
    if input_layer not in INPUT_LAYERS:
        raise ValueError(f"unknown input layer {input_layer!r}; choose one of {', '.join(INPUT_LAYERS)}")
    if block_conv not in BLOCK_CONVS:
        raise ValueError(f"unknown block conv {block_conv!r}; choose one of {', '.join(BLOCK_CONVS)}")


def make_input_layer(input_layer: str, in_channels: int, out_channels: int, stride: int, resolution: int,
                     mean, std) -> tuple[nn.Module, nn.Module]:
    """(encoder, stem conv): thermometer bits + binary 3x3 conv, or normalised RGB + float 3x3 conv."""
    if input_layer == "thermometer":
        encoder = ThermometerEncoder(resolution, in_channels)
        return encoder, ThermometerConv2d(encoder, out_channels, 3, stride, 1)
    return NormalizedImage(mean, std), nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


def input_layer_forward(encoder: nn.Module, stem: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Stem output from images: the thermometer stem encodes itself (see ThermometerConv2d)."""
    if isinstance(stem, ThermometerConv2d):
        return stem(images)
    return stem(encoder(images).to(stem.weight.dtype))


def make_block_conv(kind: str, cin: int, cout: int, stride: int, *, kernel: int = 3, frac_mode: str = "frac",
                    act_bits: int = 1, threshold_init: float = -1.0, sparse_backprop: bool = True) -> nn.Module:
    """A convolution inside a residual block, by kind; padding keeps 'same' size at stride 1."""
    pad = kernel // 2
    if kind == "frac":
        return FracConv2d(cin, cout, kernel, stride, pad, mode=frac_mode, threshold_init=threshold_init,
                          sparse_backprop=sparse_backprop)
    if kind == "binary":
        return BinaryConv2d(cin, cout, kernel, stride, pad, input_quantizer=ActivationQuantizer(act_bits))
    if kind == "float":
        return nn.Conv2d(cin, cout, kernel, stride, pad, bias=False)
    raise ValueError(f"unknown block conv {kind!r}; choose one of {', '.join(BLOCK_CONVS)}")


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, conv_factory):
        super().__init__()
        if stride == 1 and cin == cout:
            self.shortcut = nn.Identity()
        elif stride == 2 and cout == 2 * cin:
            self.shortcut = DuplicateDownsample()
        else:
            raise ValueError(f"unsupported block shape {cin}->{cout} stride {stride}")
        self.conv1 = conv_factory(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.rprelu1 = RPReLU(cout)
        self.bn_res1 = nn.BatchNorm2d(cout)
        self.conv2 = conv_factory(cout, cout, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.rprelu2 = RPReLU(cout)
        self.bn_res2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn_res1(self.rprelu1(self.bn1(self.conv1(x))) + self.shortcut(x))
        return self.bn_res2(self.rprelu2(self.bn2(self.conv2(y))) + y)


class CifarResNet(nn.Module):
    """Stem conv -> 3 stages of residual blocks -> global average pool -> Linear.

    Input: (N, C, H, W) images as uint8 or float in [0, 1].
    """

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        blocks_per_stage: int = 3,
        in_channels: int = 3,
        input_layer: str = "thermometer",
        resolution: int = 8,
        block_conv: str = "frac",
        frac_mode: str = "frac",
        act_bits: int = 1,
        threshold_init: float = -1.0,
        sparse_backprop: bool = True,
        mean=None,
        std=None,
    ):
        super().__init__()
        check_model_options(input_layer, block_conv)
        widths = [max(1, int(round(w * width))) for w in (16, 32, 64)]
        # CIFAR statistics for RGB; a neutral 0.5 / 0.25 for other channel counts
        if mean is None:
            mean = CIFAR_MEAN if in_channels == 3 else (0.5,) * in_channels
        if std is None:
            std = CIFAR_STD if in_channels == 3 else (0.25,) * in_channels
        self.encoder, self.stem = make_input_layer(input_layer, in_channels, widths[0], 1, resolution, mean, std)
        self.stem_bn = nn.BatchNorm2d(widths[0])

        def conv_factory(cin, cout, stride):
            return make_block_conv(block_conv, cin, cout, stride, frac_mode=frac_mode, act_bits=act_bits,
                                   threshold_init=threshold_init, sparse_backprop=sparse_backprop)

        stages, cin = [], widths[0]
        for i, cout in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(ResidualBlock(cin, cout, stride, conv_factory))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.input_size = (in_channels, 32, 32)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem_bn(input_layer_forward(self.encoder, self.stem, images))
        x = self.stages(x)
        return self.fc(torch.flatten(self.pool(x), 1))



_FRAC = dict(input_layer="thermometer", block_conv="frac")
_BNN = dict(input_layer="thermometer", block_conv="binary", act_bits=1)
_FP = dict(input_layer="float", block_conv="float")


def _register_family(depth: int):
    n = (depth - 2) // 6

    def make(defaults):
        def build(num_classes: int = 10, width: float = 1.0, in_channels: int = 3,
                  input_layer: str = defaults["input_layer"], resolution: int = 8,
                  block_conv: str = defaults["block_conv"], frac_mode: str = "frac",
                  act_bits: int = defaults.get("act_bits", 1), threshold_init: float = -1.0,
                  sparse_backprop: bool = True):
            return CifarResNet(num_classes=num_classes, width=width, blocks_per_stage=n,
                               in_channels=in_channels, input_layer=input_layer, resolution=resolution,
                               block_conv=block_conv, frac_mode=frac_mode, act_bits=act_bits,
                               threshold_init=threshold_init, sparse_backprop=sparse_backprop)
        return build

    register_model(f"resnet{depth}-fracbnn")(make(_FRAC))
    register_model(f"resnet{depth}-bnn")(make(_BNN))
    register_model(f"resnet{depth}-fp")(make(_FP))


for _depth in (20, 32, 44, 56):
    _register_family(_depth)
