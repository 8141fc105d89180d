"""Quantizers: forward values, straight-through gradients, the gate's surrogate."""

import pytest
import torch

from fracbnn.quant import ActivationQuantizer, BinaryWeight, PrecisionGate


def test_binary_weight_forward_and_clipped_ste():
    w = torch.tensor([-2.0, -1.3, -0.5, 0.0, 0.7, 1.3, 1.31, 5.0], requires_grad=True)
    q = BinaryWeight()
    out = q(w)
    assert out.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1]  # zero maps to +1
    out.backward(torch.arange(1.0, 9.0))
    # gradient passes only where |w| <= 1.3
    assert w.grad.tolist() == [0, 2, 3, 4, 5, 6, 0, 0]
    assert q.precision == 1


def test_binary_weight_clip_is_configurable():
    w = torch.tensor([0.5, 0.9], requires_grad=True)
    BinaryWeight(clip=0.6)(w).sum().backward()
    assert w.grad.tolist() == [1.0, 0.0]


def test_two_bit_levels_and_half_even_ties():
    q = ActivationQuantizer(2)
    x = torch.tensor([-5.0, -1.0, -0.7, -2 / 3, -0.6, -0.1, 0.0, 0.2, 0.5, 2 / 3, 0.9, 3.0])
    third = 1 / 3
    expected = [-1, -1, -1, -1, -third, -third, third, third, third, third, 1, 1]
    # x = -2/3 maps to (x + 1) * 1.5 = 0.5 -> rounds half to even = 0 -> -1
    assert torch.allclose(q(x), torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    assert q(x).unique().numel() <= 4
    codes = q.codes(x)
    assert codes.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3]


@pytest.mark.parametrize("bits", range(1, 9))
def test_k_bit_levels_count_and_range(bits):
    q = ActivationQuantizer(bits)
    x = torch.linspace(-1.5, 1.5, 20001)
    y = q(x)
    assert y.unique().numel() == 2**bits
    assert y.min() == -1 and y.max() == 1
    # quantization error inside [-1, 1] is at most half a step
    inside = x.abs() <= 1
    step = 2.0 if bits == 1 else q.step
    assert (y[inside] - x[inside]).abs().max() <= step / 2 + 1e-6
    # codes reproduce the values
    c = q.codes(x)
    recon = c.float() * 2 - 1 if bits == 1 else c.float() * q.step - 1
    assert torch.allclose(recon, y, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_activation_ste_identity_strictly_inside(bits):
    x = torch.tensor([-1.5, -1.0, -0.99, 0.0, 0.5, 0.99, 1.0, 2.0], requires_grad=True)
    ActivationQuantizer(bits)(x).sum().backward()
    if bits == 1:  # sign STE clipped at |x| <= 1
        assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 1, 0]
    else:  # identity for -1 < x < 1 only
        assert x.grad.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]


def test_activation_bits_validated():
    with pytest.raises(ValueError, match="1..8"):
        ActivationQuantizer(9)


def test_gate_forward_is_one_sided_hard_mask():
    z = torch.tensor([[-2.0, -1.0, 0.0, 3.0]])
    theta = torch.tensor([[0.0]])
    assert PrecisionGate()(z, theta).tolist() == [[0, 0, 0, 1]]  # strictly greater


def test_gate_gradient_is_sigmoid_slope_and_sparse():
    z = torch.tensor([[-0.3, 0.1, 0.4, -2.0]], requires_grad=True)
    theta = torch.zeros(1, 1, requires_grad=True)
    g = torch.tensor([[1.0, 2.0, -1.0, 1.0]])
    PrecisionGate(sparse_backprop=True)(z, theta).backward(g)
    s = torch.sigmoid(5 * z.detach())
    slope = 5 * s * (1 - s)
    mask = (z.detach() > 0).float()
    assert torch.allclose(z.grad, g * slope * mask)
    assert z.grad[0, 0] == 0 and z.grad[0, 3] == 0  # closed gates get nothing
    assert torch.allclose(theta.grad, -(g * slope * mask).sum().view(1, 1))


def test_gate_dense_backprop_option():
    z = torch.tensor([[-0.3, 0.1]], requires_grad=True)
    theta = torch.zeros(1, 1, requires_grad=True)
    PrecisionGate(sparse_backprop=False)(z, theta).sum().backward()
    s = torch.sigmoid(5 * z.detach())
    assert torch.allclose(z.grad, 5 * s * (1 - s))
    assert z.grad[0, 0] != 0


def test_gate_theta_gradient_per_channel():
    z = torch.randn(4, 3, 5, 5, requires_grad=True)
    theta = torch.tensor([-10.0, 0.0, 10.0]).view(1, 3, 1, 1).requires_grad_()
    PrecisionGate()(z, theta).sum().backward()
    assert theta.grad.shape == theta.shape
    assert theta.grad[0, 2] == 0  # channel whose gates are all closed receives no gradient
    assert theta.grad[0, 1] != 0
