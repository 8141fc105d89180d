"""Deterministic, resumable, rank-aware batch loading.

Every choice the loader makes is a pure function of (seed, epoch, batch
index), never of a stateful random generator:

* the training order is ``randperm(N)`` from a generator seeded by
  (seed, epoch), so an epoch can be replayed exactly;
* ``iter_from(k)`` starts at global batch ``k`` without touching the first
  ``k`` batches, which makes a mid-epoch resume cheap and exact;
* ``batch_size`` is the GLOBAL batch; rank ``r`` of ``world_size`` gets the
  contiguous slice ``[r*b, (r+1)*b)`` of every global batch
  (``b = batch_size // world_size``);
* augmentation parameters are drawn for the whole global batch from a
  generator seeded by (seed, epoch, batch index) and then sliced per rank,
  so one process and several processes see bit-identical images.

In-memory datasets are batched by tensor indexing in the calling process
(fast, no worker processes). File-backed datasets go through a
``torch.utils.data.DataLoader`` with worker processes, with the same order.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..errors import FracBNNError
from .augment import apply_crop_flip, draw_crop_flip, mix_seed, normalize_augment

_ORDER_STREAM = 0
_AUGMENT_STREAM = 1
_WORKER_STREAM = 2


class BatchLoader:
    """Yields ``(uint8 images (b, C, H, W), int64 labels (b,))`` for one rank.

    ``len(loader)`` is the number of global batches per epoch; every rank
    yields that many batches (a rank's slice of a final partial batch may be
    smaller than ``b``, or even empty, so collective operations stay in step).
    """

    def __init__(self, dataset, batch_size: int, *, train: bool, augment: str | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, drop_last: bool | None = None):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size % world_size:
            raise ValueError(f"the global batch size {batch_size} is not divisible by world_size {world_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if drop_last is None:
            drop_last = bool(train)
        if drop_last and not train:
            raise ValueError("evaluation must see every sample: drop_last=True is only allowed with train=True")
        if drop_last and len(dataset) < batch_size:
            raise FracBNNError(f"batch size {batch_size} is larger than the dataset ({len(dataset)} samples), "
                               "so no full batch exists; lower the batch size")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.local_batch_size = self.batch_size // world_size
        self.train = bool(train)
        self.augment = normalize_augment(augment)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_workers = int(num_workers)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    # ------------------------------------------------------------ ordering
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration replays."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):  # lets per-sample transforms derive their randomness too
            self.dataset.set_epoch(self.epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self) -> torch.Tensor:
        """Sample indices of the current epoch in visiting order (all ranks agree)."""
        n = len(self.dataset)
        if not self.train:
            return torch.arange(n)
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, _ORDER_STREAM))
        return torch.randperm(n, generator=g)

    def _plan(self, start_batch: int):
        """(batch index, global batch size, this rank's indices) for each batch from ``start_batch``."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} is outside [0, {len(self)}]")
        order = self.order()
        lo_r, hi_r = self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size
        for i in range(start_batch, len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield i, len(batch), batch[lo_r:hi_r]

    def _augment(self, images: torch.Tensor, batch_index: int, global_size: int) -> torch.Tensor:
        if self.augment == "none":
            return images
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, _AUGMENT_STREAM, batch_index))
        params = draw_crop_flip(global_size, g)
        lo = self.rank * self.local_batch_size
        return apply_crop_flip(images, params[lo:lo + images.shape[0]])

    # ------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate the current epoch from global batch ``start_batch`` on (earlier ones are not loaded)."""
        plan = list(self._plan(start_batch))  # validates start_batch now, not at the first next()
        if getattr(self.dataset, "in_memory", False):
            return self._iter_memory(plan)
        return self._iter_files(plan)

    def _iter_memory(self, plan):
        for i, global_size, local in plan:
            images, labels = self.dataset.get_batch(local)
            yield self._augment(images, i, global_size), labels

    def _iter_files(self, plan):
        if not plan:
            return
        # Worker RNG seeds come from this generator, so per-sample random transforms inside the
        # dataset (e.g. ImageNet crops) replay for a given (seed, epoch, num_workers, start batch).
        workers_seed = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, _WORKER_STREAM, self.rank))
        loader = torch.utils.data.DataLoader(
            _CatchLoadErrors(self.dataset), batch_sampler=[local.tolist() for _, _, local in plan],
            num_workers=self.num_workers, collate_fn=_Collate(self.dataset), generator=workers_seed)
        for (i, global_size, _), batch in zip(plan, loader):
            if isinstance(batch, _LoadFailure):
                raise FracBNNError(batch.message)
            images, labels = batch
            yield self._augment(images, i, global_size), labels


class _LoadFailure:
    """A user-facing load error carried out of a worker process intact (one line, no traceback)."""

    def __init__(self, message: str):
        self.message = message


class _CatchLoadErrors(torch.utils.data.Dataset):
    """Wraps a file-backed dataset so a FracBNNError becomes a _LoadFailure value, not a worker crash."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except FracBNNError as e:
            return _LoadFailure(str(e))


class _Collate:
    """Stacks (uint8 CHW, int) samples; turns a FracBNNError of any sample into a _LoadFailure."""

    def __init__(self, dataset):
        self.shape = (int(dataset.in_channels), *map(int, dataset.image_size))

    def __call__(self, samples):
        if not samples:
            return torch.empty((0, *self.shape), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
        for s in samples:
            if isinstance(s, _LoadFailure):
                return s
        images = torch.stack([s[0] for s in samples])
        labels = torch.tensor([s[1] for s in samples], dtype=torch.int64)
        return images, labels


def make_loader(dataset, batch_size: int, *, train: bool, augment: str | None = None, seed: int = 0,
                rank: int = 0, world_size: int = 1, num_workers: int = 0,
                drop_last: bool | None = None) -> BatchLoader:
    """A deterministic batch loader; see :class:`BatchLoader` and docs/data.md."""
    return BatchLoader(dataset, batch_size, train=train, augment=augment, seed=seed, rank=rank,
                       world_size=world_size, num_workers=num_workers, drop_last=drop_last)
