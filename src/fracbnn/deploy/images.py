"""Reading PNG/JPEG files into the uint8 (C, H, W) pixels a packed model takes.

Images are not resized: a packed model's integer semantics are defined on its
exported input size, so a wrong size is an error that says so, rather than a
silent resampling the hardware would not do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FracBNNError


class ImageInputError(FracBNNError):
    """An image file is missing, unreadable or of the wrong size."""


def load_image(path: str | Path, input_size: tuple[int, int, int]) -> np.ndarray:
    """uint8 (C, H, W) pixels of ``path``; C = 3 converts to RGB, C = 1 to grey."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImageInputError("reading images needs Pillow: pip install 'fracbnn[images]'") from None
    path = Path(path)
    c, h, w = input_size
    if not path.is_file():
        raise ImageInputError(f"image {path} not found")
    try:
        with Image.open(path) as im:
            im = im.convert({3: "RGB", 1: "L"}.get(c, "RGB"))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageInputError(f"{path} is not a readable PNG/JPEG image ({e})") from None
    if c not in (1, 3):
        raise ImageInputError(f"the model takes {c}-channel images; only 1 (grey) and 3 (RGB) can be read from files")
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if arr.shape[:2] != (h, w):
        raise ImageInputError(f"{path} is {arr.shape[1]}x{arr.shape[0]} pixels; the model takes {w}x{h} images "
                              "(resize or crop it first)")
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
