"""Packed integer model: primitives exact, exported models close to PyTorch, container safety."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fracbnn.deploy import FixedPoint, PackedFormatError, PackedModel, export_model, get_engine
from fracbnn.deploy.container import FORMAT_VERSION, MAGIC
from fracbnn.deploy.export import UnsupportedModelError
from fracbnn.deploy.golden import binary_conv2d, op_quantize2, op_thermometer, run_program
from fracbnn.deploy.packed import pack_weight_bits, unpack_weight_bits
from fracbnn.models import create_model
from fracbnn.quant import ActivationQuantizer, thermometer_bits


# ---------------------------------------------------------------- primitives (exact)

@pytest.mark.parametrize("seed", range(6))
def test_binary_conv_matches_zero_padded_conv2d(seed):
    rng = np.random.default_rng(seed)
    n, cin, cout = rng.integers(1, 4), rng.integers(1, 40), rng.integers(1, 12)
    h, w = rng.integers(3, 12, size=2)
    k = int(rng.choice([1, 3, 5]))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, k // 2 + 2))
    x = rng.integers(0, 2, size=(n, cin, h, w)).astype(np.uint8)
    wb = rng.integers(0, 2, size=(cout, cin, k, k)).astype(np.uint8)
    ref = F.conv2d(torch.from_numpy(2.0 * x - 1), torch.from_numpy(2.0 * wb - 1), stride=stride, padding=pad)
    got = binary_conv2d(x, wb, stride, pad)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref.numpy().astype(np.int64))


def test_binary_conv_counts_only_valid_taps_at_corner():
    # all-ones input and weights: a corner output of a 3x3 pad-1 conv sees 4 valid taps per channel
    x = np.ones((1, 5, 4, 4), np.uint8)
    w = np.ones((1, 5, 3, 3), np.uint8)
    s = binary_conv2d(x, w, 1, 1)
    assert s[0, 0, 0, 0] == 4 * 5 and s[0, 0, 1, 1] == 9 * 5 and s[0, 0, 0, 1] == 6 * 5


@pytest.mark.parametrize("cin", [1, 7, 8, 9, 64, 96])
def test_weight_bit_packing_round_trip(cin):
    rng = np.random.default_rng(cin)
    sw = np.where(rng.random((3, cin, 3, 3)) < 0.5, -1, 1)
    packed = pack_weight_bits(sw)
    assert packed.shape == (3, 3, 3, (cin + 7) // 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(2 * unpack_weight_bits(packed, cin).astype(int) - 1, sw)
    # documented layout: bit ci % 8 (LSB first) of byte ci // 8
    o, u, v, ci = 2, 1, 0, cin - 1
    assert (packed[o, u, v, ci // 8] >> (ci % 8)) & 1 == int(sw[o, ci, u, v] > 0)


@pytest.mark.parametrize("frac_bits", [0, 3, 8, 12])
def test_quantize2_equals_activation_quantizer_codes(frac_bits):
    # every fixed-point value in a range covering all boundaries and clamping
    r = np.arange(-3 * 2**frac_bits, 3 * 2**frac_bits + 1, dtype=np.int64)
    m, l = op_quantize2(r, frac_bits)
    x = torch.from_numpy(r.astype(np.float64) / 2**frac_bits)
    codes = ActivationQuantizer(2).codes(x).numpy()
    np.testing.assert_array_equal(2 * m.astype(np.int64) + l, codes)


def test_thermometer_op_equals_encoder_on_all_pixels():
    px = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16).repeat(3, axis=1)
    for res in (8, 16, 3):
        bits = op_thermometer(px, res, int(round(255 / res)))
        ref = thermometer_bits(torch.from_numpy(px), res)
        np.testing.assert_array_equal(2 * bits.astype(np.float32) - 1, ref.numpy())


# ---------------------------------------------------------------- exported models vs PyTorch

def _trained_like(name: str, seed: int = 0, **kw) -> torch.nn.Module:
    """A small model whose BatchNorm statistics come from real forward passes (as after training)."""
    torch.manual_seed(seed)
    model = create_model(name, width=0.5, **kw)
    gen = torch.Generator().manual_seed(seed)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = None  # cumulative average over the calibration passes
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.uniform_(-0.3, 0.3, generator=gen)
    for m in model.modules():
        if hasattr(m, "threshold"):
            with torch.no_grad():
                m.threshold.uniform_(-2.0, 1.0, generator=gen)
        if hasattr(m, "shift_in"):
            with torch.no_grad():
                m.shift_in.uniform_(-0.2, 0.2, generator=gen)
                m.shift_out.uniform_(-0.2, 0.2, generator=gen)
                m.slope.uniform_(0.1, 0.4, generator=gen)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(_smooth_images(16, gen))
    return model.eval().double()


def _smooth_images(n: int, gen: torch.Generator) -> torch.Tensor:
    """Random but image-like uint8 pictures (upsampled noise), so networks see structure."""
    low = torch.rand(n, 3, 8, 8, generator=gen, dtype=torch.float64)
    img = F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    return (img * 255).round().to(torch.uint8)


MODELS = [("resnet20-fracbnn", {"frac_mode": "frac"}), ("resnet20-fracbnn", {"frac_mode": "binary"}),
          ("resnet20-bnn", {})]


@pytest.mark.parametrize("name,kw", MODELS)
def test_exported_logits_track_pytorch(name, kw):
    """Default (high) precision: integer logits equal the float64 model's up to rare boundary flips.

    Tolerance: with F = 22, P = 24 (the defaults) a residual value is off by
    about 2^-22, so a 2-bit code can only differ when the float value lies
    within ~1e-6 of a level boundary; we require >= 90% of images within 1e-3
    on every logit and >= 95% top-1 agreement.
    """
    model = _trained_like(name, **kw)
    x = _smooth_images(24, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    packed = export_model(model, FixedPoint(frac_bits=22, residual_bits=27, param_frac_bits=24))
    got = get_engine("golden")(packed).scores(x.numpy())
    close = (np.abs(got - ref).max(axis=1) < 1e-3).mean()
    agree = (got.argmax(1) == ref.argmax(1)).mean()
    assert close >= 0.9, close
    assert agree >= 0.95, agree


def test_default_widths_first_block_matches_pytorch_to_the_lsb():
    """Default widths (FixedPoint()), checked against the float64 model value by value.

    * stem.out: within 0.5 LSB + coefficient rounding (on the exporter's coefficient grid) everywhere;
    * the first conv's 2-bit codes: equal to the float model's except where the
      float value lies within 1 LSB of a level boundary (-2/3, 0, 2/3);
    * stages.0.0.y: within 0.5 + 0.5 |a2| LSB (+ 0.01) wherever no flipped code is
      in the 3x3 receptive field (a2: the BN_res scale that multiplies the shortcut).

    Whole-network agreement at default widths is measured on a trained CIFAR-10
    model (docs/deploy-format.md section 5).
    """
    from fracbnn.deploy.export import bn_affine

    model = _trained_like("resnet20-fracbnn", seed=3)
    x = _smooth_images(8, torch.Generator().manual_seed(2))
    acts = {}
    model.stem_bn.register_forward_hook(lambda m, i, o: acts.__setitem__("stem.out", o))
    model.stages[0][0].bn_res1.register_forward_hook(lambda m, i, o: acts.__setitem__("stages.0.0.y", o))
    with torch.no_grad():
        model(x)
    packed = export_model(model)
    fx = FixedPoint()
    assert packed.meta["fixed_point"] == {"frac_bits": fx.frac_bits, "residual_bits": fx.residual_bits,
                                          "param_frac_bits": fx.param_frac_bits, "coef_frac_bits": fx.coef_frac_bits,
                                          "classifier_frac_bits": fx.param_frac_bits}
    buf = run_program(packed, x.numpy())
    lsb = 2.0**-fx.frac_bits
    stem = acts["stem.out"].numpy()
    coef = 2.0**-(fx.param_frac_bits + 1)  # relative rounding of a full-precision coefficient (sc_mul)
    # multipliers on the coefficient grid: at most 2^-(coef_frac_bits + 1) output units per accumulator unit;
    # offsets on the half-unit grid: at most 1/4 unit (docs/deploy-format.md, "Coefficients on coarse grids")
    grid = 2.0**-(fx.coef_frac_bits + 1)
    assert np.abs(buf["stem.out"] * lsb - stem).max() <= (0.5 + 0.25 + 864 * grid) * lsb

    codes_ref = ActivationQuantizer(2).codes(acts["stem.out"]).numpy()
    codes = 2 * buf["stages.0.0.conv1.msb"].astype(np.int64) + buf["stages.0.0.conv1.lsb"]
    flipped = codes != codes_ref
    near = np.min(np.abs(stem[..., None] - np.array([-2 / 3, 0.0, 2 / 3])), axis=-1) < lsb
    assert not (flipped & ~near).any()
    assert flipped.mean() < 0.02

    hit = torch.from_numpy(flipped.any(axis=1, keepdims=True).astype(np.float32))
    affected = F.max_pool2d(hit, 3, 1, 1).numpy()[:, 0].astype(bool)  # (N, H, W)
    a2, _ = bn_affine(model.stages[0][0].bn_res1)
    tol = (0.5 + 0.5 * np.abs(a2) + np.abs(stem).max() / lsb * coef + 3 * 9 * 16 * grid + 0.25 + 0.01
           ).reshape(1, -1, 1, 1)
    err = np.abs(buf["stages.0.0.y"] * lsb - acts["stages.0.0.y"].numpy()) / lsb
    ok = (err <= tol) | affected[:, None]
    assert ok.all(), err[~ok].max()
    assert affected.mean() < 0.5


def test_gate_threshold_is_exact_integer_form():
    model = _trained_like("resnet20-fracbnn")
    packed = export_model(model)
    conv = model.stages[0][0].conv1
    thr = packed.tensors["stages.0.0.conv1.gate_threshold"]
    s_m = np.arange(-200, 201)
    for c in range(conv.out_channels):
        theta = float(conv.threshold[c].detach())
        np.testing.assert_array_equal(s_m > thr[c], (2.0 / 3.0) * s_m > theta)


def test_float_models_are_rejected():
    with pytest.raises(UnsupportedModelError, match="nothing to binarize"):
        export_model(create_model("resnet20-fp", width=0.25))
    m = create_model("resnet20-fracbnn", width=0.25, frac_mode="float")
    with pytest.raises(UnsupportedModelError, match="float"):
        export_model(m.eval())


# ---------------------------------------------------------------- container

@pytest.fixture(scope="module")
def packed_file(tmp_path_factory):
    model = create_model("resnet20-fracbnn", width=0.25).eval()
    path = tmp_path_factory.mktemp("fbnn") / "m.fbnn"
    export_model(model).save(path)
    return path


def test_round_trip_is_identical(packed_file):
    a = PackedModel.load(packed_file)
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    eng = get_engine("golden")(a)
    b_path = packed_file.with_name("again.fbnn")
    a.save(b_path)
    b = PackedModel.load(b_path)
    assert b_path.read_bytes() == packed_file.read_bytes()
    np.testing.assert_array_equal(eng.logits(x), get_engine("golden")(b).logits(x))
    assert set(a.tensors) == set(b.tensors)


def test_checksum_catches_flipped_byte(packed_file, tmp_path):
    raw = bytearray(packed_file.read_bytes())
    for pos in (30, len(raw) // 2, len(raw) - 40):
        bad = bytearray(raw)
        bad[pos] ^= 0x10
        p = tmp_path / "bad.fbnn"
        p.write_bytes(bytes(bad))
        with pytest.raises(PackedFormatError, match="SHA-256|metadata"):
            PackedModel.load(p)


def test_truncated_wrong_magic_wrong_version(packed_file, tmp_path):
    raw = packed_file.read_bytes()
    p = tmp_path / "x.fbnn"
    for cut in (0, 5, 20, len(raw) // 3, len(raw) - 1):
        p.write_bytes(raw[:cut])
        with pytest.raises(PackedFormatError, match="truncated|not a FracBNN|SHA-256"):
            PackedModel.load(p)
    p.write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(PackedFormatError, match="not a FracBNN packed model"):
        PackedModel.load(p)
    p.write_bytes(raw[:8] + (FORMAT_VERSION + 1).to_bytes(4, "little") + raw[12:])
    with pytest.raises(PackedFormatError, match="version 2"):
        PackedModel.load(p)
    with pytest.raises(PackedFormatError, match="not found"):
        PackedModel.load(tmp_path / "missing.fbnn")
    assert raw[:8] == MAGIC


def test_valid_container_with_bad_program_is_rejected(packed_file, tmp_path):
    from fracbnn.deploy.container import read_container, write_container

    meta, tensors = read_container(packed_file)
    conv = next(op for op in meta["program"] if op["output"] == "stages.0.0.conv1.acc")
    conv["stride"] = 2  # shapes no longer line up with the identity shortcut
    p = write_container(tmp_path / "prog.fbnn", meta, tensors)
    with pytest.raises(PackedFormatError, match="inconsistent|shape"):
        PackedModel.load(p)
    meta2 = dict(meta, kind="something-else")
    p2 = write_container(tmp_path / "kind.fbnn", meta2, tensors)
    with pytest.raises(PackedFormatError, match="not a FracBNN packed model"):
        PackedModel.load(p2)


def test_engine_rejects_wrong_image_shape(packed_file):
    from fracbnn.deploy import EngineError

    eng = get_engine("golden")(PackedModel.load(packed_file))
    with pytest.raises(EngineError, match="shape"):
        eng.logits(np.zeros((1, 3, 28, 28), np.uint8))
    with pytest.raises(EngineError, match="uint8"):
        eng.logits(np.zeros((1, 3, 32, 32), np.float32))


def test_intermediate_buffers_are_named_like_modules(packed_file):
    packed = PackedModel.load(packed_file)
    buf = run_program(packed, np.zeros((1, 3, 32, 32), np.uint8))
    assert {"stem.out", "stages.0.0.y", "stages.2.2.out", "logits"} <= set(buf)
