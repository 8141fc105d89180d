"""Model registry, forward/backward of every variant, summary totals, checkpoints."""

import json

import pytest
import torch

from fracbnn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from fracbnn.cli import main as cli_main
from fracbnn.errors import CheckpointError
from fracbnn.models import create_model, list_models
from fracbnn.nn import FracConv2d, set_conv_mode
from fracbnn.summary import summarize

CIFAR_NAMES = [n for n in list_models() if n.startswith("resnet")]


@pytest.mark.parametrize("name", [n for n in CIFAR_NAMES if n.startswith("resnet20")])
def test_forward_backward_every_resnet20_variant(name):
    model = create_model(name)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = model(x)
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", [n for n in CIFAR_NAMES if not n.startswith("resnet20")])
def test_deeper_variants_build_and_run(name):
    model = create_model(name, width=0.5, num_classes=3).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_options_width_classes_input_layer_and_modes():
    m = create_model("resnet20-fracbnn", width=2, num_classes=100, input_layer="float")
    assert m.fc.out_features == 100 and m.fc.in_features == 128
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    m = create_model("resnet20-bnn", act_bits=2)
    assert m.stages[0][0].conv1.input_quantizer.precision == 2
    m = create_model("resnet20-fracbnn", frac_mode="float")
    assert {c.mode for c in m.modules() if isinstance(c, FracConv2d)} == {"float"}


def test_unknown_model_and_option_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet21'.*resnet20-fracbnn"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="no option.*depth"):
        create_model("resnet20-fracbnn", depth=3)


def test_uint8_and_float_inputs_agree_and_batch_independent():
    # float64 so that batch-size-dependent conv summation order cannot flip a
    # quantizer decision (float32 rounding differences get amplified by them)
    model = create_model("resnet20-fracbnn").double().eval()
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = model(x)
        b = model(x.float() / 255)
        c = torch.cat([model(x[i : i + 1]) for i in range(5)])
    assert torch.equal(a, b)
    assert torch.allclose(a, c, rtol=1e-9, atol=1e-9)


def test_summary_totals_match_spec():
    t = summarize(create_model("resnet20-fracbnn")).totals
    assert t["binary_weight_bits"] == 281_088
    assert t["input_bmacs"] == 14_155_776
    assert t["msb_bmacs"] == 40_108_032
    assert t["lsb_bmacs"] == 40_108_032  # default density 1.0 (no measurement yet)
    assert t["effective_activation_bits"] == 2.0


def test_summary_density_option_and_measured_density():
    model = create_model("resnet20-fracbnn")
    t = summarize(model, lsb_density=0.4).totals
    assert t["lsb_bmacs"] == pytest.approx(0.4 * 40_108_032, abs=20)
    assert t["effective_activation_bits"] == pytest.approx(1.4, abs=1e-6)
    # measured statistics are used when present (all thresholds very high -> density 0)
    for m in model.modules():
        if isinstance(m, FracConv2d):
            m.threshold.data.fill_(1e9)
    model.eval()
    with torch.no_grad():
        model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    t = summarize(model).totals
    assert t["lsb_bmacs"] == 0 and t["effective_activation_bits"] == 1.0


def test_summary_baselines():
    bnn = summarize(create_model("resnet20-bnn")).totals
    assert bnn["binary_weight_bits"] == 281_088 and bnn["lsb_bmacs"] == 0
    assert bnn["effective_activation_bits"] == 1.0
    fp = summarize(create_model("resnet20-fp")).totals
    assert fp["binary_weight_bits"] == 0 and fp["total_bmacs"] == 0
    assert fp["float_macs"] > 40_000_000 and fp["effective_activation_bits"] == 32.0


def test_summary_cli_json(capsys):
    assert cli_main(["summary", "resnet20-fracbnn", "--json", "--lsb-density", "0.5"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("binary_weight_bits", "input_bmacs", "msb_bmacs", "lsb_bmacs", "float_params",
                "effective_activation_bits"):
        assert key in data["totals"]
    assert data["totals"]["lsb_bmacs"] == 20_054_016
    assert cli_main(["summary", "no-such-model"]) == 2
    assert "neither a model name" in capsys.readouterr().err


def test_checkpoint_roundtrip_and_mode(tmp_path):
    model = create_model("resnet20-fracbnn", width=0.5)
    set_conv_mode(model, "binary")
    path = save_checkpoint(tmp_path / "a.pt", model, epoch=3)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["model"]["kwargs"]["frac_mode"] == "binary"
    rebuilt = model_from_checkpoint(path).eval()
    model.eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_checkpoint_errors(tmp_path):
    model = create_model("resnet20-fracbnn", width=0.5)
    path = save_checkpoint(tmp_path / "a.pt", model)
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a fracbnn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    ckpt = load_checkpoint(path)
    ckpt["state_dict"]["bogus"] = torch.zeros(1)
    del ckpt["state_dict"]["fc.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: fc.bias; unexpected keys: bogus"):
        model_from_checkpoint(ckpt)


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "fracbnn.checkpoint", "version": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="unsafe"):
        load_checkpoint(tmp_path / "evil.pt")


def test_float_input_layer_on_single_channel_images():
    model = create_model("resnet20-fp", in_channels=1).eval()
    assert model(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)).shape == (2, 10)


def test_summary_of_checkpoint_uses_recorded_sparsity(tmp_path, capsys):
    model = create_model("resnet20-fracbnn", width=0.5)
    names = [n for n, m in model.named_modules() if isinstance(m, FracConv2d)]
    path = save_checkpoint(tmp_path / "a.pt", model, results={"sparsity": {n: 0.75 for n in names}})
    assert cli_main(["summary", str(path), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["lsb_bmacs"] == pytest.approx(0.25 * totals["msb_bmacs"], rel=1e-6)
    assert totals["effective_activation_bits"] == pytest.approx(1.25)


def test_densities_applied_to_rows_equal_a_fresh_summary():
    from fracbnn.summary import summary_totals, with_lsb_densities

    model = create_model("resnet20-fracbnn", width=0.5)
    names = [n for n, m in model.named_modules() if isinstance(m, FracConv2d)]
    dens = {n: (i % 5) / 5 for i, n in enumerate(names)}
    later = summary_totals(with_lsb_densities(summarize(model, lsb_density=1.0).rows, dens))
    assert later == summarize(model, layer_densities=dens).totals
    assert later["effective_activation_bits"] < 2.0
