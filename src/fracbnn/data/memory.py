"""Datasets held entirely in memory as one uint8 image tensor and one label tensor.

Small datasets (CIFAR, digits) fit in RAM; keeping them as two big tensors
lets the loader build a batch with a single indexing operation instead of
collating thousands of per-sample tensors.
"""

from __future__ import annotations

from typing import Sequence

import torch


class InMemoryImageDataset:
    """Images as a uint8 (N, C, H, W) tensor and integer labels as int64 (N,).

    ``__getitem__`` returns ``(uint8 CHW tensor, int)`` like a file-backed
    dataset, so code that walks samples one by one works with both kinds.
    """

    in_memory = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], name: str = "",
                 split: str = "", source: str = ""):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise ValueError(f"labels must lie in [0, {len(classes)}), got [{int(labels.min())}, {int(labels.max())}]")
        self.images = images.contiguous()
        self.labels = labels.contiguous()
        self.classes = list(classes)
        self.name = name
        self.split = split
        self.source = source  # where the data was read from, for messages and reports

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of many samples at once (one gather per tensor)."""
        # numpy fancy indexing: a plain single-threaded copy, unaffected by a busy torch thread pool
        idx = torch.as_tensor(indices, dtype=torch.int64).numpy()
        return torch.from_numpy(self.images.numpy()[idx]), torch.from_numpy(self.labels.numpy()[idx])

    def subset(self, indices) -> "InMemoryImageDataset":
        """A new dataset of the given samples (e.g. a held-out part of the training split)."""
        images, labels = self.get_batch(torch.as_tensor(indices, dtype=torch.int64))
        return InMemoryImageDataset(images, labels, self.classes, self.name, self.split, self.source)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (f"{type(self).__name__}({self.name or 'data'}/{self.split or '?'}: {len(self)} images "
                f"{c}x{h}x{w}, {self.num_classes} classes)")
