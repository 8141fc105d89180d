"""Convert a reference-code state dict into one of our models, strictly.

Every parameter and buffer of our model must come from exactly one reference
tensor of the same size; every reference tensor must be used or be one of the
few known to hold no model state. Anything else is an error that names the
offending reference keys, so a mismatched file can never load "nothing,
silently" (the public code loads with ``strict=False``).

Two behaviours of the reference code differ from ours and are reported, not
hidden (docs/import-reference.md):

* the reference binarises with ``torch.sign``, so a latent weight of exactly
  0 becomes 0 there and +1 here; the import counts such weights;
* the reference thermometer-encodes float images with float rounding, so a
  pixel p = 8j + 4 (an exact tie of p / 8) may land on either side there; we
  encode integer pixels exactly with ties to even. The ImageNet reference
  model also expects mean/std-normalised images, ours takes raw pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import safe_torch_load
from ..errors import CheckpointError
from ..models.reactnet import IMAGENET_MEAN, IMAGENET_STD
from .layout import LAYOUTS, ReferenceLayout

_RESHAPABLE = ("threshold", "shift_in", "slope", "shift_out")  # stored (1, C, 1, 1) there, (C,) here
_MAX_LISTED = 8


class ReferenceImportError(CheckpointError):
    """A reference checkpoint does not match the chosen architecture, or is unreadable."""


def _listing(keys) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def read_reference_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a reference ``torch.save(state_dict)`` file without running pickled code."""
    obj = safe_torch_load(path, "reference checkpoint", "check the path",
                          "it is not a readable state dict (a pickled whole model?); the reference code saves "
                          "state dicts with torch.save(model.state_dict())",
                          "the reference code saves state dicts with torch.save(model.state_dict())",
                          error=ReferenceImportError)
    if isinstance(obj, dict) and obj.get("format") == "fracbnn.checkpoint":
        raise ReferenceImportError(f"{path} is already a fracbnn checkpoint; use it directly")
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ReferenceImportError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def strip_module_prefix(state_dict: dict) -> dict:
    """Drop the ``module.`` prefix that nn.DataParallel adds to every key."""
    out = {}
    for key, value in state_dict.items():
        bare = key[len("module."):] if key.startswith("module.") else key
        if bare in out:
            raise ReferenceImportError(f"key {bare!r} appears both with and without the 'module.' prefix")
        out[bare] = value
    return out


def _check_normalisation(sd: dict, source: str) -> None:
    """The ImageNet reference de-normalises its input with img_mean/img_std; ours assumes the standard ones."""
    for key, expected in (("img_mean", IMAGENET_MEAN), ("img_std", IMAGENET_STD)):
        if key in sd and not torch.allclose(sd[key].flatten().double(), torch.tensor(expected, dtype=torch.float64)):
            raise ReferenceImportError(f"{source}: {key} is {sd[key].flatten().tolist()}, not the ImageNet "
                                       f"{list(expected)} the import assumes; these images would be encoded differently")


def _mapped_state_dict(model: nn.Module, sd: dict, layout: ReferenceLayout, source: str) -> dict:
    own = model.state_dict()
    ref_of = {k: layout.ref_key(k) for k in own}
    used = set(ref_of.values())
    missing = [r for r in used if r not in sd]
    unexpected = [k for k in sd if k not in used and not layout.is_ignorable(k)]
    bad_shape, out = [], {}
    for key, ref in ref_of.items():
        if ref not in sd:
            continue
        value, want = sd[ref], own[key].shape
        if value.shape != want:
            reshapable = key.rsplit(".", 1)[-1] in _RESHAPABLE and value.numel() == own[key].numel()
            if not reshapable:
                bad_shape.append(f"{ref} {tuple(value.shape)} (expected {tuple(want)})")
                continue
            value = value.reshape(want)
        out[key] = value.to(own[key].dtype).clone()
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if keys:
                parts.append(f"{label} keys: {_listing(keys)}")
        raise ReferenceImportError(f"{source} is not a reference {layout.arch} checkpoint "
                                   f"({layout.script}): {'; '.join(parts)}")
    return out


def _zero_binary_weights(model: nn.Module) -> int:
    """Latent binary weights that are exactly 0 (sign 0 in the reference, +1 here)."""
    from ..nn import BinaryConv2d, FracConv2d

    return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, (BinaryConv2d, FracConv2d)))


def convert_reference(state_dict: dict, arch: str, source: str = "reference checkpoint"):
    """Build our model for ``arch`` ("resnet20" or "reactnet") and load the reference weights.

    Returns ``(model, report)``; the report counts mapped and ignored tensors
    and binary weights that are exactly zero.
    """
    from ..checkpoint import load_state_dict_strict
    from ..models import create_model

    if arch not in LAYOUTS:
        raise ReferenceImportError(f"unknown reference architecture {arch!r}; choose one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[arch]
    sd = strip_module_prefix(state_dict)
    if layout.classifier_weight not in sd:
        raise ReferenceImportError(f"{source} is not a reference {arch} checkpoint ({layout.script}): "
                                   f"missing keys: {layout.classifier_weight}; found e.g. {_listing(list(sd))}")
    _check_normalisation(sd, source)
    num_classes = int(sd[layout.classifier_weight].shape[0])
    model = create_model(layout.model_name, num_classes=num_classes)
    mapped = _mapped_state_dict(model, sd, layout, source)
    load_state_dict_strict(model, mapped, source)
    model.eval()
    if layout.input_size:  # what the reference script trained on: recorded in the checkpoint by save_checkpoint
        model.input_size = tuple(layout.input_size)
    if layout.classes and len(layout.classes) == num_classes:
        model.classes = list(layout.classes)
    ignored = sorted(k for k in sd if layout.is_ignorable(k))
    report = {
        "arch": arch,
        "model": layout.model_name,
        "num_classes": num_classes,
        "mapped_tensors": len(mapped),
        "ignored_keys": len(ignored),
        "ignored_groups": sorted({k.split(".")[0] if k.startswith("teacher.") else k for k in ignored}),
        "zero_binary_weights": _zero_binary_weights(model),
    }
    return model, report


def teacher_state_dict(state_dict: dict) -> dict:
    """The ImageNet reference's built-in teacher as a plain torchvision state dict (may be empty)."""
    sd = strip_module_prefix(state_dict)
    return {k[len("teacher."):]: v for k, v in sd.items() if k.startswith("teacher.")}


def import_reference_file(path: str | os.PathLike, arch: str, out: str | os.PathLike, *, force: bool = False,
                          teacher_out: str | os.PathLike | None = None) -> dict:
    """Convert the reference file at ``path`` and write a fracbnn checkpoint to ``out``.

    Refuses to overwrite existing files unless ``force``. With ``teacher_out``
    (reactnet only) the embedded ResNet-50 teacher is saved as a torchvision
    state dict, usable as ``teacher: {torchvision: resnet50, weights: FILE}``.
    """
    from ..checkpoint import atomic_torch_save, save_checkpoint

    out = Path(out)
    targets = [out] + ([Path(teacher_out)] if teacher_out is not None else [])
    for target in targets:
        if target.exists() and not force:
            raise ReferenceImportError(f"{target} already exists; choose another output or pass --force")
    sd = read_reference_state_dict(path)
    model, report = convert_reference(sd, arch, source=str(path))
    if teacher_out is not None:
        teacher = teacher_state_dict(sd)
        if not teacher:
            raise ReferenceImportError(f"{path} holds no teacher.* keys to export; drop --teacher-out")
        atomic_torch_save(teacher, teacher_out)
        report["teacher_out"] = str(teacher_out)
        report["teacher_tensors"] = len(teacher)
    layout = LAYOUTS[arch]
    dataset = {"name": layout.dataset} if layout.dataset else None  # lets `fracbnn eval OUT` pick the data
    save_checkpoint(out, model, imported_from={"path": str(Path(path).resolve()), "arch": arch,
                                               "format": "cornell-zhang/FracBNN state dict"}, dataset=dataset)
    report["dataset"] = layout.dataset
    report["out"] = str(out)
    return report
