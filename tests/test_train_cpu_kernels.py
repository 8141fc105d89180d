"""The fused C training kernels (fracbnn.nn.cpu_ops) compute what the PyTorch ops compute."""

import copy

import numpy as np
import pytest
import torch

from fracbnn.models import create_model
from fracbnn.nn import FracConv2d, ThermometerConv2d, cpu_ops
from fracbnn.nn.input_layer import thermometer_conv_reference
from fracbnn.quant import ActivationQuantizer, ThermometerEncoder

from conftest import needs_c

pytestmark = needs_c(cpu_ops.built(), "the C training kernels were not built (no compiler)")


@pytest.fixture
def kernels_on():
    old = cpu_ops.set_enabled(True)
    yield
    cpu_ops.set_enabled(old)


def _run(module, x, kernels: bool, grad_seed: int = 3):
    old = cpu_ops.set_enabled(kernels)
    try:
        module.zero_grad()
        xx = x.clone().requires_grad_(x.is_floating_point())
        y = module(xx)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed))
        (y * g).sum().backward()
    finally:
        cpu_ops.set_enabled(old)
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return y.detach(), (xx.grad if xx.requires_grad else None), grads


def test_packed_planes_equal_the_quantizer_levels_near_every_rounding_boundary(kernels_on):
    # all floats within 2000 ulps of each level boundary and of the clip points, plus a dense sweep
    centres = np.array([-2 / 3, 0.0, 2 / 3, -1.0, 1.0, -1 / 3, 1 / 3], dtype=np.float32).view(np.int32)
    near = (centres[:, None] + np.arange(-2000, 2000, dtype=np.int32)[None, :]).reshape(-1).view(np.float32)
    near = near[np.isfinite(near)]  # bit patterns below 0.0f are NaNs
    x = torch.from_numpy(np.concatenate([near, -near, np.linspace(-1.5, 1.5, 200_001, dtype=np.float32),
                                         np.array([np.inf, -np.inf, 0.0, -0.0], dtype=np.float32)]))
    scale = 512.0
    packed, inside = cpu_ops.frac_quantize_pack(x.contiguous(), scale)
    msb, lsb = cpu_ops.unpack_planes(packed, scale)
    ref = ActivationQuantizer(2)(x)  # levels -1, -1/3, 1/3, 1
    assert torch.equal(msb, torch.where(ref >= 0, 1.0, -1.0))
    # levels -1, -1/3, 1/3, 1 have planes (M, L) = (-1, -1), (-1, 1), (1, -1), (1, 1)
    expected_lsb = torch.where((ref == 1.0) | ((ref < 0) & (ref > -1.0)), 1.0, -1.0)
    assert torch.equal(lsb, expected_lsb)
    torch.testing.assert_close((2 * msb + lsb) / 3, ref)
    assert torch.equal(packed, msb + scale * lsb)
    assert torch.equal(inside.bool(), (x > -1) & (x < 1))
    nan_p, nan_in = cpu_ops.frac_quantize_pack(torch.tensor([float("nan")]), scale)
    assert nan_p.isnan().all() and nan_in.item() == 0


@pytest.mark.parametrize("cin,k", [(16, 3), (64, 3), (200, 3), (1024, 1)])
def test_one_packed_convolution_gives_both_plane_sums_exactly(kernels_on, cin, k):
    taps = cin * k * k
    scale = cpu_ops.pack_scale(taps)
    assert scale is not None and scale > 2 * taps and (scale + 1) * taps < 2**24
    g = torch.Generator().manual_seed(cin)
    msb = torch.randint(0, 2, (3, cin, 6, 6), generator=g).float() * 2 - 1
    lsb = torch.randint(0, 2, (3, cin, 6, 6), generator=g).float() * 2 - 1
    msb[0], lsb[0] = 1.0, 1.0  # the extreme sums +-(scale + 1) * taps
    w = torch.randint(0, 2, (5, cin, k, k), generator=g).float() * 2 - 1
    w[0], w[1] = 1.0, -1.0
    pad = k // 2
    conv_packed = torch.nn.functional.conv2d(msb + scale * lsb, w, padding=pad)
    a, b = (torch.nn.functional.conv2d(p.double(), w.double(), padding=pad) for p in (msb, lsb))
    assert conv_packed[0, 0, 3, 3] == (scale + 1) * taps and conv_packed[0, 1, 3, 3] == -(scale + 1) * taps
    b_dec = torch.round(conv_packed / scale)
    assert torch.equal(b_dec.double(), b) and torch.equal((conv_packed - scale * b_dec).double(), a)


def test_pack_scale_refuses_sums_beyond_float32_integers():
    assert cpu_ops.pack_scale(144) == 512.0 and cpu_ops.pack_scale(576) == 2048.0
    assert cpu_ops.pack_scale(512 * 9) is None  # 3x3 over 512 channels: two convolutions instead


@pytest.mark.parametrize("stride,sparse,groups", [(1, True, 1), (2, True, 1), (1, False, 1), (2, False, 2)])
def test_gated_conv_kernels_equal_pytorch_path(kernels_on, stride, sparse, groups):
    torch.manual_seed(7 + stride + 3 * sparse + groups)
    conv = FracConv2d(8, 12, 3, stride, 1, groups=groups, sparse_backprop=sparse)
    with torch.no_grad():
        conv.threshold.uniform_(-4, 4)
    x = torch.randn(6, 8, 11, 11) * 1.2
    x[0, 0, 0, :6] = torch.tensor([0.0, 1 / 3, -1 / 3, -1.0, 1.0, -2 / 3])  # ties and clip points
    y_k, gx_k, gp_k = _run(conv, x, kernels=True)
    counts_k = conv.gate_counter.totals()
    conv.gate_counter.reset()
    y_t, gx_t, gp_t = _run(conv, x, kernels=False)
    assert torch.equal(y_k, y_t)  # bit-identical forward
    assert torch.equal(counts_k, conv.gate_counter.totals())
    assert 0 < counts_k[0] < counts_k[1]
    torch.testing.assert_close(gx_k, gx_t, rtol=1e-5, atol=1e-5)
    for name in ("weight", "threshold"):
        torch.testing.assert_close(gp_k[name], gp_t[name], rtol=1e-5, atol=1e-4)
    assert gp_k["threshold"].abs().sum() > 0


def test_gated_conv_too_wide_to_pack_takes_the_pytorch_path_and_matches_the_reference(kernels_on):
    torch.manual_seed(5)
    conv = FracConv2d(512, 4, 3, 1, 1)  # 4608 taps: the packed sums would exceed 2^24
    assert cpu_ops.pack_scale(512 * 9) is None
    with torch.no_grad():
        conv.threshold.uniform_(-30, 30)
    x = torch.randn(2, 512, 5, 5)
    y_f, gx_f, gp_f = _run(conv, x, kernels=True)  # fused node, PyTorch branch
    assert "FracConvFn" in type(conv(x).grad_fn).__name__
    ref = copy.deepcopy(conv)
    ref.fused = False  # the composed autograd reference, an independent path
    y_r, gx_r, gp_r = _run(ref, x, kernels=True)
    assert torch.equal(y_f, y_r)
    counts = conv.gate_counter.totals()
    assert 0 < counts[0] < counts[1]
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gp_f["weight"], gp_r["weight"], rtol=1e-5, atol=1e-4)


def test_gated_conv_falls_back_for_other_layouts_and_dtypes(kernels_on):
    conv = FracConv2d(4, 4, 3, 1, 1)
    x = torch.randn(2, 4, 6, 6)
    assert cpu_ops.usable(x)
    assert not cpu_ops.usable(x.to(memory_format=torch.channels_last)) and not cpu_ops.usable(x.double())
    y_ref, _, _ = _run(conv, x, kernels=False)
    y_cl, _, _ = _run(conv, x.to(memory_format=torch.channels_last), kernels=True)
    torch.testing.assert_close(y_cl, y_ref)
    y64, _, _ = _run(copy.deepcopy(conv).double(), x.double(), kernels=True)
    torch.testing.assert_close(y64.float(), y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,padding,kernel,resolution", [(1, 1, 3, 8), (2, 1, 3, 8), (1, 0, 3, 16),
                                                                (2, 2, 5, 8), (1, 0, 1, 32)])
def test_thermometer_lookup_equals_encode_then_convolve(kernels_on, stride, padding, kernel, resolution):
    torch.manual_seed(stride + padding + kernel)
    enc = ThermometerEncoder(resolution, 3)
    stem = ThermometerConv2d(enc, 10, kernel, stride, padding)
    images = torch.randint(0, 256, (3, 3, 13, 12), dtype=torch.uint8)
    images[0, :, 0, :4] = torch.tensor([0, 255, 4, 12], dtype=torch.uint8)  # code ties
    y_k, _, g_k = _run(stem, images, kernels=True)
    y_t, _, g_t = _run(stem, images, kernels=False)
    ref = thermometer_conv_reference(images, stem.weight_quantizer(stem.weight), resolution, stride, padding)
    assert torch.equal(y_k, ref.detach()) and torch.equal(y_t, ref.detach())
    torch.testing.assert_close(g_k["weight"], g_t["weight"], rtol=1e-5, atol=1e-3)
    # float images in [0, 1] take the same path and give the same values
    y_f, _, _ = _run(stem, images.float() / 255.0, kernels=True)
    assert torch.equal(y_f, y_k)


def test_training_step_with_and_without_kernels_agrees(kernels_on):
    torch.manual_seed(0)
    model = create_model("resnet20-fracbnn", width=0.5)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (8,))
    results = {}
    for kernels in (True, False):
        m = copy.deepcopy(model)
        old = cpu_ops.set_enabled(kernels)
        try:
            loss = torch.nn.functional.cross_entropy(m(images), labels)
            loss.backward()
        finally:
            cpu_ops.set_enabled(old)
        results[kernels] = (loss.detach(), {n: p.grad for n, p in m.named_parameters()})
    assert torch.equal(results[True][0], results[False][0])  # same forward, bit for bit
    for name, g in results[True][1].items():
        torch.testing.assert_close(g, results[False][1][name], rtol=1e-4, atol=1e-5, msg=name)


def test_generic_and_simd_kernel_sets_agree(kernels_on):
    """Both compiled instances (plain C and AVX2) give the same values; the plain one runs on any CPU."""
    from fracbnn.nn import _trainops

    torch.manual_seed(11)
    model = create_model("resnet20-fracbnn", width=0.5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FracConv2d):
                m.threshold.uniform_(-3, 3)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    results = []
    for simd in (True, False):
        _trainops.set_simd(simd)
        try:
            m = copy.deepcopy(model)
            out = m(images)
            out.square().sum().backward()
            results.append((out.detach(), {n: p.grad for n, p in m.named_parameters()}))
        finally:
            _trainops.set_simd(True)
    assert torch.equal(results[0][0], results[1][0])
    for name, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][name], rtol=1e-4, atol=1e-5, msg=name)
