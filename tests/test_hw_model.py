"""Cycle/resource model of the accelerator: calibration against the published design."""

import pytest

from fracbnn.hw.layers import cifar_resnet_layers
from fracbnn.hw.perf_model import (PART, PUBLISHED, bram18k, calibration, cycle_model, popcount_luts,
                                   proposed_ultra96, published_ultra96, resource_model)


def test_published_configuration_lands_on_published_figures():
    cal = calibration()
    rel = cal["relative_error"]
    assert abs(rel["fps"]) <= 0.15, rel
    for k in ("lut", "dsp", "bram18k"):
        assert abs(rel[k]) <= 0.25, (k, rel)
    assert cal["within"]


def test_proposed_design_doubles_published_fps_and_fits_the_part():
    layers = cifar_resnet_layers(20)
    cfg = proposed_ultra96()
    fps = cycle_model(layers, cfg, lsb_density=1.0).fps  # worst case: every LSB tile open
    assert fps >= 2 * PUBLISHED["fps"]
    res = resource_model(layers, cfg)
    assert res["fits"], res["totals"]
    for k in ("lut", "ff", "bram18k", "dsp"):
        assert res["totals"][k] <= PART[k]


def test_lsb_skipping_saves_cycles_only_in_our_style():
    layers = cifar_resnet_layers(20)
    ours = proposed_ultra96()
    full, half = cycle_model(layers, ours, 1.0).cycles, cycle_model(layers, ours, 0.5).cycles
    lsb_full = sum(lp.cycles for l in cycle_model(layers, ours, 1.0).layers for lp in l["loops"] if lp.loop == "lsb")
    assert half < full and full - half == pytest.approx(lsb_full / 2, rel=0.05)
    pub = published_ultra96()
    assert cycle_model(layers, pub, 0.1).cycles == cycle_model(layers, pub, 1.0).cycles


def test_model_layers_match_built_model():
    """The shapes the models are given without a model equal those the generator reads from an exported one."""
    from fracbnn.deploy import export_model
    from fracbnn.hw.program import hw_program
    from fracbnn.models import create_model

    for depth, width in ((20, 1.0), (32, 0.5)):
        model = create_model(f"resnet{depth}-fracbnn", width=width).eval()
        assert hw_program(export_model(model)).shapes == cifar_resnet_layers(depth, width)


def test_unit_cost_helpers():
    assert popcount_luts(64) > popcount_luts(32) > popcount_luts(16) > 0
    assert bram18k(1089, 16) == 2 and bram18k(512, 36) == 1 and bram18k(1024, 64) == 4
    # more lanes cost more LUTs and DSPs, wider words more LUTs
    layers = cifar_resnet_layers(20)
    base = resource_model(layers, proposed_ultra96())["totals"]
    from fracbnn.hw.perf_model import with_overrides
    wide = resource_model(layers, with_overrides(proposed_ultra96(), lanes=32))["totals"]
    assert wide["lut"] > base["lut"] and wide["dsp"] >= base["dsp"]
