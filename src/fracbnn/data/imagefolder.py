"""Any image dataset laid out as ``root/train/<class>/*`` and ``root/val/<class>/*``.

Images stay on disk and are decoded with Pillow (the optional ``images``
extra) when a batch needs them, in DataLoader worker processes. Class indices
follow the sorted folder names of ``train/``, so both splits agree.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
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


def _decode_problem(Image, path: str):
    """(width, height) of a decodable image file, else a few words saying what is wrong with it."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty file"
        with Image.open(path) as im:
            im.load()
            return im.size
    except Image.DecompressionBombError:
        return "too many pixels (Pillow's decompression-bomb limit)"
    except (OSError, SyntaxError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        return f"cannot decode: {first[:60]}"


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
        empty = []
        for cls in _class_folders(folder):
            if cls not in index:
                raise FracBNNError(f"class folder {folder / cls} has no counterpart in {self.root / 'train'}")
            found = [p for p in sorted((folder / cls).iterdir())
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
            if not found:
                empty.append(cls)
            self.samples.extend((str(p), index[cls]) for p in found)
        if not self.samples:
            raise FracBNNError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
        if empty:  # a class the model must predict but never sees (train) or is never tested on (val)
            shown = ", ".join(str(folder / c) for c in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5
                                                                      else "")
            raise FracBNNError(f"{len(empty)} class folder(s) hold no images: {shown}; add images "
                               f"({', '.join(IMAGE_EXTENSIONS[:3])}, ...) or remove the folder from train/ and val/")
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

    def check_files(self, progress: bool = False, indices=None) -> None:
        """Decode every image (or those at ``indices``) now, so a bad file is named before training starts.

        Finds unreadable, empty and truncated files and, without ``image_size``,
        images whose size differs from the rest. Only decoding is done (no
        resize or conversion). Raises one FracBNNError naming the bad files.
        """
        from tqdm import tqdm

        Image = _pil()
        paths = [self.samples[i][0] for i in (range(len(self.samples)) if indices is None else indices)]
        bad: list[str] = []
        sizes: dict[tuple[int, int], list[str]] = {}
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool, tqdm(total=len(paths), desc=f"checking {self.split} images",
                                                        unit="img", disable=not progress, leave=False,
                                                        mininterval=0.5) as bar:
            # Pillow releases the GIL while decoding, so threads use every core
            for path, problem in zip(paths, pool.map(partial(_decode_problem, Image), paths, chunksize=64)):
                bar.update(1)
                if isinstance(problem, str):
                    bad.append(f"{path} ({problem})")
                elif self.transform is None and self._resize_to is None:
                    sizes.setdefault(problem, []).append(path)
        if bad:
            raise FracBNNError(f"{len(bad)} of {len(paths)} {self.split} images cannot be used: "
                               f"{'; '.join(bad[:5])}{f'; and {len(bad) - 5} more' if len(bad) > 5 else ''}; "
                               "replace or delete them")
        if len(sizes) > 1:
            common = max(sizes, key=lambda k: len(sizes[k]))
            odd = [f"{p} ({w}x{h})" for (w, h), ps in sizes.items() if (w, h) != common for p in ps]
            raise FracBNNError(f"{len(odd)} {self.split} images differ in size from the other {len(sizes[common])} "
                               f"({common[0]}x{common[1]}): {'; '.join(odd[:5])}"
                               f"{f'; and {len(odd) - 5} more' if len(odd) > 5 else ''}; set data.image_size "
                               "(fracbnn data --image-size H W) to resize them all")

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
