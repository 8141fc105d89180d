"""ImageNet models (ReActNet-A FracBNN / BNN / FP), PCA lighting and the frozen teacher wrapper.

Nothing here needs torchvision; the data pipeline and the torchvision teacher
are covered in test_imagenet_pipeline.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fracbnn.checkpoint import model_from_checkpoint, save_checkpoint
from fracbnn.data.imagenet import PCA_EIGVAL, PCA_EIGVEC, PCALighting, pca_lighting
from fracbnn.models import create_model, list_models
from fracbnn.models.reactnet import REACTNET_A_BLOCKS, ReActBlock
from fracbnn.models.resnet_cifar import make_block_conv
from fracbnn.models.teachers import FrozenTeacher
from fracbnn.nn import BinaryConv2d, FracConv2d, set_conv_mode
from fracbnn.summary import summarize


def test_registered():
    assert {"reactnet-fracbnn", "reactnet-bnn", "reactnet-fp"} <= set(list_models())


def test_fracbnn_summary_totals_at_224():
    """The numbers of SPEC section 2 / the issue, counted from the model itself."""
    model = create_model("reactnet-fracbnn")
    assert model.input_size == (3, 224, 224)
    t = summarize(model).totals
    assert t["binary_weight_bits"] == 28_280_832
    assert t["input_bmacs"] == 346_816_512
    assert t["msb_bmacs"] == 4_816_896_000
    assert sum(isinstance(m, FracConv2d) for m in model.modules()) == 26
    assert model.fc.in_features == 1024 and model.fc.out_features == 1000


def test_baseline_topologies_match():
    bnn = create_model("reactnet-bnn", width=0.25, num_classes=7)
    fp = create_model("reactnet-fp", width=0.25, num_classes=7)
    frac = create_model("reactnet-fracbnn", width=0.25, num_classes=7)
    assert not any(isinstance(m, FracConv2d) for m in bnn.modules())
    assert all(m.input_quantizer.precision == 1 for m in bnn.modules() if isinstance(m, BinaryConv2d)
               and not getattr(m, "is_input_layer", False))
    assert not any(isinstance(m, (FracConv2d, BinaryConv2d)) for m in fp.modules())
    shapes = lambda m: [tuple(p.shape) for n, p in m.named_parameters() if n.endswith("conv1.weight")]  # noqa: E731
    assert shapes(bnn) == shapes(frac) == shapes(fp)[:] and len(shapes(frac)) == 13
    t = summarize(bnn, input_size=(3, 64, 64)).totals
    assert t["lsb_bmacs"] == 0 and t["effective_activation_bits"] == 1.0


@pytest.mark.parametrize("name", ["reactnet-fracbnn", "reactnet-bnn", "reactnet-fp"])
@pytest.mark.parametrize("size", [32, 64])
def test_forward_any_multiple_of_32(name, size):
    torch.manual_seed(0)
    model = create_model(name, width=0.25, num_classes=5)
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    out = model(images)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    # uint8 and [0, 1] float images are the same input
    model.eval()
    assert torch.allclose(model(images), model(images.float() / 255), atol=1e-5)


def test_size_not_multiple_of_32_is_a_clear_error():
    model = create_model("reactnet-fracbnn", width=0.25, num_classes=5)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 48, 48, dtype=torch.uint8))


def _q(x, bits):
    step = 2.0 / (2**bits - 1)
    return torch.round((x.clamp(-1, 1) + 1) / step) * step - 1


@pytest.mark.parametrize("cin,cout,stride", [(8, 16, 2), (8, 8, 1)])
def test_block_follows_spec_formula(cin, cout, stride):
    """y = BN_s1(RPReLU_1(BN(PG3x3(Q2 x))) + pool(Q4 x)); z = BN_s2(RPReLU_2(BN(PG1x1(Q2 y))) + dup(Q4 y))."""
    torch.manual_seed(1)

    def factory(i, o, k, s):
        return make_block_conv("frac", i, o, s, kernel=k)

    block = ReActBlock(cin, cout, stride, factory)
    for m in block.modules():  # non-trivial BN statistics and RPReLU parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.3)
        if isinstance(m, FracConv2d):
            m.threshold.data.uniform_(-3, 3)
    for name, p in block.named_parameters():
        if "rprelu" in name:
            p.data.normal_(0.2, 0.1)
    block.eval()
    x = torch.randn(2, cin, 8, 8)

    def pg(conv, inp):
        w = torch.where(conv.weight >= 0, 1.0, -1.0)
        xq = _q(inp, 2)
        full = F.conv2d(xq, w, None, conv.stride, conv.padding)
        msb = F.conv2d(torch.where(xq >= 0, 1.0, -1.0), w, None, conv.stride, conv.padding) * (2 / 3)
        return torch.where(msb > conv.threshold.view(1, -1, 1, 1), full, msb)

    def rprelu(r, v):
        return F.prelu(v + r.shift_in.view(1, -1, 1, 1), r.slope) + r.shift_out.view(1, -1, 1, 1)

    sc = _q(x, 4)
    if stride == 2:
        sc = F.avg_pool2d(sc, 2)
    y = block.bn_res1(rprelu(block.rprelu1, block.bn1(pg(block.conv1, x))) + sc)
    sc = _q(y, 4)
    if cout == 2 * cin:
        sc = torch.cat((sc, sc), 1)
    z = block.bn_res2(rprelu(block.rprelu2, block.bn2(pg(block.conv2, y))) + sc)
    with torch.no_grad():
        assert torch.allclose(block(x), z, atol=1e-5)


def test_block_layout_and_modes(tmp_path):
    model = create_model("reactnet-fracbnn", width=0.25, num_classes=4)
    strides = [b.conv1.stride[0] for b in model.blocks]
    assert strides == [s for _, _, s in REACTNET_A_BLOCKS]
    assert [b.conv2.kernel_size for b in model.blocks] == [(1, 1)] * 13
    assert model.stem.stride == (2, 2) and model.stem.in_channels == 96
    assert set_conv_mode(model, "binary") == 26
    path = save_checkpoint(tmp_path / "r.pt", model)
    again = model_from_checkpoint(path)
    assert again.spec["kwargs"]["frac_mode"] == "binary"
    assert all(m.mode == "binary" for m in again.modules() if isinstance(m, FracConv2d))
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    model.eval(), again.eval()
    assert torch.equal(model(x), again(x))


# ---------------------------------------------------------------- PCA lighting
def test_pca_lighting_matches_definition():
    img = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    assert torch.equal(pca_lighting(img, torch.zeros(3)), img)
    alpha = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    out = pca_lighting(img, alpha)
    shift = torch.tensor(PCA_EIGVEC, dtype=torch.float64) @ (alpha * torch.tensor(PCA_EIGVAL, dtype=torch.float64))
    expect = torch.round((img.double() / 255 + shift.view(3, 1, 1)).clamp(0, 1) * 255).to(torch.uint8)
    assert out.dtype == torch.uint8 and torch.equal(out, expect)
    # a strong shift saturates instead of wrapping around
    bright = pca_lighting(torch.full((3, 2, 2), 250, dtype=torch.uint8), torch.tensor([-5.0, 0, 0]))
    assert bright.min() == 255


def test_pca_lighting_noise_scale():
    torch.manual_seed(0)
    img = torch.full((3, 4, 4), 128, dtype=torch.uint8)
    t = PCALighting(0.1)
    deltas = torch.stack([t(img)[:, 0, 0].float() - 128 for _ in range(400)])
    # std of the first principal component: 0.1 * 0.2175 * |eigvec| * 255 ~ 3.2 pixel levels per channel
    assert 2.0 < deltas.std(dim=0).mean() < 4.5
    assert torch.equal(PCALighting(0.0)(img), img)


# ---------------------------------------------------------------- teacher wrapper
def test_frozen_teacher_stays_frozen():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5))
    net(torch.zeros(1, 3, 8, 8))
    teacher = FrozenTeacher(net)
    stats = net[1].running_mean.clone()
    teacher.train()
    assert not teacher.training and not net.training
    assert not any(p.requires_grad for p in teacher.parameters())
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = teacher(images)
    assert torch.equal(net[1].running_mean, stats)  # eval mode: BN statistics do not drift
    assert not out.requires_grad
    assert torch.allclose(out, teacher(images.float() / 255), atol=1e-5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(out, net((images / 255 - mean) / std), atol=1e-5)


def test_cifar_path_does_not_import_torchvision():
    """torchvision is an optional extra: models, data, training and import-reference load without it."""
    import subprocess
    import sys

    code = ("import sys, fracbnn.models, fracbnn.data, fracbnn.train, fracbnn.reference, fracbnn.cli;"
            "import fracbnn.models.teachers, fracbnn.data.imagenet;"
            "fracbnn.models.create_model('resnet20-fracbnn'); fracbnn.models.create_model('reactnet-fracbnn', width=0.25);"
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
