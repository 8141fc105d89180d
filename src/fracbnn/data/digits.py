"""scikit-learn's bundled 8x8 handwritten digits: a tiny dataset that needs no download.

Useful for smoke tests and the quick start. The 1797 images are split once,
stratified by class with a fixed seed, into 1437 training and 360 test
images, so every run and every process sees the same split.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import FracBNNError
from .memory import InMemoryImageDataset

TEST_SIZE = 360
SPLIT_SEED = 0


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map digits intensities 0..16 onto 0..255 as round(v * 255 / 16)."""
    return np.rint(np.asarray(values, dtype=np.float64) * 255.0 / 16.0).astype(np.uint8)


def load_digits_dataset(split: str = "train") -> InMemoryImageDataset:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise FracBNNError("the digits dataset needs scikit-learn: pip install 'fracbnn[digits]'") from e
    bunch = load_digits()
    data, target = bunch.data, bunch.target
    index = np.arange(len(target))
    train_idx, test_idx = train_test_split(index, test_size=TEST_SIZE, stratify=target, random_state=SPLIT_SEED)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    images = torch.from_numpy(digits_to_uint8(data[chosen]).reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(target[chosen].astype(np.int64))
    return InMemoryImageDataset(images, labels, [str(d) for d in range(10)], name="digits", split=split,
                                source="scikit-learn bundled digits")
