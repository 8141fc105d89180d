"""`fracbnn import-reference`: checkpoints of the public FracBNN code (cornell-zhang/FracBNN).

The resnet20 fixtures were produced by running the reference model code itself
on random weights and random images (docs/import-reference.md says exactly
how); no reference code is part of this repository. The ReActNet layout is
checked structurally (its state dict is 115 MB, too large for a fixture) and
was verified against the reference code by the same procedure.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fracbnn.checkpoint import load_checkpoint, model_from_checkpoint
from fracbnn.cli import main
from fracbnn.errors import CheckpointError
from fracbnn.models import create_model
from fracbnn.nn import gate_statistics, reset_gate_statistics
from fracbnn.reference import LAYOUTS, ReferenceImportError, convert_reference, read_reference_state_dict

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference_resnet20():
    state = torch.load(FIXTURES / "reference_resnet20_state_dict.pt", weights_only=True)
    io = torch.load(FIXTURES / "reference_resnet20_io.pt", weights_only=True)
    return state, io


def _as_saved_by_reference(state: dict, io: dict, prefix: str = "module.") -> dict:
    """What cifar10.py writes: every key (DataParallel prefix) plus the encoder placeholder."""
    sd = {prefix + k: v for k, v in state.items()}
    sd[prefix + "encoder.placeholder"] = torch.zeros(io["placeholder_shape"])
    return sd


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_imported_resnet20_reproduces_reference_logits(tmp_path, capsys, reference_resnet20, prefix):
    state, io = reference_resnet20
    src = tmp_path / "model_binput-pg.pt"
    torch.save(_as_saved_by_reference(state, io, prefix), src)
    out = tmp_path / "imported.pt"
    assert main(["import-reference", str(src), "--arch", "resnet20", "-o", str(out)]) == 0
    assert "imported 278 tensors into resnet20-fracbnn" in capsys.readouterr().out

    ckpt = load_checkpoint(out)
    assert ckpt["model"]["name"] == "resnet20-fracbnn" and ckpt["model"]["kwargs"]["frac_mode"] == "frac"
    model = model_from_checkpoint(out).eval()
    reset_gate_statistics(model)
    with torch.no_grad():
        logits = model(io["images"])
    diff = (logits - io["logits"]).abs().max().item()
    assert diff <= TOLERANCE, f"imported model differs from the reference by {diff}"
    # Both paths of every fractional conv were exercised (the gates are neither all open nor all shut).
    densities = [s["density"] for s in gate_statistics(model).values()]
    assert len(densities) == 18 and 0.1 < min(densities) and max(densities) < 0.9


def test_a_wrong_mapping_would_be_detected(reference_resnet20):
    """Sanity check of the comparison itself: swapping two BNs of one block changes the logits."""
    state, io = reference_resnet20
    swapped = dict(state)
    swapped["layer2.1.bn3.weight"], swapped["layer2.1.bn4.weight"] = state["layer2.1.bn4.weight"], state["layer2.1.bn3.weight"]
    model, _ = convert_reference(swapped, "resnet20")
    with torch.no_grad():
        diff = (model(io["images"]) - io["logits"]).abs().max().item()
    assert diff > 100 * TOLERANCE


def test_reference_shapes_are_mapped(reference_resnet20):
    state, _ = reference_resnet20
    model, report = convert_reference(state, "resnet20")
    assert report["zero_binary_weights"] == 0 and report["ignored_keys"] == 0
    sd = model.state_dict()
    # thresholds and RPReLU shifts are (1, C, 1, 1) in the reference, (C,) here
    assert torch.equal(sd["stages.1.0.conv1.threshold"], state["layer2.0.conv1.threshold"].flatten())
    assert torch.equal(sd["stages.2.2.rprelu2.shift_out"], state["layer3.2.rprelu2.shift_y.bias"].flatten())
    assert torch.equal(sd["stages.0.1.rprelu1.slope"], state["layer1.1.rprelu1.prelu.weight"])
    assert torch.equal(sd["stages.0.1.bn_res1.running_var"], state["layer1.1.bn3.running_var"])
    assert torch.equal(sd["fc.weight"], state["linear.weight"])


def test_missing_and_unexpected_keys_are_named(tmp_path, capsys, reference_resnet20):
    state, io = reference_resnet20
    broken = _as_saved_by_reference(state, io)
    del broken["module.layer3.1.bn4.running_var"]
    broken["module.layer4.0.conv1.weight"] = torch.zeros(3)
    src = tmp_path / "broken.pt"
    torch.save(broken, src)
    out = tmp_path / "out.pt"
    assert main(["import-reference", str(src), "--arch", "resnet20", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "missing keys: layer3.1.bn4.running_var" in err
    assert "unexpected keys: layer4.0.conv1.weight" in err
    assert not out.exists()


def test_wrong_shape_and_wrong_arch_are_errors(reference_resnet20):
    state, _ = reference_resnet20
    bad = dict(state)
    bad["layer1.0.conv2.weight"] = torch.zeros(16, 16, 1, 1)
    with pytest.raises(ReferenceImportError, match=r"wrong shape keys: layer1\.0\.conv2\.weight \(16, 16, 1, 1\)"):
        convert_reference(bad, "resnet20")
    with pytest.raises(ReferenceImportError, match="missing keys: fc.weight"):
        convert_reference(state, "reactnet")
    with pytest.raises(ReferenceImportError, match="unknown reference architecture"):
        convert_reference(state, "vgg")


def test_unsafe_corrupt_and_existing_files(tmp_path, reference_resnet20):
    state, io = reference_resnet20
    pickled = tmp_path / "whole_model.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)  # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match="not a readable state dict"):
        read_reference_state_dict(pickled)
    truncated = tmp_path / "truncated.pt"
    good = tmp_path / "good.pt"
    torch.save(_as_saved_by_reference(state, io), good)
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_reference_state_dict(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        read_reference_state_dict(tmp_path / "absent.pt")

    out = tmp_path / "out.pt"
    out.write_bytes(b"precious")
    assert main(["import-reference", str(good), "--arch", "resnet20", "-o", str(out)]) == 2
    assert out.read_bytes() == b"precious"
    assert main(["import-reference", str(good), "--arch", "resnet20", "-o", str(out), "--force"]) == 0
    assert load_checkpoint(out)["imported_from"]["arch"] == "resnet20"


# ----------------------------------------------------------------- ReActNet layout
# Reference key names and shapes written out by hand from the public imagenet.py /
# model/fracbnn_imagenet.py layout (not generated by our converter).
REACTNET_REFERENCE_SAMPLES = {
    "model.0.0.weight": (32, 96, 3, 3),
    "model.0.1.running_mean": (32,),
    "model.1.conv3x3.0.weight": (32, 32, 3, 3),
    "model.1.conv3x3.0.threshold": (1, 32, 1, 1),
    "model.1.conv3x3.1.num_batches_tracked": (),
    "model.1.rprelu1.shift_x.bias": (1, 32, 1, 1),
    "model.1.rprelu1.prelu.weight": (32,),
    "model.1.shiftbn1.bias": (32,),
    "model.1.pointwise.0.weight": (64, 32, 1, 1),
    "model.1.pointwise.1.running_var": (64,),
    "model.1.rprelu2.shift_y.bias": (1, 64, 1, 1),
    "model.1.shiftbn2.weight": (64,),
    "model.12.conv3x3.0.weight": (512, 512, 3, 3),
    "model.12.pointwise.0.weight": (1024, 512, 1, 1),
    "model.12.pointwise.0.threshold": (1, 1024, 1, 1),
    "model.13.shiftbn2.running_mean": (1024,),
    "fc.weight": (1000, 1024),
    "fc.bias": (1000,),
}
# 1 stem conv + 5 stem BN + 13 blocks x (2 convs x 2 + 4 BNs x 5 + 2 RPReLUs x 3) + 2 fc
REACTNET_REFERENCE_KEYS = 1 + 5 + 13 * (2 * 2 + 4 * 5 + 2 * 3) + 2


@pytest.fixture(scope="module")
def reactnet_pair():
    """Our reactnet-fracbnn with random values, and the same values in the reference layout."""
    torch.manual_seed(0)
    ours = create_model("reactnet-fracbnn")
    sd = {k: (torch.randn(v.shape) if v.is_floating_point() else torch.randint(0, 9, v.shape))
          for k, v in ours.state_dict().items()}
    layout = LAYOUTS["reactnet"]
    ref = {}
    for key, value in sd.items():
        ref_key = layout.ref_key(key)
        want = REACTNET_REFERENCE_SAMPLES.get(ref_key)
        if key.endswith(("threshold", "shift_in", "shift_out")):
            value = value.view(1, -1, 1, 1)
        ref[ref_key] = value
        if want is not None:
            assert tuple(value.shape) == want, ref_key
    return sd, ref


def test_reactnet_reference_key_set(reactnet_pair):
    _, ref = reactnet_pair
    assert len(ref) == REACTNET_REFERENCE_KEYS == 398
    assert set(REACTNET_REFERENCE_SAMPLES) <= set(ref)


def test_reactnet_import_is_strict_and_drops_teacher(tmp_path, capsys, reactnet_pair):
    sd, ref = reactnet_pair
    saved = {"module." + k: v for k, v in ref.items()}
    saved["module.encoder.placeholder"] = torch.zeros(2, 3, 32, 1, 1)
    saved["module.img_mean"] = torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1)
    saved["module.img_std"] = torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1)
    saved["module.teacher.fc.weight"] = torch.randn(1000, 2048)
    saved["module.teacher.fc.bias"] = torch.randn(1000)
    src = tmp_path / "model_imagenet.pt"
    torch.save(saved, src)
    out, teacher = tmp_path / "reactnet.pt", tmp_path / "teacher.pt"
    assert main(["import-reference", str(src), "--arch", "reactnet", "-o", str(out), "--teacher-out", str(teacher)]) == 0
    text = capsys.readouterr().out
    assert "imported 398 tensors into reactnet-fracbnn (1000 classes)" in text and "teacher: 2 tensors" in text
    loaded = model_from_checkpoint(out).state_dict()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert sorted(torch.load(teacher, weights_only=True)) == ["fc.bias", "fc.weight"]

    # strictness: a key of our model the file lacks, and a reference key we do not know
    del saved["module.model.7.shiftbn1.running_mean"]
    saved["module.model.14.conv3x3.0.weight"] = torch.zeros(1)
    with pytest.raises(ReferenceImportError) as e:
        convert_reference(saved, "reactnet")
    assert "missing keys: model.7.shiftbn1.running_mean" in str(e.value)
    assert "unexpected keys: model.14.conv3x3.0.weight" in str(e.value)


def test_reactnet_foreign_normalisation_is_rejected(reactnet_pair):
    _, ref = reactnet_pair
    odd = dict(ref, img_mean=torch.tensor([0.5, 0.5, 0.5]).view(1, -1, 1, 1))
    with pytest.raises(ReferenceImportError, match="img_mean"):
        convert_reference(odd, "reactnet")


def test_zero_weights_are_reported(reference_resnet20, capsys, tmp_path):
    state, io = reference_resnet20
    zeroed = dict(state)
    w = state["layer1.0.conv1.weight"].clone()
    w.view(-1)[:3] = 0
    zeroed["layer1.0.conv1.weight"] = w
    _, report = convert_reference(zeroed, "resnet20")
    assert report["zero_binary_weights"] == 3
    src = tmp_path / "z.pt"
    torch.save(zeroed, src)
    assert main(["import-reference", str(src), "--arch", "resnet20", "-o", str(tmp_path / "o.pt")]) == 0
    assert "3 binary weights are exactly 0" in capsys.readouterr().out


def test_imported_resnet20_records_its_data_so_eval_needs_no_dataset(tmp_path, reference_resnet20, monkeypatch,
                                                                     capsys):
    """cifar10.py trains on CIFAR-10: the checkpoint says so, and `fracbnn eval CKPT --data ...` uses it."""
    state, io = reference_resnet20
    src = tmp_path / "ref.pt"
    torch.save(_as_saved_by_reference(state, io), src)
    out = tmp_path / "imported.pt"
    assert main(["import-reference", str(src), "--arch", "resnet20", "-o", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["dataset"] == {"name": "cifar10"} and ckpt["input_size"] == [3, 32, 32]
    assert ckpt["classes"][:2] == ["airplane", "automobile"] and len(ckpt["classes"]) == 10
    from test_data_datasets import make_fake_cifar10

    archive = tmp_path / "cifar-10-python.tar.gz"
    make_fake_cifar10(archive)
    monkeypatch.setenv("FRACBNN_CACHE", str(tmp_path / "cache"))
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(archive), "--json", "--device", "cpu"]) == 0
    assert '"dataset": "cifar10"' in capsys.readouterr().out
    # ... and so does the packed model exported from it (both engines, no --dataset)
    fbnn = tmp_path / "imported.fbnn"
    assert main(["export", str(out), "-o", str(fbnn)]) == 0
    from fracbnn.ir import PackedModel

    assert PackedModel.load(fbnn).meta["dataset"] == "cifar10"
    capsys.readouterr()
    assert main(["eval", str(fbnn), "--data", str(archive), "--json"]) == 0
    assert '"dataset": "cifar10"' in capsys.readouterr().out
