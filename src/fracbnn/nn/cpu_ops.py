"""Python side of the optional fused CPU training kernels (``fracbnn.nn._trainops``).

Why: on a CPU, a FracBNN training step spent about as long in chains of
small PyTorch element-wise ops (quantize, gate, masks, their gradients) and
in the 96-channel thermometer input convolution as in all the block
convolutions, and the gated conv ran two forward convolutions. The C kernels
do each chain in one pass, pack the two bit planes so that one convolution
gives both exact plane sums (:func:`pack_scale`), and compute the input layer
as a table lookup (see ``_kernels/trainops.c``). The values are those of the
PyTorch composition bit for bit; tests compare the two on random inputs
(tests/test_train_cpu_kernels.py).

The kernels are used only for float32, C-contiguous (NCHW) CPU tensors and
when the extension was built; everything else takes the plain PyTorch path.
``FRACBNN_NO_TRAIN_KERNELS=1`` in the environment, or :func:`set_enabled`,
turns them off (e.g. to compare speed or results).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

try:  # optional at install time (see setup.py)
    from . import _trainops as _ops
except ImportError:  # pragma: no cover - depends on the build
    _ops = None

#: Must equal ABI_VERSION in _kernels/trainops.c (a stale build is ignored).
ABI_VERSION = 4

_enabled = os.environ.get("FRACBNN_NO_TRAIN_KERNELS", "") in ("", "0")
if _ops is not None and _ops.info()["abi"] != ABI_VERSION:  # pragma: no cover - stale build
    _ops = None

#: 2/3 as float32: the MSB weight of a 2-bit code, as PyTorch applies it to float32 tensors.
_TWO_THIRDS = float(np.float32(2.0 / 3.0))


def built() -> bool:
    """True if the compiled kernels are importable."""
    return _ops is not None


def enabled() -> bool:
    return _ops is not None and _enabled


def set_enabled(flag: bool) -> bool:
    """Turn the kernels on or off for this process; returns the previous setting."""
    global _enabled
    old, _enabled = _enabled, bool(flag)
    return old


@contextlib.contextmanager
def disabled():
    """Run a block on the plain PyTorch path (e.g. so that every submodule's forward hook fires)."""
    old = set_enabled(False)
    try:
        yield
    finally:
        set_enabled(old)


def training_note(device: torch.device, channels_last: bool) -> str | None:
    """One line for the training log when a CPU run will NOT use the kernels, saying why; else None."""
    if device.type != "cpu":
        return None
    if _ops is None:
        return ("fused CPU training kernels not built (no C compiler at install, or a stale build): training "
                "uses the slower PyTorch path; reinstall fracbnn with gcc/clang available to build them")
    if not _enabled:
        return "fused CPU training kernels switched off (FRACBNN_NO_TRAIN_KERNELS): slower PyTorch path"
    if channels_last:
        return ("channels_last on CPU bypasses the fused training kernels (they need NCHW): set "
                "runtime.channels_last to auto or false for faster CPU training")
    return None


def usable(*tensors: torch.Tensor) -> bool:
    """True if the kernels can run on these tensors (CPU, float32, NCHW-contiguous)."""
    return enabled() and all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors
    )


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().reshape(-1)


# ---------------------------------------------------------------- gated conv


def pack_scale(taps: int) -> float | None:
    """Scale s of the packed planes P = M + s L for a conv with ``taps`` inputs per output.

    conv(P, w) = conv(M, w) + s conv(L, w) with |conv(M, w)| <= taps; s is the
    smallest power of two above 2 taps, so both sums can be read back from one
    convolution. Every partial sum is an integer, exact in float32 while
    (s + 1) taps < 2^24, i.e. up to 2047 taps (3x3 over at most 227
    channels), and only while oneDNN computes float32 convolutions in float32
    (not in bf16/tf32). None otherwise: the whole layer then takes the
    PyTorch path (two convolutions, same values).
    """
    if _reduced_precision_fp32_conv():
        return None
    s = 4.0
    while s <= 2 * taps:
        s *= 2.0
    return s if (s + 1.0) * taps < 2.0**24 else None


def _reduced_precision_fp32_conv() -> bool:
    """True if PyTorch is set to run float32 CPU convolutions in a lower precision (bf16/tf32)."""
    conv = getattr(torch.backends.mkldnn, "conv", None)
    setting = getattr(conv, "fp32_precision", None) or getattr(torch.backends.mkldnn, "fp32_precision", None)
    return setting not in (None, "none", "ieee")


def frac_quantize_pack(x: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, inside): the 2-bit code's planes packed as M + scale L, and the STE window (uint8)."""
    packed = torch.empty_like(x)
    inside = torch.empty(x.shape, dtype=torch.uint8)
    _ops.frac_quantize_pack(_np(x), _np(packed), _np(inside), float(scale), x.numel(), _threads())
    return packed, inside


def unpack_planes(packed: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """P = M + scale L -> (M, L), both +-1."""
    msb, lsb = torch.empty_like(packed), torch.empty_like(packed)
    _ops.unpack_planes(_np(packed), _np(msb), _np(lsb), float(scale), packed.numel(), _threads())
    return msb, lsb


def frac_gate_forward(conv_packed: torch.Tensor, theta: torch.Tensor, scale: float) -> tuple[torch.Tensor, int]:
    """out = z + [z > theta] lsb, z = (2/3) conv(M), lsb = (1/3) conv(L), from conv(P) = conv(M) + s conv(L).

    Returns (out, number of open gates).
    """
    n, c = conv_packed.shape[:2]
    out = torch.empty_like(conv_packed)
    opened = _ops.frac_gate_forward(_np(conv_packed), _np(out), _np(theta.detach().reshape(-1).contiguous()),
                                    float(scale), n, c, conv_packed[0, 0].numel(), _threads())
    return out, opened


def gate_slope_table(theta: torch.Tensor, k: int) -> torch.Tensor:
    """(C, 2k+1) table of 5 s (1 - s), s = sigmoid(5 (z - theta_c)) for z = (2/3) j, j = -k..k.

    The MSB convolution sums +-1 products, so its value is an integer j with
    |j| <= k (k = taps per output); the kernel reads the slope from here
    instead of evaluating exp per element.
    """
    z = torch.arange(-k, k + 1, dtype=torch.float32) * _TWO_THIRDS
    s = torch.sigmoid(5.0 * (z.view(1, -1) - theta.detach().reshape(-1, 1)))
    return (5.0 * s * (1.0 - s)).contiguous()


def frac_gate_backward(grad, conv_packed, theta, k: int, scale: float, sparse: bool):
    """(grad_msb, grad_lsb, grad_in, dtheta): gradients w.r.t. conv(M), conv(L), their sum, -dL/dtheta."""
    n, c = conv_packed.shape[:2]
    grad = grad.contiguous()
    g_msb, g_lsb, g_in = torch.empty_like(grad), torch.empty_like(grad), torch.empty_like(grad)
    dtheta = torch.empty((n, c), dtype=torch.float32)
    theta_flat = theta.detach().reshape(-1).contiguous()
    _ops.frac_gate_backward(_np(grad), _np(conv_packed), _np(theta_flat), _np(gate_slope_table(theta, k)),
                            _np(g_msb), _np(g_lsb), _np(g_in), _np(dtheta), float(scale), n, c,
                            conv_packed[0, 0].numel(), k, int(bool(sparse)), _threads())
    return g_msb, g_lsb, g_in, dtheta.sum(dim=0)


def mask_multiply_(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """grad *= mask (uint8 0/1), in place; returns grad."""
    _ops.mask_multiply(_np(grad), _np(mask), grad.numel(), _threads())
    return grad


# ------------------------------------------------------ thermometer input conv


def _geometry(pixels: torch.Tensor, weight_shape, stride: int, padding: int, levels: int):
    n, c, h, w = pixels.shape
    o, k = weight_shape[0], weight_shape[-1]
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    return (n, c, h, w, o, k, stride, padding, ho, wo, levels)


def thermo_conv_forward(pixels: torch.Tensor, level_of: torch.Tensor, table: torch.Tensor, weight_shape,
                        stride: int, padding: int) -> torch.Tensor:
    """conv(thermometer(pixels), w) from the (C, k, k, L, O) table of per-level tap sums.

    ``pixels``: uint8 NCHW; ``level_of``: uint8 (256,), the table row of each pixel value.
    """
    geom = _geometry(pixels, weight_shape, stride, padding, table.shape[3])
    n, o, ho, wo = geom[0], geom[4], geom[8], geom[9]
    out = torch.empty((n, o, ho, wo), dtype=torch.float32)
    _ops.thermo_conv_forward(_np(pixels), _np(level_of), _np(table), _np(out), geom, _threads())
    return out


def thermo_conv_table_grad(pixels: torch.Tensor, level_of: torch.Tensor, grad: torch.Tensor, table_shape,
                           weight_shape, stride: int, padding: int) -> torch.Tensor:
    """Gradient of the (C, k, k, L, O) table given the output gradient."""
    geom = _geometry(pixels, weight_shape, stride, padding, table_shape[3])
    dtable = torch.empty(table_shape, dtype=torch.float32)
    _ops.thermo_conv_table_grad(_np(pixels), _np(level_of), _np(grad.contiguous()), _np(dtable), geom, _threads())
    return dtable
