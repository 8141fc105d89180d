"""Any image dataset laid out as ``root/train/<class>/*`` and ``root/val/<class>/*``.

Images stay on disk and are decoded with Pillow (the optional ``images``
extra) when a batch needs them, in DataLoader worker processes. Class indices
follow the sorted folder names of ``train/``, so both splits agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import FracBNNError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
MODES = {"RGB": 3, "L": 1}
SPLIT_FOLDERS = {"train": ("train",), "test": ("val", "test")}


def _pil():
    try:
        from PIL import Image
    except ImportError as e:
        raise FracBNNError("image folders need Pillow: pip install 'fracbnn[images]'") from e
    return Image


def _split_folder(root: Path, split: str) -> Path:
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    wanted = " or ".join(f"{n}/" for n in SPLIT_FOLDERS[split])
    raise FracBNNError(f"image folder {root} has no {wanted} subfolder; expected train/ and val/ with one "
                       "folder of images per class")


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolderDataset:
    """File-backed image classification dataset returning ``(uint8 CHW tensor, int)``.

    ``image_size=(H, W)`` resizes every image (bilinear); with ``None`` images
    keep their size, which must then be the same for all of them (an image of
    another size raises an error naming it). ``mode`` is "RGB" or "L"
    (greyscale). ``transform``, if given, replaces resizing and conversion: it
    receives the PIL image (already converted to ``mode``) and must return a
    uint8 (C, H, W) tensor of size ``image_size``.
    """

    in_memory = False

    def __init__(self, root: str | Path, split: str = "train", image_size: tuple[int, int] | None = None,
                 mode: str = "RGB", transform: Callable | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FracBNNError(f"image folder {self.root} does not exist or is not a folder; "
                               "pass --data PATH with train/ and val/ inside")
        self.split = split
        self.name = "imagefolder"
        self.mode = mode
        self.transform = transform
        self.classes = _class_folders(_split_folder(self.root, "train"))
        if not self.classes:
            raise FracBNNError(f"{self.root / 'train'} has no class folders")
        folder = _split_folder(self.root, split)
        self.source = str(folder)
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for cls in _class_folders(folder):
            if cls not in index:
                raise FracBNNError(f"class folder {folder / cls} has no counterpart in {self.root / 'train'}")
            for p in sorted((folder / cls).iterdir()):
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
                    self.samples.append((str(p), index[cls]))
        if not self.samples:
            raise FracBNNError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
        self._resize_to = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        if image_size is None:
            first = self._decode(self.samples[0][0], None)
            image_size = tuple(first.shape[1:])
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (H, W) with positive sizes, got {image_size!r}")
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return MODES[self.mode]

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _decode(self, path: str, size: tuple[int, int] | None) -> torch.Tensor:
        Image = _pil()
        try:
            with Image.open(path) as im:
                im = im.convert(self.mode)
                if self.transform is not None:
                    return self.transform(im)
                if size is not None and (im.height, im.width) != tuple(size):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except FracBNNError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise FracBNNError(f"cannot decode image {path}: {e}; replace or delete the file") from e
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = self._decode(path, self._resize_to)
        if tuple(image.shape) != (self.in_channels, *self.image_size):
            raise FracBNNError(f"image {path} decodes to shape {tuple(image.shape)}, expected "
                               f"{(self.in_channels, *self.image_size)}; pass image_size=(H, W) to resize")
        return image, label

    def __repr__(self) -> str:
        return (f"ImageFolderDataset({self.root}/{self.split}: {len(self)} images, {self.num_classes} classes, "
                f"{self.in_channels}x{self.image_size[0]}x{self.image_size[1]})")
