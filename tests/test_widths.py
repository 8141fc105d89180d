"""Per-layer residual widths from calibration images: no silent saturation, engines follow the widths."""

import json

import numpy as np
import pytest
import torch

from exportable import data_like_model, family_images
from fracbnn.deploy import FixedPoint, export_model, get_engine
from fracbnn.deploy.fast import available as fast_available
from fracbnn.deploy.widths import calibrated_export, saturation_report


@pytest.fixture(scope="module")
def loud_model():
    """A data-like ResNet whose last block outputs reach far beyond the default |x| < 16."""
    import copy

    model = copy.deepcopy(data_like_model("resnet20-fracbnn"))
    with torch.no_grad():
        last = model.stages[-1][-1].bn_res2
        last.weight.mul_(12.0)
        last.bias.add_(3.0)
    return model


def test_default_widths_saturate_and_calibrated_widths_do_not(loud_model):
    cal, test = family_images("resnet20-fracbnn", 24, seed=3), family_images("resnet20-fracbnn", 12, seed=4)
    default = export_model(loud_model)
    clipped = {k: c for k, (c, _) in saturation_report(default, test.numpy()).items() if c}
    assert "stages.2.2.out" in clipped
    packed, report = calibrated_export(loud_model, FixedPoint(), cal.numpy())
    widths = {n["output"]: n["bits"] for n in packed.program if n["op"] in ("scale_shift", "block_post")}
    assert widths["stages.2.2.out"] > 27 and min(widths.values()) >= 22 + 2
    assert packed.meta["calibration"]["residual_bits"] == widths
    assert not any(c for c, _ in saturation_report(packed, test.numpy()).values())
    assert max(packed.meta["accumulator_bits"].values()) <= 64
    # per-layer widths follow PyTorch where the global width clipped
    with torch.no_grad():
        ref = loud_model(test).double().numpy()
    fitted = get_engine("golden")(packed).scores(test.numpy())
    clipped_scores = get_engine("golden")(default).scores(test.numpy())
    assert np.abs(fitted - ref).max() < 1e-3 < np.abs(clipped_scores - ref).max()


@pytest.mark.parametrize("simd", [True, False])
def test_fast_engine_counts_saturation_like_golden(loud_model, simd):
    """Both engines count, per saturating node, the values clipped to its width (eval reports the sum)."""
    if not fast_available():
        pytest.fail("the fast engine's C extension is not built (python setup.py build_ext --inplace)")
    x = family_images("resnet20-fracbnn", 10, seed=6).numpy()
    packed = export_model(loud_model, FixedPoint(frac_bits=22, residual_bits=25))
    gold, fast = get_engine("golden")(packed), get_engine("fast")(packed, threads=2, simd=simd)
    assert np.array_equal(gold.logits(x[:7]), fast.logits(x[:7]))  # by-image and shared-image thread paths
    assert np.array_equal(gold.logits(x[7:]), fast.logits(x[7:]))
    assert fast.saturation_counts == gold.saturation_counts
    assert sum(c for c, _ in fast.saturation_counts.values()) > 0 and len(fast.saturation_counts) == 19


@pytest.mark.skipif(not fast_available(), reason="fast engine extension not built")
def test_engines_identical_with_per_layer_widths(loud_model):
    cal = family_images("resnet20-fracbnn", 16, seed=3).numpy()
    packed, _ = calibrated_export(loud_model, FixedPoint(), cal)
    x = family_images("resnet20-fracbnn", 9, seed=5).numpy()
    assert np.array_equal(get_engine("golden")(packed).logits(x), get_engine("fast")(packed).logits(x))


def test_export_cli_auto_widths_and_warnings(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from fracbnn.checkpoint import save_checkpoint
    from fracbnn.cli import main
    from fracbnn.models import create_model
    from fracbnn.models.calibrate import data_like

    model = create_model("resnet20-fracbnn", num_classes=10, in_channels=1, width=0.25)
    data_like(model, torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8))
    model.input_size = (1, 8, 8)
    with torch.no_grad():
        model.stages[-1][-1].bn_res2.weight.mul_(12.0)  # drive the last block past |x| < 16
    ckpt = save_checkpoint(tmp_path / "d.pt", model, dataset={"name": "digits"})
    assert main(["export", str(ckpt), "-o", str(tmp_path / "a.fbnn"), "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "saturate" in out and "--residual-bits auto" in out
    assert main(["export", str(ckpt), "-o", str(tmp_path / "b.fbnn"), "--residual-bits", "auto", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["saturated_values"] == 0 and max(res["residual_bits_by_layer"].values()) > 27
    assert main(["eval", str(tmp_path / "a.fbnn"), "--engine", "golden", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["saturated_values"] > 0
    assert main(["export", str(ckpt), "-o", str(tmp_path / "c.fbnn"), "--residual-bits", "many"]) == 2
    assert "--residual-bits must be a number of bits or 'auto'" in capsys.readouterr().err


def test_export_cli_frac_bits_auto(tmp_path, capsys):
    """--frac-bits auto: per-layer F recorded in the .fbnn, agreement reported on both calibration halves,
    the engines identical on the result; bad values get one-line errors and write nothing."""
    pytest.importorskip("sklearn")
    from fracbnn.checkpoint import save_checkpoint
    from fracbnn.cli import main
    from fracbnn.ir.model import PackedModel
    from fracbnn.models import create_model
    from fracbnn.models.calibrate import data_like

    model = create_model("resnet20-fracbnn", num_classes=10, in_channels=1, width=0.25)
    data_like(model, torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8))
    model.input_size = (1, 8, 8)
    ckpt = save_checkpoint(tmp_path / "d.pt", model, dataset={"name": "digits"})
    out = tmp_path / "f.fbnn"
    assert main(["export", str(ckpt), "-o", str(out), "--frac-bits", "auto", "--agreement", "0.9",
                 "--calibrate", "40", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    frac = res["frac_bits_by_layer"]
    assert frac and set(frac) == set(res["residual_bits_by_layer"]) and max(frac.values()) <= 22
    assert min(frac.values()) < 22  # a 10-class toy at 90 %: some layer needs fewer than the default 22 bits
    packed = PackedModel.load(out)
    cal = packed.meta["calibration"]
    assert cal["agreement"] >= 0.9 and cal["agreement_held_out"] >= 0.9 and cal["frac_bits"] == frac
    for n in packed.program:  # each quantizer reads its input's F, each saturating node fits its F
        if n["op"] == "quantize2" and n["input"] in frac:
            assert n["frac_bits"] == frac[n["input"]]
        if n["op"] in ("scale_shift", "block_post"):
            assert n["bits"] >= frac[n["output"]] + 2
    x = family_images("resnet20-fracbnn", 5, seed=7)[:, :1, :8, :8].numpy()
    if fast_available():
        assert np.array_equal(get_engine("golden")(packed).logits(x), get_engine("fast")(packed).logits(x))
    for bad, msg in ((["--frac-bits", "many"], "--frac-bits must be a number of bits or 'auto'"),
                     (["--frac-bits", "auto", "--agreement", "2"], "--agreement must be a fraction")):
        assert main(["export", str(ckpt), "-o", str(tmp_path / "x.fbnn"), *bad]) == 2
        assert msg in capsys.readouterr().err
        assert not (tmp_path / "x.fbnn").exists()
