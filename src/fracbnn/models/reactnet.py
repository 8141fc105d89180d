"""ReActNet-A based ImageNet models in FracBNN, BNN and float form (SPEC section 2).

One definition serves the three variants; options choose the input layer
(thermometer + binary conv, or float conv on normalised RGB), the kind of
block convolution and the shortcut precision. Block (x is the block input):

    y = bn_res1( rprelu1( bn1( conv1(x) ) ) + shortcut1( Q4(x) ) )
    z = bn_res2( rprelu2( bn2( conv2(y) ) ) + shortcut2( Q4(y) ) )

conv1 is a full (not depthwise) 3x3 in->in conv carrying the block's stride,
conv2 a 1x1 in->out conv; each quantizes its own input (2-bit for FracBNN,
1-bit for BNN). shortcut1 is a 2x2 average pool when the block downsamples,
shortcut2 duplicates the channels when the block doubles them. Q4 is the
4-bit activation quantizer on the shortcuts (none in the float baseline).

Attribute names follow the CIFAR ResNets (``encoder``, ``stem``,
``stem_bn``, ``blocks[i].conv1`` ...) so tools that walk one walk both. The
head is an adaptive average pool, so any input whose sides are multiples of
32 works (224 gives the paper's 7x7 final map).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FracBNNError
from ..nn import RPReLU
from ..quant import ActivationQuantizer
from .registry import register_model
from .resnet_cifar import check_model_options, input_layer_forward, make_block_conv, make_input_layer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: (in channels, out channels, stride) of the 13 blocks of ReActNet-A.
REACTNET_A_BLOCKS = (
    (32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
    (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1),
    (512, 1024, 2), (1024, 1024, 1),
)
STEM_CHANNELS = 32


class InputSizeError(FracBNNError, ValueError):
    """Images whose sides are not multiples of 32 (a ValueError for callers, one line in the CLI)."""


class ChannelDuplicate(nn.Module):
    """Doubles the channels by concatenating the input with itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, x), dim=1)


def _shortcut_quantizer(bits: int) -> nn.Module:
    return nn.Identity() if bits == 0 else ActivationQuantizer(bits)


class ReActBlock(nn.Module):
    """3x3 in->in conv (with the stride), then 1x1 in->out conv, each with its own shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, conv_factory, shortcut_bits: int = 4):
        super().__init__()
        if stride not in (1, 2) or cout not in (cin, 2 * cin):
            raise ValueError(f"unsupported block shape {cin}->{cout} stride {stride}")
        self.shortcut_quantizer = _shortcut_quantizer(shortcut_bits)
        self.conv1 = conv_factory(cin, cin, 3, stride)
        self.bn1 = nn.BatchNorm2d(cin)
        self.rprelu1 = RPReLU(cin)
        self.shortcut1 = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
        self.bn_res1 = nn.BatchNorm2d(cin)
        self.conv2 = conv_factory(cin, cout, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.rprelu2 = RPReLU(cout)
        self.shortcut2 = ChannelDuplicate() if cout == 2 * cin else nn.Identity()
        self.bn_res2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.shortcut_quantizer
        y = self.bn_res1(self.rprelu1(self.bn1(self.conv1(x))) + self.shortcut1(q(x)))
        return self.bn_res2(self.rprelu2(self.bn2(self.conv2(y))) + self.shortcut2(q(y)))


class ReActNet(nn.Module):
    """Stem conv (stride 2) -> 13 ReAct blocks -> global average pool -> Linear.

    Input: (N, C, H, W) images as uint8 or float in [0, 1], H and W multiples of 32.
    """

    #: what export records when the checkpoint has no recipe (ImageNet preprocessing: resize, centre crop)
    default_dataset = "imagenet"

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        in_channels: int = 3,
        input_layer: str = "thermometer",
        resolution: int = 8,
        block_conv: str = "frac",
        frac_mode: str = "frac",
        act_bits: int = 1,
        shortcut_bits: int = 4,
        threshold_init: float = -1.0,
        sparse_backprop: bool = True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ):
        super().__init__()
        check_model_options(input_layer, block_conv)
        if not 0 <= int(shortcut_bits) <= 8:
            raise ValueError(f"shortcut_bits must be 0 (float shortcut) or 1..8, got {shortcut_bits}")

        def w(c):
            return max(1, int(round(c * width)))

        stem_out = w(STEM_CHANNELS)
        self.encoder, self.stem = make_input_layer(input_layer, in_channels, stem_out, 2, resolution, mean, std)
        self.stem_bn = nn.BatchNorm2d(stem_out)

        def conv_factory(cin, cout, kernel, stride):
            return make_block_conv(block_conv, cin, cout, stride, kernel=kernel, frac_mode=frac_mode,
                                   act_bits=act_bits, threshold_init=threshold_init,
                                   sparse_backprop=sparse_backprop)

        blocks = []
        for cin, cout, stride in REACTNET_A_BLOCKS:
            blocks.append(ReActBlock(w(cin), w(cout), stride, conv_factory, int(shortcut_bits)))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(blocks[-1].bn_res2.num_features, num_classes)
        self.input_size = (in_channels, 224, 224)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 4 and (images.shape[-1] % 32 or images.shape[-2] % 32):
            raise InputSizeError(f"ReActNet needs image sides that are multiples of 32 (e.g. 224), "
                                 f"got {tuple(images.shape[-2:])}")
        x = self.stem_bn(input_layer_forward(self.encoder, self.stem, images))
        x = self.blocks(x)
        return self.fc(torch.flatten(self.pool(x), 1))


_VARIANTS = {
    "reactnet-fracbnn": dict(input_layer="thermometer", block_conv="frac", act_bits=1, shortcut_bits=4),
    "reactnet-bnn": dict(input_layer="thermometer", block_conv="binary", act_bits=1, shortcut_bits=4),
    "reactnet-fp": dict(input_layer="float", block_conv="float", act_bits=1, shortcut_bits=0),
}


def _make_builder(defaults: dict):
    def build(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3,
              input_layer: str = defaults["input_layer"], resolution: int = 8,
              block_conv: str = defaults["block_conv"], frac_mode: str = "frac",
              act_bits: int = defaults["act_bits"], shortcut_bits: int = defaults["shortcut_bits"],
              threshold_init: float = -1.0, sparse_backprop: bool = True):
        return ReActNet(num_classes=num_classes, width=width, in_channels=in_channels, input_layer=input_layer,
                        resolution=resolution, block_conv=block_conv, frac_mode=frac_mode, act_bits=act_bits,
                        shortcut_bits=shortcut_bits, threshold_init=threshold_init,
                        sparse_backprop=sparse_backprop)
    return build


for _name, _defaults in _VARIANTS.items():
    register_model(_name)(_make_builder(_defaults))
