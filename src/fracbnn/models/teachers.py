"""Frozen teacher networks for knowledge distillation (SPEC section 3, ImageNet).

The paper distils from a ResNet-50. The public code keeps the teacher in train
mode, so its BatchNorm statistics drift while the student trains; here the
teacher is frozen for good: no gradients, and ``train()`` cannot switch it out
of eval mode.

The teacher sees the same images as the student (uint8 or float in [0, 1])
and normalises them with the ImageNet mean/std itself, so one data pipeline
feeds both. torchvision is imported lazily: it is only needed here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import safe_torch_load
from ..errors import CheckpointError, FracBNNError
from .reactnet import IMAGENET_MEAN, IMAGENET_STD
from .resnet_cifar import NormalizedImage



class FrozenModel(nn.Module):
    """Wraps ``net`` for use as a teacher: no gradients, always in eval mode."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        """Ignored on purpose: a teacher in train mode would update its BatchNorm statistics."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(images)


class FrozenTeacher(FrozenModel):
    """A frozen float network that first normalises uint8 / [0, 1] images with mean/std."""

    def __init__(self, net: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__(net)
        self.normalize = NormalizedImage(mean, std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(self.normalize(images))


def _import_torchvision():
    try:
        import torchvision
    except ImportError:
        raise FracBNNError("a torchvision teacher needs torchvision; install it with "
                           "`pip install 'fracbnn[imagenet]'` (a torchvision build matching your torch)") from None
    return torchvision


def read_state_dict(path: str | os.PathLike) -> dict:
    """A plain state dict from ``path``, loaded without executing pickled code.

    Accepts torchvision's own ``.pth`` files, dicts wrapping the weights under
    ``state_dict`` or ``model``, and ``module.``-prefixed keys (DataParallel).
    """
    obj = safe_torch_load(path, "teacher weights",
                          "give a local weights file or null to download torchvision's pretrained weights",
                          "give a state dict saved with torch.save(model.state_dict())",
                          "use another weights file")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _num_classes(state_dict: dict) -> int:
    """Classes of a classifier state dict: rows of its last 2-D weight (torchvision puts the head last).

    Lets a teacher fine-tuned on a subset of classes (or a small test model) load too.
    """
    heads = [v for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 2]
    return int(heads[-1].shape[0]) if heads else 1000


def _is_weights_name(weights) -> bool:
    """True for torchvision weight names such as IMAGENET1K_V1 or DEFAULT (not a path)."""
    w = str(weights)
    return not Path(w).exists() and w.replace("_", "").isalnum() and w.upper() == w


def _default_weights_name(tv, arch: str) -> str:
    """IMAGENET1K_V1 (what ``pretrained=True`` meant when the paper was written) where it exists."""
    enum = tv.models.get_model_weights(arch)
    return "IMAGENET1K_V1" if "IMAGENET1K_V1" in enum.__members__ else "DEFAULT"


def torchvision_teacher(arch: str = "resnet50", weights: str | os.PathLike | None = None) -> FrozenTeacher:
    """A frozen torchvision classifier ready to be a distillation teacher.

    ``weights`` is a local weights file (loaded strictly: any missing or
    unexpected key is an error naming it), a torchvision weights name such as
    ``IMAGENET1K_V2``, or None for ``IMAGENET1K_V1`` (the weights the paper's
    code used). Named weights are downloaded on first use (needs the network)
    and cached by torch hub. A local file may have any number of classes
    (read from its classifier weight); it must match the student's.
    """
    from ..checkpoint import load_state_dict_strict

    tv = _import_torchvision()
    try:
        builder = tv.models.get_model_builder(arch)
    except ValueError:
        raise FracBNNError(f"unknown torchvision model {arch!r}; e.g. resnet50, resnet18") from None
    if weights is None or _is_weights_name(weights):
        name = str(weights) if weights is not None else _default_weights_name(tv, arch)
        try:
            net = builder(weights=name)
        except Exception as e:
            raise FracBNNError(f"could not get pretrained {arch} weights {name} ({type(e).__name__}: "
                               f"{str(e)[:120]}); pass a local weights file as teacher weights instead") from None
    else:
        sd = read_state_dict(weights)
        net = builder(weights=None, num_classes=_num_classes(sd))
        load_state_dict_strict(net, sd, f"teacher weights {weights}")
    return FrozenTeacher(net)
