"""Where each of our parameters lives in a reference-code state dict.

The mapping goes from OUR key to the reference key, so the set of reference
keys a file must contain follows from our model's own ``state_dict()``:
nothing can be silently skipped. Reference keys that carry no model state
are listed as ignorable (the thermometer encoder's fixed-batch placeholder,
the ImageNet model's built-in teacher and its normalisation constants).

Reference layout (read from the public code, summarised in our words):

CIFAR ResNet-20 (``cifar10.py``): ``conv1``/``bn1`` input layer,
``layer{1,2,3}.{j}`` blocks with ``conv1, bn1, rprelu1, bn3`` (first half)
and ``conv2, bn2, rprelu2, bn4`` (second half), ``linear`` classifier.

ImageNet ReActNet (``imagenet.py``): ``model.0.{0,1}`` input conv and BN,
``model.{1..13}`` blocks with ``conv3x3.{0,1}`` (3x3 conv, BN), ``rprelu1``,
``shiftbn1``, ``pointwise.{0,1}`` (1x1 conv, BN), ``rprelu2``, ``shiftbn2``,
then ``fc``; plus ``teacher.*`` (a torchvision ResNet-50), ``img_mean``,
``img_std``.

Both: a precision-gated conv has ``weight`` and ``threshold`` of shape
(1, C, 1, 1); RPReLU is ``shift_x.bias`` (1, C, 1, 1), ``prelu.weight`` (C,)
and ``shift_y.bias`` (1, C, 1, 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

#: our RPReLU parameter -> reference sub-key
RPRELU_PARAMS = {"shift_in": "shift_x.bias", "slope": "prelu.weight", "shift_out": "shift_y.bias"}

#: our block module -> reference block module
CIFAR_BLOCK = {"conv1": "conv1", "bn1": "bn1", "rprelu1": "rprelu1", "bn_res1": "bn3",
               "conv2": "conv2", "bn2": "bn2", "rprelu2": "rprelu2", "bn_res2": "bn4"}
REACTNET_BLOCK = {"conv1": "conv3x3.0", "bn1": "conv3x3.1", "rprelu1": "rprelu1", "bn_res1": "shiftbn1",
                  "conv2": "pointwise.0", "bn2": "pointwise.1", "rprelu2": "rprelu2", "bn_res2": "shiftbn2"}


class UnmappedKeyError(KeyError):
    """One of our keys has no place in the reference layout (a bug in the layout)."""


def _block_key(module: str, param: str, table: dict[str, str]) -> str:
    ref_module = table[module]
    if module.startswith("rprelu"):
        return f"{ref_module}.{RPRELU_PARAMS[param]}"
    return f"{ref_module}.{param}"


def _cifar_key(key: str) -> str:
    if key.startswith("stem."):
        return "conv1." + key[len("stem."):]
    if key.startswith("stem_bn."):
        return "bn1." + key[len("stem_bn."):]
    if key.startswith("fc."):
        return "linear." + key[len("fc."):]
    m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(\w+)\.(\w+)", key)
    if m and m.group(3) in CIFAR_BLOCK:
        stage, block, module, param = m.groups()
        return f"layer{int(stage) + 1}.{block}." + _block_key(module, param, CIFAR_BLOCK)
    raise UnmappedKeyError(key)


def _reactnet_key(key: str) -> str:
    if key.startswith("stem."):
        return "model.0.0." + key[len("stem."):]
    if key.startswith("stem_bn."):
        return "model.0.1." + key[len("stem_bn."):]
    if key.startswith("fc."):
        return key
    m = re.fullmatch(r"blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if m and m.group(2) in REACTNET_BLOCK:
        block, module, param = m.groups()
        return f"model.{int(block) + 1}." + _block_key(module, param, REACTNET_BLOCK)
    raise UnmappedKeyError(key)


#: CIFAR-10's label names in label order (as in the dataset's batches.meta)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class ReferenceLayout:
    """How one reference architecture maps onto one of our registered models."""

    arch: str
    model_name: str
    ref_key: Callable[[str], str]  # our key -> reference key
    classifier_weight: str  # reference key whose shape gives (num_classes, features)
    ignorable: Callable[[str], bool]  # reference keys that hold no model state
    script: str  # the reference training script that writes such files
    dataset: str = ""  # the dataset that script trains on (recorded in the imported checkpoint)
    input_size: tuple = ()  # (C, H, W) of the images the model takes
    classes: tuple = ()  # class names in label order, where the dataset fixes them

    def is_ignorable(self, ref_key: str) -> bool:
        return self.ignorable(ref_key)


def _cifar_ignorable(key: str) -> bool:
    return key == "encoder.placeholder"


def _reactnet_ignorable(key: str) -> bool:
    return key in ("encoder.placeholder", "img_mean", "img_std") or key.startswith("teacher.")


LAYOUTS = {
    "resnet20": ReferenceLayout("resnet20", "resnet20-fracbnn", _cifar_key, "linear.weight", _cifar_ignorable,
                                "cifar10.py", "cifar10", (3, 32, 32), CIFAR10_CLASSES),
    "reactnet": ReferenceLayout("reactnet", "reactnet-fracbnn", _reactnet_key, "fc.weight", _reactnet_ignorable,
                                "imagenet.py", "imagenet", (3, 224, 224)),
}
ARCHS = tuple(LAYOUTS)
