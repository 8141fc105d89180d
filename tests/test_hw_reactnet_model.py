"""The ImageNet design's cycle/DRAM/resource model, the published configuration in it, and `hw report`."""

import json

import numpy as np
import pytest
from exportable import data_like_model, family_images

from fracbnn.cli import main
from fracbnn.deploy import export_model
from fracbnn.hw.design import PART
from fracbnn.hw.reactnet import design as D
from fracbnn.hw.reactnet.generate import generate_rx_project
from fracbnn.hw.reactnet.model import cycle_model, expected_busiest, resource_model
from fracbnn.hw.reactnet.program import RxShape, reactnet_shapes
from fracbnn.hw.reactnet.report import build_rx_report

FULL = reactnet_shapes(1.0, 224)
#: gate densities of the briefly trained reduced reactnet-fracbnn (benchmarks/reactnet_agreement.py): 0.49-0.74
TRAINED_LIKE = {s.name: (0.74 if s.kind == "conv1" else 0.52) for s in FULL if s.gated}


def test_full_network_fits_and_is_twice_the_published_configuration():
    rep = build_rx_report(FULL, D.proposed_imagenet(), densities=TRAINED_LIKE, n_classes=1000)
    t = rep["totals"]
    for k in ("lut", "ff", "bram18k", "dsp"):
        assert 0 < t[k] <= PART[k], k
    assert rep["fits"]
    assert t["fps"] == pytest.approx(250e6 / t["cycles"])
    assert t["dram_bytes"] > 3.5e6  # at least the binary weights (3.6 MB) cross the bus once
    assert 0 < t["dram_bandwidth_share"] < 1
    p = rep["published"]
    assert p["speedup_vs_published_fps"] >= 2.0
    assert p["speedup_vs_published_fps"] == pytest.approx(t["fps"] / p["fps"])
    # the LSB lists save cycles at these densities; every gate open they save nothing over the lists' own cost
    assert rep["lsb"]["cycles"] < rep["lsb"]["cycles_without_skipping"]
    all_open = cycle_model(FULL, D.proposed_imagenet(), densities=1.0)
    assert all_open["totals"]["cycles"] > t["cycles"]
    # without any skipping the structural changes (weight cache, 9-word 1x1 engine) still beat the published one
    no_skip = cycle_model(FULL, D.with_overrides(D.proposed_imagenet(), lsb_skip=False))
    assert no_skip["totals"]["fps"] > 1.5 * p["fps"]


def test_published_configuration_rereads_weights_per_row_tile():
    pub = cycle_model(FULL, D.published_imagenet())
    ours = cycle_model(FULL, D.proposed_imagenet(), densities=1.0)
    assert pub["totals"]["dram_bytes"] > ours["totals"]["dram_bytes"]
    one = [l for l in FULL if l.name == "blocks.0.conv1"]
    p = cycle_model(one, D.published_imagenet())["layers"][0]
    # 112 rows in 16 row tiles, one input word, 32 lanes: the word's 1,152 weight bytes are read 16 times
    consts = D.CONST_TABLES * 32 * 8
    assert p["dram_bytes"] - consts - 16 * 7 * 112 * 16 * 2 == 16 * 1152
    assert p["lsb"] == p["msb"]  # full LSB sweeps


def test_hand_computed_cycles_of_one_layer():
    cfg = D.proposed_imagenet()
    layer = RxShape("x", "conv3", 64, 32, 14, 14, 1, "identity", False, False)  # ungated: LSB sweeps fully
    r = cycle_model([layer], cfg)["layers"][0]
    sweep = (7 - 1 + 3) * (14 + 2)  # per word and row tile
    assert r["msb"] == 2 * (2 * sweep + 8)
    assert r["lsb"] == r["msb"] and r["epilogue"] == 2 * (7 * 14 + 12)


def test_expected_busiest_lane_matches_sampling():
    rng = np.random.default_rng(0)
    for w, d in ((14, 0.5), (56, 0.3), (112, 0.55)):
        sampled = rng.binomial(w, d, size=(20000, 32)).max(axis=1).mean()
        assert expected_busiest(w, d, 32) == pytest.approx(sampled, rel=0.01)
    assert expected_busiest(10, 0.0, 32) == 0 and expected_busiest(10, 1.0, 32) == 10


def test_report_of_a_simulated_project(tmp_path, capsys):
    """`hw report DIR --json` after csim: per-layer cycles, fps, DRAM bytes equal to what csim moved, resources,
    the published comparison, and the csim block with 0 mismatches and the model within 5 % (exact here)."""
    packed = export_model(data_like_model("reactnet-fracbnn"))
    out = tmp_path / "prj"
    generate_rx_project(packed, out, images=np.asarray(family_images("reactnet-fracbnn", 4)), image_origin="test")
    assert main(["hw", "csim", str(out)]) == 0
    capsys.readouterr()
    assert main(["hw", "report", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    csim = json.loads((out / "csim_result.json").read_text())
    assert [l["name"] for l in rep["layers"]] == [l["name"] for l in csim["layers"]]
    assert rep["totals"]["dram_bytes"] == pytest.approx(csim["dram_bytes"])
    assert rep["csim"]["mismatched_images"] == 0 and rep["csim"]["within_tolerance"]
    assert abs(rep["csim"]["relative_error"]) < 1e-6
    assert rep["published"]["speedup_vs_published_fps"] >= 2.0
    for k in ("lut", "ff", "bram18k", "dsp"):
        assert rep["totals"][k] <= PART[k]
    assert main(["hw", "report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "C simulation (4 images, 0 mismatched)" in text and "published design modelled" in text
    assert main(["hw", "report", str(out), "--epilogue-units", "8"]) == 2  # a CIFAR-only option: one line
    assert "CIFAR design" in capsys.readouterr().err


def test_resources_grow_with_the_lanes():
    small = resource_model(FULL, D.with_overrides(D.proposed_imagenet(), lanes=16))["totals"]
    big = resource_model(FULL, D.proposed_imagenet())["totals"]
    assert small["lut"] < big["lut"] and small["dsp"] < big["dsp"]
