"""The CLI on every exportable model family: export, eval with both engines, infer and bench."""

import json

import numpy as np
import pytest

from exportable import EXPORTABLE, data_like_model
from fracbnn.checkpoint import save_checkpoint
from fracbnn.cli import main

pytest.importorskip("PIL")


def _imagenet_folder(root, n_classes=3, per_class=2):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(n_classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):  # odd sizes: the recorded resize + centre crop must apply
                Image.fromarray(rng.integers(0, 256, (70 + 9 * i, 90, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("name", sorted(EXPORTABLE))
def test_export_infer_bench(name, tmp_path, capsys):
    from PIL import Image

    ckpt = save_checkpoint(tmp_path / "m.pt", data_like_model(name))
    out = tmp_path / "m.fbnn"
    assert main(["export", str(ckpt), "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == name
    c, h, w = EXPORTABLE[name][1]
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(img)
    for engine in ("golden", "fast"):
        assert main(["infer", str(out), str(img), "--engine", engine, "--json"]) == 0
    golden, fast = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert golden == fast
    assert main(["bench", str(out), "--engines", "golden,fast", "--batch-size", "2", "--batches", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["engine"] for r in res["results"]] == ["golden", "fast"]
    assert res["results"][1]["identical_to_first"] is True, res


@pytest.mark.parametrize("name", ["reactnet-fracbnn"])
def test_imagenet_model_eval_uses_recorded_preprocessing(name, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", data_like_model(name))
    out = tmp_path / "m.fbnn"
    assert main(["export", str(ckpt), "-o", str(out)]) == 0
    from fracbnn.ir import PackedModel

    meta = PackedModel.load(out).meta
    assert meta["dataset"] == "imagenet" and meta["preprocess"]["crop"] == EXPORTABLE[name][1][1]
    data = _imagenet_folder(tmp_path / "inet")
    results = []
    for engine in ("golden", "fast"):
        assert main(["eval", str(out), "--data", str(data), "--engine", engine, "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    g, f = results
    assert g["images"] == f["images"] == 6 and g["dataset"] == "imagenet"
    for key in ("top1", "top5", "lsb_density", "sparsity", "effective_activation_bits"):
        assert g[key] == f[key], key
    assert 1.0 < g["effective_activation_bits"] < 2.0


@pytest.mark.parametrize("name", ["reactnet-fracbnn"])
def test_hardware_generation_from_an_exported_file(name, tmp_path, capsys):
    """`hw generate` writes the ImageNet accelerator for an exported ReActNet FracBNN (tests/test_hw_reactnet.py
    checks csim); `hw report` of the packed model measures its gates and reports the ImageNet design."""
    ckpt = save_checkpoint(tmp_path / "m.pt", data_like_model(name))
    out = tmp_path / "m.fbnn"
    assert main(["export", str(ckpt), "-o", str(out)]) == 0
    assert main(["hw", "generate", str(out), "-o", str(tmp_path / "prj"), "--random-images", "--images", "2"]) == 0
    assert (tmp_path / "prj" / "params.bin").is_file()
    capsys.readouterr()
    assert main(["hw", "report", str(out), "--random-images", "--images", "2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["family"] == "reactnet" and rep["totals"]["fps"] > 0 and rep["totals"]["dram_bytes"] > 0
    assert "gates measured on 2" in rep["source"]
