"""Evaluation over every test image: loss, top-1, top-5 and gate statistics.

Counts (not averages) are summed over batches and, under DDP, over
processes, so the result is exact for any batch size and any number of
processes; no partial batch is ever dropped (the loader guarantees it).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..nn import gate_statistics, reset_gate_statistics


def autocast_context(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the k highest logits, for each k (k capped at #classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(labels.view(-1, 1))
    return [hit[:, :min(k, kmax)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, *, amp: bool = False, dist=None,
             progress=None) -> dict:
    """{'loss', 'top1', 'top5', 'count'} over the whole split, plus per-layer 'gate' statistics.

    ``dist`` (a DistContext) sums the counts over processes; every process
    must call this together.
    """
    was_training = model.training
    model.eval()
    reset_gate_statistics(model)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    try:
        for images, labels in loader:
            if images.shape[0] == 0:
                if progress is not None:
                    progress.update(1)
                continue
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with autocast_context(device, amp):
                logits = model(images)
            logits = logits.float()
            c1, c5 = topk_correct(logits, labels)
            sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(), c1.double(),
                                 c5.double(), torch.tensor(float(labels.numel()), dtype=torch.float64,
                                                            device=device)])
            if progress is not None:
                progress.update(1)
    finally:
        model.train(was_training)
    if dist is not None:
        dist.all_reduce_sum(sums)
    gate = gate_statistics(model, all_reduce=dist is not None and dist.enabled)
    loss, c1, c5, n = sums.tolist()
    n_safe = max(n, 1.0)
    return {"loss": loss / n_safe, "top1": c1 / n_safe, "top5": c5 / n_safe, "count": int(n), "gate": gate}
