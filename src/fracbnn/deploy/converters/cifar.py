"""CIFAR ResNets (resnet20/32/44/56, -fracbnn and -bnn) -> IR.

    stem: thermometer -> binary_conv -> scale_shift
    block: [avgpool2_dup of x when down-sampling]
           quantize2/sign_bit -> frac_conv/binary_conv -> block_post(shortcut x or its pool)   -> y
           quantize2/sign_bit -> frac_conv/binary_conv -> block_post(shortcut y)               -> out
"""

from __future__ import annotations

from torch import nn

from ...models.resnet_cifar import CifarResNet, DuplicateDownsample
from . import register_converter
from .builder import Builder, UnsupportedModelError


@register_converter(CifarResNet)
def convert_cifar_resnet(model: CifarResNet, b: Builder) -> str:
    x = b.thermometer_stem(model.encoder, model.stem, model.stem_bn)
    for i, stage in enumerate(model.stages):
        for j, blk in enumerate(stage):
            name = f"stages.{i}.{j}"
            if isinstance(blk.shortcut, DuplicateDownsample):
                sc, pooled = f"{name}.shortcut", True
                b.op(op="avgpool2_dup", input=x, output=sc)
                b.same_format(sc, x)
            elif isinstance(blk.shortcut, nn.Identity):
                sc, pooled = x, False
            else:
                raise UnsupportedModelError(f"{name} has an unsupported shortcut {type(blk.shortcut).__name__}")
            y = b.conv_block(blk.conv1, blk.bn1, blk.rprelu1, blk.bn_res1, x, sc, b.unit(sc),
                             (f"{name}.conv1", f"{name}.post1"), f"{name}.y", pooled)
            b.conv_block(blk.conv2, blk.bn2, blk.rprelu2, blk.bn_res2, y, y, b.unit(y),
                         (f"{name}.conv2", f"{name}.post2"), f"{name}.out")
            x = f"{name}.out"
    return x
