"""ReActNet-A (reactnet-fracbnn, reactnet-bnn) -> IR.

    stem: thermometer -> binary_conv (3x3, stride 2) -> scale_shift
    block (x = block input, Q4 the shortcut quantizer as `quantize` codes):
        quantize(x) -> q1 [-> sum_pool2 when the block strides]
        quantize2/sign_bit -> 3x3 frac_conv/binary_conv (stride s) -> block_post(shortcut q1 or its pool) -> y
        quantize(y) -> q2 [-> channel_dup when the block doubles the channels]
        quantize2/sign_bit -> 1x1 frac_conv/binary_conv -> block_post(shortcut q2 or its dup)           -> out

The quantized shortcut enters block_post as odd integers v (real value v / L,
L = 2^k - 1); the 1/L, and the 1/4 of the pool, are folded into sc_mul.
"""

from __future__ import annotations

from torch import nn

from ...models.reactnet import ChannelDuplicate, ReActNet
from ...quant import ActivationQuantizer
from . import register_converter
from .builder import Builder, UnsupportedModelError


@register_converter(ReActNet)
def convert_reactnet(model: ReActNet, b: Builder) -> str:
    x = b.thermometer_stem(model.encoder, model.stem, model.stem_bn)
    for i, blk in enumerate(model.blocks):
        name = f"blocks.{i}"
        if not isinstance(blk.shortcut_quantizer, ActivationQuantizer):
            raise UnsupportedModelError(f"{name} has a float shortcut; export models with quantized shortcuts "
                                        "(shortcut_bits 2..8)")
        q1, unit = b.quantized_shortcut(blk.shortcut_quantizer, x, f"{name}.q1")
        if isinstance(blk.shortcut1, nn.AvgPool2d):
            pool = blk.shortcut1
            if pool.kernel_size not in (2, (2, 2)) or pool.stride not in (2, (2, 2)) or pool.padding not in (0, (0, 0)):
                raise UnsupportedModelError(f"{name}: only a 2x2 stride-2 average pool shortcut is supported")
            b.op(op="sum_pool2", input=q1, output=f"{name}.sc1")
            sc1, pooled = f"{name}.sc1", True
        elif isinstance(blk.shortcut1, nn.Identity):
            sc1, pooled = q1, False
        else:
            raise UnsupportedModelError(f"{name} has an unsupported shortcut {type(blk.shortcut1).__name__}")
        y = b.conv_block(blk.conv1, blk.bn1, blk.rprelu1, blk.bn_res1, x, sc1, unit,
                         (f"{name}.conv1", f"{name}.post1"), f"{name}.y", pooled)
        q2, unit = b.quantized_shortcut(blk.shortcut_quantizer, y, f"{name}.q2")
        if isinstance(blk.shortcut2, ChannelDuplicate):
            b.op(op="channel_dup", input=q2, output=f"{name}.sc2")
            sc2 = f"{name}.sc2"
        elif isinstance(blk.shortcut2, nn.Identity):
            sc2 = q2
        else:
            raise UnsupportedModelError(f"{name} has an unsupported shortcut {type(blk.shortcut2).__name__}")
        b.conv_block(blk.conv2, blk.bn2, blk.rprelu2, blk.bn_res2, y, sc2, unit,
                     (f"{name}.conv2", f"{name}.post2"), f"{name}.out")
        x = f"{name}.out"
    return x
