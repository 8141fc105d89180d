"""Data-parallel training through ``torchrun`` (DDP), on CPU (gloo) or CUDA (nccl).

One process per device. The loader gives rank r slice r of every global batch,
so for the result to match a single process with the same global batch,
BatchNorm must normalise with statistics of the GLOBAL batch. On CUDA that is
``torch.nn.SyncBatchNorm``; it does not run on CPU, so :class:`GlobalBatchNorm2d`
does the same with differentiable all-reduces of the per-channel sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over processes (in place, returns ``t``); a no-op for one process."""
        if self.enabled:
            backend = dist.get_backend()
            if backend == "nccl" and t.device.type != "cuda":
                moved = t.to(self.device)
                dist.all_reduce(moved)
                t.copy_(moved.to(t.device))
            else:
                dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any one."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local CUDA device when available, else CPU; a CUDA device that is not there is an error."""
    from ..errors import FracBNNError

    spec = str(spec or "auto")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device("cuda", local_rank) if spec == "cuda" else torch.device(spec)
    except RuntimeError:
        raise FracBNNError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FracBNNError(f"device {spec} requested but CUDA is not available to this torch "
                               f"({torch.__version__}); use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FracBNNError(f"device {device} requested but only {torch.cuda.device_count()} CUDA device(s) "
                               "are visible; use cuda:0 .. cuda:N-1 or auto")
    return device


def setup_distributed(device_spec: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_spec, local_rank)
    if world <= 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistContext(0, 1, 0, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        here = True
    return DistContext(rank, world, local_rank, device, here)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the backward also sums (every process's loss depends on every input)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all processes.

    The per-channel sum (with the count) and then the centred sum of squares
    are all-reduced with a differentiable sum, so forward values, running statistics and gradients
    equal those of one process seeing the whole batch (up to float rounding).
    Outside training, or without a process group, it is a plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        # Two passes (mean, then centred squares), like BatchNorm2d itself: no cancellation error.
        local_n = torch.tensor([x.numel() // c], dtype=xf.dtype, device=x.device)
        first = _AllReduceSum.apply(torch.cat([xf.sum(dim=(0, 2, 3)), local_n]))
        n = first[c]
        mean = first[:c] / n
        centred = xf - mean.view(1, -1, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach().to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def convert_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d use global-batch statistics (SyncBatchNorm on CUDA).

    Parameters and buffers are shared with the original modules, so state
    dict keys and values are unchanged and checkpoints stay interchangeable.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats, device=child.weight.device if child.affine else None)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(model, name, new)
        else:
            convert_batchnorm(child, device)
    return model
