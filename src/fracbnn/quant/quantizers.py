"""Weight, activation and gate quantizers with straight-through gradients.

Rounding choice: the k-bit activation quantizer rounds half to even
(``torch.round``), like the reference implementation, so checkpoints imported
from it give the same activations. Ties only happen for inputs exactly on a
midpoint between two levels (e.g. x = -2/3 for k = 2, which goes to -1).
"""

from __future__ import annotations

import torch
from torch import nn


class Quantizer(nn.Module):
    """Base class: a quantizer knows how many bits each output value needs."""

    precision: int = 32

    def extra_repr(self) -> str:
        return f"precision={self.precision}"


class _SignClippedSTE(torch.autograd.Function):
    """sign() forward (0 -> +1); gradient 1 where |x| <= clip, else 0."""

    @staticmethod
    def forward(ctx, x, clip: float):
        ctx.save_for_backward(x.abs() <= clip)
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return torch.where(x >= 0, one, -one)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None


class BinaryWeight(Quantizer):
    """sign(W) with no scale (the following BatchNorm absorbs it).

    Backward is the straight-through estimator clipped at ``|W| <= clip``:
    latent weights that drift far outside stop receiving gradient.
    """

    precision = 1

    def __init__(self, clip: float = 1.3):
        super().__init__()
        self.clip = float(clip)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _SignClippedSTE.apply(w, self.clip)

    def extra_repr(self) -> str:
        return f"precision=1, clip={self.clip}"


def uniform_levels(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The k-bit quantizer's values (no gradient): 2^k levels evenly spaced on [-1, 1], ties to even."""
    step = 2.0 / (2**bits - 1)
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) / step) * step - 1.0


class _UniformQuantSTE(torch.autograd.Function):
    """k-bit uniform levels on [-1, 1]; identity gradient on -1 < x < 1."""

    @staticmethod
    def forward(ctx, x, bits: int):
        ctx.save_for_backward((x > -1) & (x < 1))
        return uniform_levels(x, bits)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None


class ActivationQuantizer(Quantizer):
    """k-bit activation quantizer (``QuantSign`` in the paper), k = 1..8.

    k = 1 is sign (0 -> +1) with the straight-through estimator clipped at 1;
    k >= 2 clamps to [-1, 1] and rounds to 2^k evenly spaced levels.
    """

    def __init__(self, bits: int = 2):
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"activation bits must be in 1..8, got {bits}")
        self.precision = int(bits)

    @property
    def bits(self) -> int:
        return self.precision

    @property
    def step(self) -> float:
        """Distance between adjacent levels."""
        return 2.0 / (2**self.precision - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == 1:
            return _SignClippedSTE.apply(x, 1.0)
        return _UniformQuantSTE.apply(x, self.precision)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes 0 .. 2^k - 1 of the quantized values (no gradient).

        For k = 2 the code c = 2m + l gives the MSB plane m and LSB plane l.
        """
        if self.precision == 1:
            return (x >= 0).to(torch.int64)
        return torch.round((x.clamp(-1.0, 1.0) + 1.0) / self.step).to(torch.int64)


class _GateFn(torch.autograd.Function):
    """Hard one-sided mask forward; sigmoid(5 (z - theta)) surrogate backward."""

    @staticmethod
    def forward(ctx, z, theta, sparse: bool):
        mask = z > theta
        ctx.save_for_backward(z, theta, mask)
        ctx.sparse = sparse
        return mask.to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, theta, mask = ctx.saved_tensors
        s = torch.sigmoid(5.0 * (z - theta))
        d = grad * 5.0 * s * (1.0 - s)
        if ctx.sparse:
            d = d * mask
        grad_theta = None
        if ctx.needs_input_grad[1]:
            dims = [i for i, n in enumerate(theta.shape) if n == 1 and z.shape[i] != 1]
            grad_theta = -d.sum(dim=dims, keepdim=True) if dims else -d
        return d, grad_theta, None


class PrecisionGate(Quantizer):
    """Decides where the LSB pass runs: mask = z > theta, per output value.

    The step function has no useful gradient, so backward uses the slope of
    sigmoid(5 (z - theta)); with ``sparse_backprop`` (the default) that
    gradient only flows where the mask is 1, i.e. where the LSB result was
    actually used. ``precision`` is 1: the mask is one bit per output.
    """

    precision = 1

    def __init__(self, sparse_backprop: bool = True):
        super().__init__()
        self.sparse_backprop = bool(sparse_backprop)

    def forward(self, z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``theta`` must broadcast against ``z`` (e.g. shape (1, C, 1, 1))."""
        return _GateFn.apply(z, theta, self.sparse_backprop)

    def extra_repr(self) -> str:
        return f"sparse_backprop={self.sparse_backprop}"
