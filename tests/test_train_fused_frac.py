"""The fused training path of FracConv2d ("frac" mode) equals the plain autograd composition."""

import copy

import pytest
import torch

from fracbnn.nn import FracConv2d


@pytest.mark.parametrize("stride,sparse,groups", [(1, True, 1), (2, True, 1), (1, False, 1), (1, True, 2)])
def test_fused_matches_reference_values_and_gradients(stride, sparse, groups):
    torch.manual_seed(stride * 10 + sparse + groups)
    conv = FracConv2d(8, 6, 3, stride, 1, groups=groups, sparse_backprop=sparse)
    with torch.no_grad():
        conv.threshold.uniform_(-3, 3)  # some gates open, some closed
        conv.weight[0, 0, 0, 0] = 2.0  # outside the STE clip: no gradient there
    ref = copy.deepcopy(conv)
    ref.fused = False
    x = torch.randn(5, 8, 9, 9) * 1.2  # some values beyond +-1: no gradient there
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = conv(x1), ref(x2)
    assert y1.shape == y2.shape
    assert torch.equal(y1, y2)  # the fused forward is bit-identical
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(conv.threshold.grad, ref.threshold.grad, rtol=1e-5, atol=1e-4)
    assert conv.threshold.grad.abs().sum() > 0 and conv.weight.grad[0, 0, 0, 0] == 0
    # same gate decisions counted
    assert torch.equal(conv.gate_counter.totals(), ref.gate_counter.totals())
    o, t = conv.gate_counter.totals().tolist()
    assert 0 < o < t


def test_fused_is_used_and_reference_under_autocast():
    conv = FracConv2d(4, 4, 3, 1, 1)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    assert "FracConvFn" in type(conv(x).grad_fn).__name__
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast takes the composed reference
        y_amp = conv(x)
    assert "FracConvFn" not in type(y_amp.grad_fn).__name__ and y_amp.dtype == torch.bfloat16
    conv.fused = False
    assert "FracConvFn" not in type(conv(x).grad_fn).__name__


@pytest.mark.parametrize("resolution", [1, 3, 8, 16, 255])
def test_thermometer_lookup_equals_per_bit_definition(resolution):
    """The table lookup used for speed gives exactly the per-bit definition, uint8 and float input."""
    from fracbnn.quant.thermometer import bits_per_channel, thermometer_bits, thermometer_level

    p = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(2, 3, 1, 1)
    p[1] = p[1].flip(-1)
    t = bits_per_channel(resolution)
    n = thermometer_level(p.long(), resolution)
    ref = ((torch.arange(t).view(1, 1, t, 1, 1) < n.unsqueeze(2)).float() * 2 - 1).view(2, 3 * t, 16, 16)
    assert torch.equal(thermometer_bits(p, resolution), ref)
    assert torch.equal(thermometer_bits(p.float() / 255, resolution), ref)
    assert thermometer_bits(p, resolution, dtype=torch.float64).dtype == torch.float64
    assert thermometer_bits(p[:, :1], resolution).is_contiguous()  # 1 channel: no channels-last view
