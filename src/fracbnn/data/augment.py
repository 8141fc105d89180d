"""Batched data augmentation on uint8 image tensors.

The CIFAR recipe (SPEC section 3) is a random 32x32 crop of the image padded
by 4 zero pixels on each side, then a horizontal flip with probability 1/2.
Doing it for a whole batch with one ``gather`` is far cheaper than per-image
PIL transforms and keeps the pixels exact integers (no normalisation: the
models thermometer-encode the raw pixel values themselves).

The random parameters are drawn separately from the pixels so that a
distributed loader can draw them for the whole global batch and apply only
its own rank's slice (see ``loader.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

AUGMENTATIONS = ("none", "cifar")


@dataclass
class CropFlipParams:
    """Per-image crop offsets (top, left) into the padded image, and flip flags."""

    offsets: torch.Tensor  # int64 (n, 2), each in [0, 2 * pad]
    flips: torch.Tensor  # bool (n,)
    pad: int

    def __getitem__(self, sl: slice) -> "CropFlipParams":
        return CropFlipParams(self.offsets[sl], self.flips[sl], self.pad)


def draw_crop_flip(n: int, generator: torch.Generator, pad: int = 4) -> CropFlipParams:
    """Random crop offsets and flips for ``n`` images (consumes ``generator`` in a fixed order)."""
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, dtype=torch.int64)
    flips = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64).bool()
    return CropFlipParams(offsets, flips, pad)


def apply_crop_flip(images: torch.Tensor, params: CropFlipParams) -> torch.Tensor:
    """Zero-pad by ``params.pad``, crop back to (H, W) at the given offsets, mirror where flagged.

    Output pixel (y, x) of image i is padded[i, :, top + y, left + x'] with
    x' = W - 1 - x for flipped images and x otherwise. Runs in numpy on the
    CPU: single-threaded byte copies stay fast even when the training step
    keeps every core busy (torch's threaded kernels stall on tiny uint8 ops).
    """
    n, c, h, w = images.shape
    if params.offsets.shape[0] != n or params.flips.shape[0] != n:
        raise ValueError(f"{params.offsets.shape[0]} augmentation parameters for {n} images")
    if n == 0:
        return images
    pad = params.pad
    x = images.detach().cpu().numpy()
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (n, c, 2p+1, 2p+1, h, w), a view
    offsets = params.offsets.cpu().numpy()
    out = windows[np.arange(n), :, offsets[:, 0], offsets[:, 1]]  # (n, c, h, w), a copy
    flips = params.flips.cpu().numpy()
    out[flips] = out[flips][..., ::-1]
    return torch.from_numpy(out).to(images.device)


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from several non-negative integers (seed, epoch, batch, ...)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def normalize_augment(augment: str | None) -> str:
    name = "none" if augment is None else str(augment).lower()
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    return name
