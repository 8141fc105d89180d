"""fracbnn export / infer / bench / eval on .fbnn files, including bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fracbnn.checkpoint import model_from_checkpoint, save_checkpoint
from fracbnn.cli import main
from fracbnn.deploy.fast import available as fast_available
from fracbnn.models import create_model

from conftest import skip_or_fail_without_c

DATASETS = Path(os.environ.get("FRACBNN_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("deploycli")
    # no class names recorded, but the config says CIFAR-10: export names the CIFAR-10 classes
    save_checkpoint(d / "m.pt", create_model("resnet20-fracbnn", width=0.25), config={"data": {"name": "cifar10"}})
    save_checkpoint(d / "fp.pt", create_model("resnet20-fp", width=0.25))
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "ok.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "ok.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(d / "big.png")
    (d / "notes.png").write_text("not an image")
    assert main(["export", str(d / "m.pt"), "-o", str(d / "m.fbnn")]) == 0
    return d


def test_export_reports_sizes_and_refuses_overwrite(files, capsys):
    out = files / "j.fbnn"
    assert main(["export", str(files / "m.pt"), "-o", str(out), "--json", "--frac-bits", "6"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bytes"] == out.stat().st_size < res["checkpoint_bytes"]
    assert res["fixed_point"]["frac_bits"] == 6
    before = out.read_bytes()
    assert main(["export", str(files / "m.pt"), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before


@pytest.mark.parametrize("argv,needle", [
    (["export", "{d}/fp.pt", "-o", "{d}/fp.fbnn"], "nothing to binarize"),
    (["export", "{d}/missing.pt", "-o", "{d}/x.fbnn"], "not found"),
    (["export", "{d}/m.pt", "-o", "{d}/x.fbnn", "--frac-bits", "40"], "--frac-bits"),
    (["infer", "{d}/m.fbnn", "{d}/big.png"], "40x48 pixels; the model takes 32x32"),
    (["infer", "{d}/m.fbnn", "{d}/notes.png"], "not a readable PNG/JPEG"),
    (["infer", "{d}/m.pt", "{d}/ok.png"], "not a FracBNN packed model"),
    (["infer", "{d}/m.fbnn", "{d}/ok.png", "--engine", "warp"], "unknown engine"),
    (["bench", "{d}/ok.png"], "not a FracBNN packed model"),
])
def test_bad_input_gives_one_line_error(files, capsys, argv, needle):
    assert main([a.format(d=files) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_infer_prints_class_and_score(files, capsys):
    assert main(["infer", str(files / "m.fbnn"), str(files / "ok.png"), str(files / "ok.jpg"), "--json",
                 "--top", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 2 and len(res[0]["predictions"]) == 3
    p = res[0]["predictions"]
    assert p[0]["logit"] >= p[1]["logit"] >= p[2]["logit"] and 0 <= p[0]["probability"] <= 1
    assert p[0]["name"] in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert main(["infer", str(files / "m.fbnn"), str(files / "ok.png")]) == 0
    assert "ok.png: " in capsys.readouterr().out


def test_export_records_input_size_and_class_names(tmp_path, capsys):
    """A 1-channel 8x8 model (like the digits quickstart's): its size and class names reach the .fbnn."""
    from fracbnn.deploy import PackedModel

    model = create_model("resnet20-fracbnn", width=0.25, in_channels=1, num_classes=4)
    model.input_size = (1, 8, 8)
    model.classes = ["zero", "one", "two", "three"]
    save_checkpoint(tmp_path / "d.pt", model, config={"data": {"name": "digits"}})
    restored = model_from_checkpoint(tmp_path / "d.pt")
    assert restored.input_size == (1, 8, 8) and restored.classes == model.classes
    assert main(["export", str(tmp_path / "d.pt"), "-o", str(tmp_path / "d.fbnn")]) == 0
    packed = PackedModel.load(tmp_path / "d.fbnn")
    assert packed.input_size == (1, 8, 8)
    assert packed.class_names == ["zero", "one", "two", "three"]
    # the engines run it at that size
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8), dtype=np.uint8)
    assert main(["bench", str(tmp_path / "d.fbnn"), "--engines", "golden", "--batch-size", "2", "--batches", "1",
                 "--json"]) == 0
    capsys.readouterr()
    from fracbnn.deploy import get_engine

    assert get_engine("golden")(packed).logits(x).shape == (2, 4)


def test_export_without_recorded_names_uses_class_indices(tmp_path):
    """Nothing says what the outputs are (no classes, no CIFAR-10 config): no CIFAR-10 guess."""
    from fracbnn.deploy import PackedModel

    save_checkpoint(tmp_path / "n.pt", create_model("resnet20-fracbnn", width=0.25))
    assert main(["export", str(tmp_path / "n.pt"), "-o", str(tmp_path / "n.fbnn")]) == 0
    packed = PackedModel.load(tmp_path / "n.fbnn")
    assert packed.class_names == [str(k) for k in range(10)] and packed.input_size == (3, 32, 32)


def test_bench_runs_and_compares_engines(files, capsys):
    engines = ["golden"] + (["fast"] if fast_available() else [])
    assert main(["bench", str(files / "m.fbnn"), "--engines", ",".join(engines), "--batch-size", "2",
                 "--batches", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["engine"] for r in res["results"]] == engines
    assert all(r["images_per_second"] > 0 for r in res["results"])
    assert res["results"][0]["identical_to_first"] is None
    assert all(r["identical_to_first"] is True for r in res["results"][1:])


def test_cli_subprocess_truncated_file_no_traceback(files, tmp_path):
    bad = tmp_path / "cut.fbnn"
    bad.write_bytes((files / "m.fbnn").read_bytes()[:-100])
    r = subprocess.run([sys.executable, "-m", "fracbnn.cli", "infer", str(bad), str(files / "ok.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "SHA-256" in r.stderr


@pytest.mark.skipif(not (DATASETS / "cifar-10-python.tar.gz").exists(), reason="CIFAR-10 not in ../shared/datasets")
@pytest.mark.parametrize("engine", ["golden", "fast"])
def test_eval_packed_on_cifar_json(files, capsys, engine):
    if engine == "fast" and not fast_available():
        skip_or_fail_without_c("fast engine extension not built")
    assert main(["eval", str(files / "m.fbnn"), "--data", str(DATASETS), "--engine", engine, "--limit", "20",
                 "--batch-size", "7", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["images"] == 20 and 0.0 <= res["top1"] <= 1.0 and res["engine"] == engine
    assert 0.0 <= res["lsb_density"] <= 1.0 and len(res["sparsity"]) == 18  # both engines count the gates
