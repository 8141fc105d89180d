"""Generated HLS design vs the golden engine: bit-exact logits and cycle counts that match the model."""

import json
import re
import shutil

import numpy as np
import torch

from fracbnn.deploy import FixedPoint, export_model
from fracbnn.deploy.golden import GoldenEngine
from fracbnn.hw.csim import run_csim
from fracbnn.hw.generate import INT_HEADER, config_from_project, generate_project
from fracbnn.hw.layers import ConvLayer
from fracbnn.hw.perf_model import cycle_model
from fracbnn.hw.report import compare_with_csim, measured
from fracbnn.models import create_model

from conftest import datasets_dir, needs_c

pytestmark = needs_c(shutil.which("g++") is not None, "g++ is needed to build the C testbench")


def _random_model(seed, thr_range=(-5.0, 40.0), **kwargs):
    """A randomly initialised FracBNN with random BN statistics and gate thresholds (gates both open and closed)."""
    torch.manual_seed(seed)
    m = create_model("resnet20-fracbnn", **kwargs)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.3, 2.0)
            mod.weight.data.uniform_(-1.5, 1.5)  # negative scales flip the RPReLU side test
            mod.bias.data.uniform_(-0.5, 0.5)
        if hasattr(mod, "slope"):
            mod.slope.data.uniform_(-0.5, 0.5)
            mod.shift_in.data.uniform_(-0.3, 0.3)
            mod.shift_out.data.uniform_(-0.3, 0.3)
        if hasattr(mod, "threshold") and isinstance(mod.threshold, torch.nn.Parameter):
            mod.threshold.data.uniform_(*thr_range)
    return m.eval()


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _c_table(header: str, name: str) -> np.ndarray:
    """The values of ``static const T NAME[n] = {...};`` in a generated header."""
    m = re.search(r"\b" + name + r"\[\d+\]\s*=\s*\{([^}]*)\}", header)
    assert m, name
    return np.array([int(v) for v in m.group(1).replace("\n", " ").split(",") if v.strip()])


def _check_project(tmp_path, model, images, name, calib=None, cfg=None):
    packed = export_model(model)
    out = tmp_path / name
    meta = generate_project(packed, out, images=images, image_origin="test", calib_images=calib, cfg=cfg)
    # the project carries the one header of integer primitives the fast engine is built with, unchanged
    assert (out / "src" / "fracbnn_int.h").read_bytes() == INT_HEADER.read_bytes()
    res = run_csim(out)
    assert res["returncode"] == 0, res["stdout"][-2000:]
    assert res["mismatched_images"] == 0 and res["images"] == len(images)
    # the testbench compared against exactly these golden logits
    assert "CSIM PASSED" in res["stdout"]
    # channel-interleaved acc/res/sc buffers: the parallel accesses of one epilogue/shortcut/pool iteration
    # hit distinct banks (at most a read and a write, or two reads, per dual-port bank)
    assert res["max_bank_accesses"] <= 2, res["max_bank_accesses"]
    layers = [ConvLayer(**l) for l in meta["layers"]]
    dens, entries = measured(meta["lsb"], config_from_project(meta))
    cmp = compare_with_csim(cycle_model(layers, config_from_project(meta), dens, lsb_entries=entries), res)
    assert cmp["within_tolerance"], cmp
    assert cmp["max_layer_relative_error"] < 0.05, cmp
    return out, meta, res


def test_random_models_are_bit_exact_and_cycles_match_the_model(tmp_path):
    from fracbnn.hw.measure import default_images

    images = _images(4, 1)
    if (datasets_dir() / "cifar-10-python.tar.gz").is_file():  # real test images when the data set is there
        cifar, origin = default_images(3, datasets=datasets_dir())
        assert "CIFAR-10" in origin
        images = np.concatenate([images, cifar])
    # channels given to lanes in gate-rate order (measured on other images): still bit-exact
    from fracbnn.hw.design import proposed_ultra96

    out, meta, _ = _check_project(tmp_path, _random_model(1), images, "gated", calib=_images(8, 11),
                                  cfg=proposed_ultra96(lsb_lanes=False))
    assert meta["channel_order"]["sorted_by_gate_rate"]
    # the kernel really got a reordered channel map: some layer's lanes take channels out of natural order
    ch_map = _c_table((out / "src" / "fracbnn_params.h").read_text(), "CH_MAP")
    natural = np.concatenate([np.arange(l["cout"]) for l in meta["layers"]])
    assert ch_map.shape == natural.shape and not np.array_equal(ch_map, natural)
    for l in meta["layer_table"]:  # still a permutation of each layer's channels
        assert sorted(ch_map[l["p_off"]:l["p_off"] + l["cout"]]) == list(range(l["cout"]))
    # all gates open at init threshold -1 is common; very high thresholds close almost all
    out, meta, res = _check_project(tmp_path, _random_model(2, thr_range=(150.0, 400.0)), _images(3, 2), "closed")
    lsb = sum(r["loops"]["lsb"] for r in res["rows"])
    msb = sum(r["loops"]["msb"] for r in res["rows"][2:-1])
    assert lsb < 0.2 * msb  # closed gates cost (almost) no LSB cycles


def _lsb_cycles(res):
    return sum(r["loops"]["lsb"] for r in res["rows"])


def test_per_lane_work_lists_are_bit_exact_and_never_slower_than_tiles(tmp_path):
    from fracbnn.hw.design import proposed_ultra96

    model, images = _random_model(7), _images(3, 7)
    # same (natural) channel order for both designs: a lane's slot has at most one entry per open tile of its
    # group, so the busiest lane never needs more LSB cycles than the tile list
    _, _, tiles = _check_project(tmp_path, model, images, "tiles", cfg=proposed_ultra96(lsb_lanes=False))
    _, meta, lanes = _check_project(tmp_path, model, images, "lanes")  # the default design
    assert "#define LSB_LANES 1" in (tmp_path / "lanes" / "src" / "fracbnn_config.h").read_text()
    assert 0 < _lsb_cycles(lanes) <= _lsb_cycles(tiles)
    assert all(0.0 <= v["lane_share"] <= v["tile_density"] + 1e-9 for v in meta["lsb"].values())
    # lanes balanced by calibration gate rates, a narrow model (8 channels: lanes without a channel) and an
    # ungated one (every entry listed) stay bit-exact with cycles as modelled
    _, meta, _ = _check_project(tmp_path, _random_model(8), _images(2, 8), "balanced", calib=_images(6, 12),
                                cfg=proposed_ultra96(lsb_lanes=True))
    assert meta["channel_order"]["balanced_over_lanes"]
    _check_project(tmp_path, _random_model(9, width=0.5), _images(2, 9), "narrow-lanes",
                   cfg=proposed_ultra96(lsb_lanes=True))
    _check_project(tmp_path, _random_model(10, frac_mode="binary"), _images(1, 10), "ungated-lanes",
                   cfg=proposed_ultra96(lsb_lanes=True))


def test_narrow_and_ungated_models(tmp_path):
    # width 0.5 (8/16/32 channels) exercises other word/segment plans; "binary" mode has no gate
    from fracbnn.hw.design import proposed_ultra96

    tiles = proposed_ultra96(lsb_lanes=False)  # the per-lane (default) design runs these in the test above
    _check_project(tmp_path, _random_model(3, width=0.5), _images(2, 3), "narrow", cfg=tiles)
    _check_project(tmp_path, _random_model(4, frac_mode="binary"), _images(2, 4), "ungated", cfg=tiles)


def test_csim_fails_on_a_wrong_expected_logit(tmp_path):
    model = _random_model(5)
    packed = export_model(model)
    images = _images(2, 5)
    out = tmp_path / "p"
    generate_project(packed, out, images=images, image_origin="test")
    want = GoldenEngine(packed).logits(images)
    data = (out / "src" / "tb_data.h").read_text()
    old = f"{{{want[1][0]}LL, "
    assert old in data
    (out / "src" / "tb_data.h").write_text(data.replace(old, f"{{{want[1][0] + 1}LL, ", 1))
    res = run_csim(out)
    assert res["returncode"] == 1 and res["mismatched_images"] == 1
    assert "MISMATCH image 1 class 0" in res["stdout"]


def _cli(capsys, *argv):
    from fracbnn.cli import main

    rc = main(["hw", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_generate_csim_report(tmp_path, capsys):
    # narrower widths, as `fracbnn export --frac-bits auto` gives the authors' model (F 20 or less, few fraction
    # bits in the last block, the only output the global pool reads): the epilogue tables and the pool's sums
    # fit 32 bits and the design fits; at the default widths this random model's tables and pool need 64 bits
    default_path, model_path = tmp_path / "d.fbnn", tmp_path / "m.fbnn"
    export_model(_random_model(6)).save(default_path)
    export_model(_random_model(6), FixedPoint(frac_bits=18, residual_bits=24), frac_widths={"stages.2.2.out": 6},
                 residual_widths={"stages.2.2.out": 13}).save(model_path)
    rc, stdout, err = _cli(capsys, "report", default_path, "--images", 2, "--random-images")
    assert rc == 0 and "DOES NOT FIT" in stdout and "--frac-bits auto" in stdout, stdout + err  # 64-bit pool
    out = tmp_path / "proj"
    rc, _, err = _cli(capsys, "generate", model_path, "--board", "ultra96v2", "-o", out, "--images", 2,
                      "--random-images")
    assert rc == 0, err
    for f in ("src/fracbnn_kernel.cpp", "src/fracbnn_int.h", "src/fracbnn_params.h", "src/tb_data.h", "csim.tcl",
              "synth.tcl", "host/fracbnn_pynq.py", "README.md"):
        assert (out / f).is_file(), f
    tcl = (out / "synth.tcl").read_text()
    assert "xczu3eg-sbva484-1-e" in tcl and "-period 4" in tcl and "export_design" in tcl
    for f in ("synth.tcl", "csim.tcl", "README.md"):  # the shared header is part of the listed sources
        assert "src/fracbnn_int.h" in (out / f).read_text(), f
    rc, stdout, err = _cli(capsys, "csim", out)
    assert rc == 0 and "CSIM PASSED" in stdout, stdout + err
    rc, stdout, err = _cli(capsys, "report", out, "--json")
    assert rc == 0, err
    rep = json.loads(stdout)
    for k in ("cycles", "fps", "lut", "ff", "bram18k", "dsp"):
        assert rep["totals"][k] > 0
    assert rep["csim"]["within_tolerance"] and rep["csim"]["mismatched_images"] == 0
    for k in ("cycles", "cycles_without_skipping", "share_of_full_sweep", "ideal_share"):
        assert rep["lsb"][k] is not None, k
    rc, stdout, err = _cli(capsys, "report", model_path, "--images", 2, "--random-images")
    assert rc == 0 and "images/s" in stdout, err
    # the default is the per-lane design; --lsb-tiles gives the tile design (without the lanes' plane copies)
    assert rep["lsb"]["work_lists"] == "per lane" and rep["config"]["lsb_lanes"] and rep["fits"]
    assert rep["lsb"]["cycles"] <= rep["lsb"]["cycles_without_skipping"]
    rc, stdout, err = _cli(capsys, "report", model_path, "--images", 2, "--random-images", "--lsb-tiles", "--json")
    assert rc == 0, err
    tiles = json.loads(stdout)
    assert tiles["lsb"]["work_lists"] == "per tile" and not tiles["config"]["lsb_lanes"]
    assert tiles["totals"]["bram18k"] < rep["totals"]["bram18k"]
    rc, _, err = _cli(capsys, "report", model_path, "--lsb-lanes", "--no-lsb-skip")
    assert rc == 2 and "--no-lsb-skip" in err
    rc, _, err = _cli(capsys, "report", model_path, "--design", "published", "--lsb-lanes")
    assert rc == 2 and "per-lane" in err
    # a fracbnn checkpoint is exported on the fly (ResNet-32 here: another depth)
    from fracbnn.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "r32.pt", create_model("resnet32-fracbnn"))
    rc, stdout, err = _cli(capsys, "report", tmp_path / "r32.pt", "--lsb-density", 0.5, "--json")
    assert rc == 0, err
    rep = json.loads(stdout)
    assert len(rep["layers"]) == 2 + 31 and rep["totals"]["cycles"] > 0
    # a directory that is not a project: one-line error, exit 2
    rc, _, err = _cli(capsys, "csim", tmp_path)
    assert rc == 2 and "not a fracbnn hw project" in err
    # never writes into an unrelated non-empty directory
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    rc, _, err = _cli(capsys, "generate", model_path, "-o", tmp_path / "other", "--images", 1, "--random-images")
    assert rc == 2 and (tmp_path / "other" / "keep.txt").read_text() == "x"
