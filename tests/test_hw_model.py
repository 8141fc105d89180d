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
    assert cfg.lsb_lanes  # the default is the per-lane design (the one whose LSB skipping pays)
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


def test_per_lane_design_is_charged_for_its_plane_copies_and_lists():
    layers = cifar_resnet_layers(20)
    tile = resource_model(layers, proposed_ultra96(lsb_lanes=False))
    lanes = resource_model(layers, proposed_ultra96())
    names = {c["component"] for c in lanes["components"]}
    assert {"LSB plane copies (per lane)", "LSB work lists + lane cursors"} <= names
    assert lanes["totals"]["bram18k"] > tile["totals"]["bram18k"]
    # with every gate open both designs sweep everything: same LSB iterations; the lanes' pass is entered once
    # per layer (one pipeline fill), the tile list once per group
    def lsb(cfg):
        return [(lp.trip, lp.entries) for l in cycle_model(layers, cfg, 1.0).layers for lp in l["loops"]
                if lp.loop == "lsb"]

    tiles, lanes_ = lsb(proposed_ultra96(lsb_lanes=False)), lsb(proposed_ultra96())
    assert [t for t, _ in tiles] == [t for t, _ in lanes_] and all(e == 1 for _, e in lanes_)
    assert sum(e for _, e in tiles) > len(tiles)
    from fracbnn.hw.design import HwConfig
    with pytest.raises(ValueError, match="per-lane"):
        HwConfig(lsb_lanes=True, lsb_skip=False)


def test_channel_balancing_evens_lane_loads():
    import numpy as np

    from fracbnn.deploy import export_model
    from fracbnn.hw.measure import balance_channels_by_gate_rate, order_channels_by_gate_rate
    from fracbnn.hw.program import hw_program
    from fracbnn.models import create_model

    prog = hw_program(export_model(create_model("resnet20-fracbnn").eval()))
    rng = np.random.default_rng(0)
    rates = {l.shape.name: rng.uniform(0, 1, l.shape.cout) for l in prog.layers[1:]}

    def busiest(layer):
        r = rates[layer.shape.name][layer.channel_order()]
        return r.reshape(-1, 16).sum(axis=0).max()  # lane p holds slots g*16 + p

    order_channels_by_gate_rate(prog, rates)
    sorted_max = {l.shape.name: busiest(l) for l in prog.layers[1:]}
    balance_channels_by_gate_rate(prog, rates, 16, 32)
    for l in prog.layers[1:]:
        assert sorted(l.channel_order()) == list(range(l.shape.cout))
        assert busiest(l) <= sorted_max[l.shape.name] + 1e-12
        lane_of = {int(c): slot % 16 for slot, c in enumerate(l.channel_order())}
        if l.shape.cout > 32:  # channels sharing an acc_buf bank (c mod 32) stay in one lane
            assert all(lane_of[c] == lane_of[c % 32] for c in range(l.shape.cout))
    wide = [l for l in prog.layers[1:] if l.shape.cout == 64]
    assert any(busiest(l) < sorted_max[l.shape.name] - 0.1 for l in wide)
