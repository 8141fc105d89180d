"""Thermometer encoder: exact on every pixel value, any batch/size/channels."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from fracbnn.quant import ThermometerEncoder, thermometer_bits, thermometer_level
from fracbnn.quant.thermometer import bits_per_channel


def _level_by_definition(p: int, r: int) -> int:
    """round(p / r) with ties to even, computed with exact fractions."""
    f = Fraction(p, r)
    lo = f.numerator // f.denominator
    rem = f - lo
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and lo % 2 == 1):
        return lo + 1
    return lo


@pytest.mark.parametrize("resolution", [1, 3, 8, 16, 255])
def test_levels_exact_on_all_256_pixels(resolution):
    p = torch.arange(256)
    got = thermometer_level(p, resolution).tolist()
    assert got == [_level_by_definition(i, resolution) for i in range(256)]
    # numpy integers give the same result as torch
    assert thermometer_level(np.arange(256), resolution).tolist() == got


def test_tie_rule_half_to_even_at_resolution_8():
    lv = thermometer_level(torch.tensor([4, 12, 20, 28, 252, 255]), 8).tolist()
    assert lv == [0, 2, 2, 4, 32, 32]
    assert bits_per_channel(8) == 32


def test_bits_match_definition_for_every_pixel_value():
    p = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    bits = thermometer_bits(p, 8)  # (1, 32, 16, 16)
    assert bits.shape == (1, 32, 16, 16)
    for value in range(256):
        col = bits[0, :, value // 16, value % 16]
        n = _level_by_definition(value, 8)
        assert col.tolist() == [1.0] * n + [-1.0] * (32 - n)


def test_float_images_convert_exactly():
    p = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    # ToTensor-style float32 images p / 255 (and float64) encode exactly like uint8
    for dtype in (torch.float32, torch.float64, torch.float16):
        x = p.to(dtype) / 255
        assert torch.equal(thermometer_bits(x, 8), thermometer_bits(p, 8)), dtype


def test_colour_major_channel_order():
    img = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    img[0, 1] = 255  # only the green channel on
    bits = thermometer_bits(img, 8)[0, :, 0, 0]
    assert (bits[:32] == -1).all() and (bits[32:64] == 1).all() and (bits[64:] == -1).all()


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (7, 3, 5, 9), (2, 1, 8, 8), (3, 4, 2, 2)])
def test_any_shape_and_batch_size_independence(shape):
    torch.manual_seed(1)
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    enc = ThermometerEncoder(8, in_channels=shape[1])
    full = enc(x)
    assert full.shape == (shape[0], shape[1] * 32, shape[2], shape[3])
    one_by_one = torch.cat([enc(x[i : i + 1]) for i in range(shape[0])])
    assert torch.equal(full, one_by_one)


def test_encoder_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ThermometerEncoder(8, 3)(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


def test_encoder_has_no_gradient_path():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    assert not ThermometerEncoder()(x).requires_grad
