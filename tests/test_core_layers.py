"""Fractional convolution: the 2-bit identity, modes, gating, statistics."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from fracbnn.nn import (
    BinaryConv2d,
    FracConv2d,
    RPReLU,
    gate_regularizer,
    gate_statistics,
    reset_gate_statistics,
    set_conv_mode,
)
from fracbnn.quant import ActivationQuantizer


def _planes(x):
    """MSB and LSB planes (in {-1, +1}) of the 2-bit quantization of x."""
    c = ActivationQuantizer(2).codes(x)
    return ((c >> 1) * 2 - 1).float(), ((c & 1) * 2 - 1).float()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_two_bit_identity_with_gate_open(stride, size):
    torch.manual_seed(stride * 10 + size)
    conv = FracConv2d(5, 6, 3, stride, 1, threshold_init=-1e9)  # every gate open
    x = torch.randn(3, 5, size, size)
    out = conv(x)
    wb = torch.sign(conv.weight) + (conv.weight == 0)
    xq = ActivationQuantizer(2)(x)
    ref = F.conv2d(xq, wb, stride=stride, padding=1)
    m, l = _planes(x)
    split = (2 / 3) * F.conv2d(m, wb, stride=stride, padding=1) + (1 / 3) * F.conv2d(l, wb, stride=stride, padding=1)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out, split, atol=1e-5)
    assert torch.allclose(xq, (2 * m + l) / 3, atol=1e-6)


def test_gate_closed_gives_msb_only():
    torch.manual_seed(3)
    conv = FracConv2d(4, 4, 3, 1, 1, threshold_init=1e9)  # every gate closed
    x = torch.randn(2, 4, 6, 6)
    m, _ = _planes(x)
    wb = torch.sign(conv.weight)
    assert torch.allclose(conv(x), (2 / 3) * F.conv2d(m, wb, padding=1), atol=1e-5)


def test_gate_mixes_per_output_value():
    torch.manual_seed(4)
    conv = FracConv2d(8, 4, 3, 1, 1, threshold_init=0.0)
    x = torch.randn(2, 8, 6, 6)
    wb = torch.sign(conv.weight)
    m, l = _planes(x)
    msb = (2 / 3) * F.conv2d(m, wb, padding=1)
    full = msb + (1 / 3) * F.conv2d(l, wb, padding=1)
    expected = torch.where(msb > 0, full, msb)
    assert torch.allclose(conv(x), expected, atol=1e-5)
    stats = conv.gate_counter.totals().tolist()
    assert stats == [int((msb > 0).sum()), msb.numel()]


def test_modes_float_and_binary():
    torch.manual_seed(5)
    conv = FracConv2d(3, 4, 3, 2, 1, mode="float")
    x = torch.randn(2, 3, 8, 8)
    xq = ActivationQuantizer(2)(x)
    assert torch.allclose(conv(x), F.conv2d(xq, conv.weight, stride=2, padding=1), atol=1e-6)
    conv.mode = "binary"
    assert torch.allclose(conv(x), F.conv2d(xq, torch.sign(conv.weight), stride=2, padding=1), atol=1e-5)
    with pytest.raises(ValueError, match="float, binary, frac"):
        conv.mode = "ternary"


def test_threshold_gradient_only_where_mask_open():
    torch.manual_seed(6)
    conv = FracConv2d(8, 3, 3, 1, 1)
    with torch.no_grad():
        conv.threshold.copy_(torch.tensor([-1e6, 0.0, 1e6]))  # all open / mixed / all closed
    x = torch.randn(4, 8, 6, 6)
    conv(x).pow(2).sum().backward()
    g = conv.threshold.grad
    assert g[2] == 0  # all gates closed: no gradient
    assert g[1] != 0
    assert g[0] == 0  # sigmoid slope is 0 far from the threshold


def test_weight_and_input_gradients_flow_in_every_mode():
    for mode in ("float", "binary", "frac"):
        conv = FracConv2d(4, 4, 3, 1, 1, mode=mode)
        x = (torch.rand(2, 4, 5, 5) * 1.6 - 0.8).requires_grad_()
        conv(x).sum().backward()
        assert conv.weight.grad.abs().sum() > 0, mode
        assert x.grad.abs().sum() > 0, mode


def test_binary_conv_with_sign_input():
    torch.manual_seed(7)
    conv = BinaryConv2d(6, 5, 3, 1, 1, input_quantizer=ActivationQuantizer(1))
    x = torch.randn(2, 6, 5, 5)
    ref = F.conv2d(torch.where(x >= 0, 1.0, -1.0), torch.sign(conv.weight), padding=1)
    assert torch.allclose(conv(x), ref, atol=1e-5)


def test_rprelu_matches_definition():
    act = RPReLU(3)
    with torch.no_grad():
        act.shift_in.copy_(torch.tensor([0.5, -0.5, 0.0]))
        act.shift_out.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(2, 3, 4, 4)
    b1 = act.shift_in.view(1, 3, 1, 1)
    b2 = act.shift_out.view(1, 3, 1, 1)
    z = x + b1
    ref = torch.where(z >= 0, z, 0.25 * z) + b2
    assert torch.allclose(act(x), ref, atol=1e-6)


def test_statistics_reset_regularizer_and_mode_switch():
    model = torch.nn.Sequential(FracConv2d(4, 4, 3, 1, 1), FracConv2d(4, 4, 3, 1, 1))
    model(torch.randn(2, 4, 5, 5))
    stats = gate_statistics(model)
    assert set(stats) == {"0", "1"}
    assert all(v["total"] == 2 * 4 * 5 * 5 for v in stats.values())
    assert all(0 <= v["sparsity"] <= 1 for v in stats.values())
    reset_gate_statistics(model)
    assert all(v["total"] == 0 for v in gate_statistics(model).values())
    # regulariser: 1e-5 * 0.5 * sum (theta - g)^2 with theta = -1, g = 0.5
    assert torch.isclose(gate_regularizer(model, 0.5), torch.tensor(1e-5 * 0.5 * 8 * 1.5**2))
    assert set_conv_mode(model, "binary") == 2
    assert float(gate_regularizer(model, 0.5)) == 0.0  # no gating in binary mode
    model(torch.randn(1, 4, 5, 5))
    assert all(v["density"] == 1.0 for v in gate_statistics(model).values())


def test_counter_survives_copy_and_pickle_without_sharing():
    conv = FracConv2d(2, 2, 3, 1, 1)
    conv(torch.randn(1, 2, 4, 4))
    clone = copy.deepcopy(conv)
    assert clone.gate_counter.totals().tolist() == [0, 0]
    restored = pickle.loads(pickle.dumps(conv))
    assert restored.gate_counter.totals().tolist() == [0, 0]
    assert conv.gate_counter.totals()[1] == 32
