"""Datasets and deterministic batch loading for training and evaluation.

``load_dataset(name, root, split)`` returns a dataset whose samples are
``(uint8 CHW image, int label)``; ``make_loader(dataset, batch_size, ...)``
turns it into a seeded, resumable, rank-aware stream of uint8 batches.
Images are never normalised here: the models encode raw pixels themselves.
See docs/data.md.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FracBNNError
from .augment import AUGMENTATIONS, apply_crop_flip, draw_crop_flip
from .cache import cache_dir, dataset_root_default
from .imagefolder import ImageFolderDataset
from .loader import BatchLoader, make_loader
from .memory import InMemoryImageDataset

DATASETS = ("cifar10", "cifar100", "digits", "imagefolder", "imagenet")
SPLITS = {"train": "train", "test": "test", "val": "test"}


class UnknownDatasetError(FracBNNError, ValueError):
    """An unknown dataset name (a ValueError for callers, a one-line error for the CLI)."""


def load_dataset(name: str, root: str | Path | None = None, split: str = "train", download: bool = True,
                 **kwargs):
    """Load a dataset split by name.

    name: "cifar10", "cifar100", "digits", "imagefolder" or "imagenet"
      (an image folder with the SPEC's ImageNet transforms, see imagenet.py).
    root: CIFAR: its folder, a folder containing it or its archive, or the
      archive file (None: $FRACBNN_DATA, else the cache, else download when
      ``download``). imagefolder, imagenet: the folder holding train/ and val/.
      Ignored by digits.
    split: "train" or "test" ("val" is an alias of "test").
    kwargs: cifar100: labels="fine"|"coarse". imagefolder: image_size=(H, W),
      mode="RGB"|"L", transform=callable (see ImageFolderDataset). imagenet:
      image_size, scale, lighting, eval_resize (see imagenet.load_imagenet).
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    split = SPLITS[split]
    if key in ("cifar10", "cifar100"):
        from .cifar import load_cifar

        _check_kwargs(key, kwargs, ("labels",) if key == "cifar100" else ())
        return load_cifar(key, root, split, download, **kwargs)
    if key == "digits":
        from .digits import load_digits_dataset

        _check_kwargs(key, kwargs, ())
        return load_digits_dataset(split)
    if key == "imagenet":  # an image folder with the SPEC's ImageNet transforms (data/imagenet.py)
        from .imagenet import load_imagenet

        _check_kwargs(key, kwargs, ("image_size", "scale", "lighting", "eval_resize"))
        root = root if root is not None else dataset_root_default()
        if root is None:
            raise FracBNNError("imagenet needs a location: pass --data PATH (a folder with train/ and val/)")
        return load_imagenet(root, split, **kwargs)
    _check_kwargs(key, kwargs, ("image_size", "mode", "transform"))
    root = root if root is not None else dataset_root_default()
    if root is None:
        raise FracBNNError("imagefolder needs a location: pass --data PATH (a folder with train/ and val/)")
    return ImageFolderDataset(root, split, **kwargs)


def _check_kwargs(name: str, kwargs: dict, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        allowed_text = ", ".join(allowed) if allowed else "none"
        raise TypeError(f"dataset {name!r} got unexpected options {extra}; allowed: {allowed_text}")


__all__ = [
    "AUGMENTATIONS", "BatchLoader", "DATASETS", "ImageFolderDataset", "InMemoryImageDataset",
    "UnknownDatasetError", "apply_crop_flip", "cache_dir", "dataset_root_default", "draw_crop_flip",
    "load_dataset", "make_loader",
]
