"""Reading PNG/JPEG files into the uint8 (C, H, W) pixels a packed model takes.

The preprocessing recorded in the model at export (deploy/preprocess.py) is
applied: resizing and cropping only where training did the same. A model
trained on images used at their own size (CIFAR) takes only images of that
size; a wrong size is an error that says so, rather than a silent resampling
the model never saw.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import FracBNNError


class ImageInputError(FracBNNError):
    """An image file is missing, unreadable or of the wrong size."""


def load_image(path: str | Path, input_size: tuple[int, int, int], transform: Callable | None = None) -> np.ndarray:
    """uint8 (C, H, W) pixels of ``path``; C = 3 converts to RGB, C = 1 to grey.

    ``transform`` (PIL image -> uint8 (C, H, W) array, e.g. from
    :func:`fracbnn.deploy.preprocess.image_transform`) replaces the plain conversion.
    """
    try:
        from PIL import Image
    except ImportError:
        raise ImageInputError("reading images needs Pillow: pip install 'fracbnn[images]'") from None
    path = Path(path)
    c, h, w = input_size
    if not path.is_file():
        raise ImageInputError(f"image {path} not found")
    if c not in (1, 3):
        raise ImageInputError(f"the model takes {c}-channel images; only 1 (grey) and 3 (RGB) can be read from files")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # > 89 Mpixels: refuse, do not decode
            with Image.open(path) as im:
                if transform is not None:
                    return transform(im)
                arr = np.asarray(im.convert({3: "RGB", 1: "L"}[c]), dtype=np.uint8)
    except FracBNNError as e:
        raise ImageInputError(f"{path} {e}") from None
    except MemoryError:
        raise ImageInputError(f"{path} is too large to decode in memory; shrink it first") from None
    except Exception as e:  # Pillow raises many types for bad files (incl. DecompressionBombError)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ImageInputError(f"{path} is not a readable PNG/JPEG image ({type(e).__name__}: {first}); "
                              "replace the file") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if arr.shape[:2] != (h, w):
        raise ImageInputError(f"{path} is {arr.shape[1]}x{arr.shape[0]} pixels; the model takes {w}x{h} images "
                              "(resize or crop it first)")
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
