"""Binary convolution, fractional (precision-gated) convolution and RPReLU."""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_ops
from ..quant import ActivationQuantizer, BinaryWeight, PrecisionGate
from ..quant.quantizers import uniform_levels

#: Modes of :class:`FracConv2d`, one per step of the training recipe.
CONV_MODES = ("float", "binary", "frac")


class RPReLU(nn.Module):
    """y = PReLU(x + b1) + b2 per channel (b1 = b2 = 0, slope 0.25 at init)."""

    def __init__(self, channels: int, init_slope: float = 0.25):
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), float(init_slope)))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return F.prelu(x + self.shift_in.view(shape), self.slope) + self.shift_out.view(shape)


class BinaryConv2d(nn.Conv2d):
    """Convolution with sign(W) weights and an optional input quantizer.

    Used for the thermometer input layer (its input is already +-1) and for
    the plain-BNN baseline (``input_quantizer=ActivationQuantizer(1)``).
    """

    def __init__(self, *args, input_quantizer: nn.Module | None = None, weight_clip: float = 1.3, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self.weight_quantizer = BinaryWeight(weight_clip)
        self.input_quantizer = input_quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        return self._conv_forward(x, self.weight_quantizer(self.weight), self.bias)


class GateCounter:
    """Counts gated outputs on device, without a host sync per step.

    Counters live per device in a plain (non-buffer) attribute, so the
    replicas that ``nn.DataParallel`` makes share one counter; under DDP each
    process counts its own shard and :func:`gate_statistics` all-reduces.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[torch.device, torch.Tensor] = {}

    def add(self, mask: torch.Tensor) -> None:
        acc = self._accumulator(mask.device)
        acc[0].add_(mask.sum(dtype=torch.int64))
        acc[1].add_(mask.numel())

    def add_count(self, opened: torch.Tensor, total: int) -> None:
        """``opened`` of ``total`` outputs had an open gate (``opened``: int64 tensor, any device)."""
        acc = self._accumulator(opened.device)
        acc[0].add_(opened)
        acc[1].add_(total)

    def add_dense(self, n: int, device: torch.device) -> None:
        """All ``n`` outputs computed at full precision (non-gated modes)."""
        self._accumulator(device).add_(n)

    def _accumulator(self, device: torch.device) -> torch.Tensor:
        with self._lock:
            acc = self._counts.get(device)
            if acc is None:
                acc = self._counts[device] = torch.zeros(2, dtype=torch.int64, device=device)
            return acc

    def totals(self) -> torch.Tensor:
        """(open, total) summed over devices, as a CPU int64 tensor (syncs)."""
        out = torch.zeros(2, dtype=torch.int64)
        with self._lock:
            for acc in self._counts.values():
                out += acc.cpu()
        return out

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def __deepcopy__(self, memo):
        return GateCounter()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()


class _FracConvFn(torch.autograd.Function):
    """The "frac" mode of FracConv2d (2-bit input quantizer included) as one autograd node.

    Same values and gradients as :meth:`FracConv2d._frac_reference` (the
    composition of the STE pieces), but cheaper to train: the input gradients
    of both bit planes are summed BEFORE one transposed convolution, and masks
    are 0/1 floats applied by multiplication (bool tensors and ``torch.where``
    cost several times a float multiply on CPU).

    Input x (pre-quantization), w = sign(W), theta (1, C, 1, 1). The 2-bit
    code xq = Q2(x) (the ActivationQuantizer(2) formula) has bit planes
    M = sign(xq) and L (xq = (2M + L) / 3, both +-1). With A = conv(M, w) and
    B = conv(L, w) (exact integer sums), z = (2/3) A, lsb = (1/3) B, m = [z > theta]:
      y = z + m lsb
    and, with g = dL/dy, s = sigmoid(5 (z - theta)), d = g lsb 5 s (1 - s) [x m with
    sparse back-propagation], and straight-through planes (dM/dxq = dL/dxq = 1):
      dL/dA = (2/3) (g + d),   dL/dB = (1/3) g m,   dL/dtheta = -sum(d)
      dL/dx = conv_T(dL/dA + dL/dB, w) [|x| < 1]
      dL/dw = corr(M, dL/dA) + corr(L, dL/dB)
    Returns y and the number of open gates (int64 tensor, no gradient).

    On float32 NCHW CPU tensors the element-wise parts run as fused C kernels
    (:mod:`fracbnn.nn.cpu_ops`) and A and B come from ONE convolution of the
    packed planes M + s L (s a power of two > 2 |A|; all sums stay exact
    integers in float32), instead of two; the values are the same bit for bit.
    """

    @staticmethod
    def forward(ctx, x, w, theta, stride, padding, dilation, groups, sparse):
        ctx.conf = (stride, padding, dilation, groups, sparse)
        taps = w.shape[1] * w.shape[2] * w.shape[3]
        scale = cpu_ops.pack_scale(taps) if cpu_ops.usable(x, w, theta) else None
        ctx.scale = scale
        if scale is not None:  # fused CPU kernels
            packed, inside = cpu_ops.frac_quantize_pack(x, scale)
            conv_packed = F.conv2d(packed, w, None, stride, padding, dilation, groups).contiguous()
            out, opened = cpu_ops.frac_gate_forward(conv_packed, theta, scale)
            ctx.save_for_backward(packed, inside, w, theta, conv_packed)
            opened = torch.tensor(opened, dtype=torch.int64)
            ctx.mark_non_differentiable(opened)
            return out, opened
        msb, lsb_plane, inside = _two_bit_planes(x)
        out_msb = F.conv2d(msb, w, None, stride, padding, dilation, groups) * (2.0 / 3.0)
        out_lsb = F.conv2d(lsb_plane, w, None, stride, padding, dilation, groups) * (1.0 / 3.0)
        mask = (out_msb - theta).sign_().clamp_(min=0)  # 1 where out_msb > theta
        out = out_msb + mask * out_lsb
        ctx.save_for_backward(msb, lsb_plane, inside, w, theta, out_msb, out_lsb, mask)
        opened = mask.sum(dtype=torch.int64)
        ctx.mark_non_differentiable(opened)
        return out, opened

    @staticmethod
    def backward(ctx, grad, _grad_opened):
        stride, padding, dilation, groups, sparse = ctx.conf
        conv_args = (None, _pair(stride), _pair(padding), _pair(dilation), False, [0, 0], groups)
        grad_x = grad_w = grad_theta = None
        if ctx.scale is not None:
            packed, inside, w, theta, conv_packed = ctx.saved_tensors
            taps = w.shape[1] * w.shape[2] * w.shape[3]
            g_msb, g_lsb, g_in, dtheta = cpu_ops.frac_gate_backward(grad, conv_packed, theta, taps, ctx.scale,
                                                                    sparse)
            if ctx.needs_input_grad[0]:  # only the shape of `packed` is used here
                grad_in = torch.ops.aten.convolution_backward(g_in, packed, w, *conv_args, [True, False, False])[0]
                grad_x = cpu_ops.mask_multiply_(grad_in.contiguous(), inside)
            if ctx.needs_input_grad[1]:
                msb, lsb_plane = cpu_ops.unpack_planes(packed, ctx.scale)
                grad_w = torch.ops.aten.convolution_backward(g_msb, msb, w, *conv_args, [False, True, False])[1]
                grad_w = grad_w + torch.ops.aten.convolution_backward(g_lsb, lsb_plane, w, *conv_args,
                                                                      [False, True, False])[1]
            if ctx.needs_input_grad[2]:
                grad_theta = -dtheta.view_as(theta)
            return grad_x, grad_w, grad_theta, None, None, None, None, None
        msb, lsb_plane, inside, w, theta, out_msb, out_lsb, mask = ctx.saved_tensors
        s = torch.sigmoid(5.0 * (out_msb - theta))
        d = grad * out_lsb * (5.0 * s * (1.0 - s))
        if sparse:
            d = d * mask
        g_msb = (grad + d) * (2.0 / 3.0)
        g_lsb = grad * mask * (1.0 / 3.0)
        if ctx.needs_input_grad[0]:
            grad_in = torch.ops.aten.convolution_backward(g_msb + g_lsb, msb, w, *conv_args, [True, False, False])[0]
            grad_x = grad_in * inside
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(g_msb, msb, w, *conv_args, [False, True, False])[1]
            grad_w = grad_w + torch.ops.aten.convolution_backward(g_lsb, lsb_plane, w, *conv_args,
                                                                  [False, True, False])[1]
        if ctx.needs_input_grad[2]:
            grad_theta = -d.sum(dim=(0, 2, 3)).view_as(theta)
        return grad_x, grad_w, grad_theta, None, None, None, None, None


def _two_bit_planes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, L, inside): the bit planes of Q2(x) = (2M + L) / 3 as +-1 floats, and the 0/1 STE window."""
    xq = uniform_levels(x, 2)
    inside = (1.0 - x.abs()).sign_().clamp_(min=0)  # 1 where -1 < x < 1, else 0
    msb = torch.sign(xq)  # the levels are never 0, so this is +-1
    lsb_plane = torch.sign(3.0 * xq - 2.0 * msb)  # +-1 (up to float error, never near 0)
    return msb, lsb_plane, inside


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


class FracConv2d(nn.Conv2d):
    """Fractional-activation convolution (``PGBinaryConv2d`` in the paper).

    The input is quantized to 2 bits, x = (2M + L) / 3 with M, L in {-1, +1}.
    ``mode`` selects the step of the training recipe:

    * ``"float"``:  conv(Q2(x), W)          (step 1, float weights)
    * ``"binary"``: conv(Q2(x), sign W)     (step 2)
    * ``"frac"``:   out_msb = (2/3) conv(M, sign W) for every output, plus the
      LSB part (1/3) conv(L, sign W) only where out_msb > theta (step 3).
      Both parts are exact integer sums times 2/3 and 1/3, so the result is
      that of the integer engines, not a float rounding of conv(Q2(x), W).

    theta is one learnable threshold per output channel (init -1.0).
    Training uses the fused :class:`_FracConvFn` (set ``fused = False`` on a
    layer or the class for the plain autograd composition; same maths).
    """

    fused = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        *,
        mode: str = "frac",
        threshold_init: float = -1.0,
        sparse_backprop: bool = True,
        weight_clip: float = 1.3,
        **kwargs,
    ):
        kwargs.setdefault("bias", False)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, **kwargs)
        self.input_quantizer = ActivationQuantizer(2)
        self.weight_quantizer = BinaryWeight(weight_clip)
        self.gate = PrecisionGate(sparse_backprop)
        self.threshold = nn.Parameter(torch.full((out_channels,), float(threshold_init)))
        self.mode = mode
        self.gate_counter = GateCounter()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in CONV_MODES:
            raise ValueError(f"unknown FracConv2d mode {value!r}; choose one of {', '.join(CONV_MODES)}")
        self._mode = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._mode == "frac" and self._can_fuse(x):
            out, opened = _FracConvFn.apply(x, self.weight_quantizer(self.weight),
                                            self.threshold.view(1, -1, 1, 1).to(x.dtype), self.stride,
                                            self.padding, self.dilation, self.groups, self.gate.sparse_backprop)
            self.gate_counter.add_count(opened, out.numel())
            return out
        xq = self.input_quantizer(x)
        if self._mode == "float":
            out = self._conv_forward(xq, self.weight, self.bias)
            self.gate_counter.add_dense(out.numel(), out.device)
            return out
        w = self.weight_quantizer(self.weight)
        if self._mode == "binary":
            out_full = self._conv_forward(xq, w, self.bias)
            self.gate_counter.add_dense(out_full.numel(), out_full.device)
            return out_full
        return self._frac_reference(xq, w)

    def _can_fuse(self, x: torch.Tensor) -> bool:
        return (self.fused and self.bias is None and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and x.is_floating_point()
                and getattr(self.input_quantizer, "precision", None) == 2
                and not torch.is_autocast_enabled(x.device.type))

    def _frac_reference(self, xq: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The gated convolution composed from autograd ops (also the path under autocast).

        xq = (2M + L) / 3 with bit planes M, L in {-1, +1}; both planes pass
        the gradient straight through (d plane / d xq = 1, all levels lie inside
        the STE clip), so d out / d xq is that of conv(xq) where the gate is open.
        """
        ste = xq - xq.detach()
        msb = torch.where(xq >= 0, 1.0, -1.0).to(xq.dtype)
        lsb_plane = torch.sign(3.0 * xq.detach() - 2.0 * msb)
        out_msb = self._conv_forward(msb + ste, w, None) * (2.0 / 3.0)
        out_lsb = self._conv_forward(lsb_plane + ste, w, None) * (1.0 / 3.0)
        mask = self.gate(out_msb, self.threshold.view(1, -1, 1, 1).to(out_msb.dtype))
        self.gate_counter.add(mask.detach() > 0)
        out = out_msb + mask * out_lsb
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self._mode}"


def _frac_convs(model: nn.Module):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, FracConv2d)]


def set_conv_mode(model: nn.Module, mode: str) -> int:
    """Switch every :class:`FracConv2d` in ``model`` to ``mode``; returns how many."""
    convs = _frac_convs(model)
    for _, m in convs:
        m.mode = mode
    return len(convs)


def reset_gate_statistics(model: nn.Module) -> None:
    for _, m in _frac_convs(model):
        m.gate_counter.reset()


def gate_statistics(model: nn.Module, all_reduce: bool = True) -> dict[str, dict[str, float]]:
    """Per-layer {'open', 'total', 'density', 'sparsity'} since the last reset.

    'density' is the share of outputs whose LSB pass ran; 'sparsity' is
    1 - density. Under an initialised ``torch.distributed`` group the counts
    are summed over processes (every process must call this together).
    """
    convs = _frac_convs(model)
    if not convs:
        return {}
    counts = torch.stack([m.gate_counter.totals() for _, m in convs])
    if all_reduce and torch.distributed.is_available() and torch.distributed.is_initialized():
        backend = torch.distributed.get_backend()
        dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        counts = counts.to(dev)
        torch.distributed.all_reduce(counts)
        counts = counts.cpu()
    stats = {}
    for (name, _), (open_n, total) in zip(convs, counts.tolist()):
        density = open_n / total if total else float("nan")
        stats[name] = {"open": open_n, "total": total, "density": density, "sparsity": 1.0 - density}
    return stats


def sparsity_by_layer(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    """{layer: LSB sparsity} from :func:`gate_statistics`, for the layers that counted any output."""
    return {name: v["sparsity"] for name, v in stats.items() if v["total"]}


def gate_regularizer(model: nn.Module, target: float, weight: float = 1e-5) -> torch.Tensor:
    """weight * 0.5 * sum over layers of ||theta - g||^2, pulling thresholds to g.

    A higher target g closes more gates (fewer LSB computations).
    """
    thetas = [m.threshold for _, m in _frac_convs(model) if m.mode == "frac"]
    if not thetas:
        return torch.zeros(())
    return weight * 0.5 * sum(((t - target) ** 2).sum() for t in thetas)
