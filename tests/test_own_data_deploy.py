"""Your own data through export, eval (both engines), infer and hw: the dataset and preprocessing travel
with the packed model, image folders are evaluated batch by batch, the hw testbench takes your images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fracbnn.checkpoint import save_checkpoint
from fracbnn.cli import main
from fracbnn.deploy import PackedModel, get_engine
from fracbnn.deploy.fast import available as fast_available
from fracbnn.models import create_model

PIL = pytest.importorskip("PIL.Image")
ENGINES = ["golden"] + (["fast"] if fast_available() else [])
CLASSES = [f"c{k}" for k in range(4)]


def _image(k: int, rng, size=28) -> np.ndarray:
    """A grey image of class k: a bright block in quadrant k over dark noise."""
    img = rng.integers(0, 60, (size, size)).astype(np.uint8)
    r, c = divmod(k, 2)
    h = size // 2
    img[r * h:(r + 1) * h, c * h:(c + 1) * h] = rng.integers(180, 256, (h, h))
    return img


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A grey 28x28 image folder (4 classes, 3 train / 2 val each) and a 1x28x28 model exported from a checkpoint."""
    d = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for k, name in enumerate(CLASSES):
            (d / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                PIL.fromarray(_image(k, rng), mode="L").save(d / "data" / split / name / f"{i}.png")
    model = create_model("resnet20-fracbnn", num_classes=4, in_channels=1, width=0.25)
    model.input_size, model.classes = (1, 28, 28), CLASSES
    save_checkpoint(d / "m.pt", model, config={"data": {"name": "imagefolder", "root": str(d / "data"), "mode": "L"}})
    assert main(["export", str(d / "m.pt"), "-o", str(d / "m.fbnn")]) == 0
    return d


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_export_records_dataset_and_preprocessing(own, tmp_path):
    meta = PackedModel.load(own / "m.fbnn").meta
    assert meta["dataset"] == "imagefolder"
    assert meta["preprocess"] == {"mode": "L", "resize": None, "crop": None}
    # a recipe that resized its image folder records the size; an ImageNet recipe resize 256 / centre crop 224
    from fracbnn.deploy.preprocess import data_meta

    class M:  # only the attributes data_meta reads
        dataset, data_options = "imagefolder", {"image_size": [28, 28], "mode": "L"}

    assert data_meta(M(), (1, 28, 28))["preprocess"] == {"mode": "L", "resize": [28, 28], "crop": None}
    M.dataset, M.data_options = "imagenet", {}
    assert data_meta(M(), (3, 224, 224)) == {"dataset": "imagenet",
                                             "preprocess": {"mode": "RGB", "resize": 256, "crop": 224}}


@pytest.mark.parametrize("engine", ENGINES)
def test_eval_fbnn_on_an_image_folder(own, capsys, engine):
    """`eval X.fbnn --data DIR` uses the recorded dataset; every val image is scored, as the engine scores them."""
    assert main(["eval", str(own / "m.fbnn"), "--data", str(own / "data"), "--engine", engine,
                 "--batch-size", "3", "--json"]) == 0
    res = _json(capsys)
    assert res["dataset"] == "imagefolder" and res["images"] == 8 and res["engine"] == engine
    # the same figure from the engine on the decoded files, computed here
    from fracbnn.data import ImageFolderDataset

    ds = ImageFolderDataset(own / "data", "test", mode="L")
    x = np.stack([ds[i][0].numpy() for i in range(len(ds))])
    y = np.array(ds.labels)
    eng = get_engine("golden")(PackedModel.load(own / "m.fbnn"))
    assert res["top1"] == pytest.approx(float((eng.logits(x).argmax(1) == y).mean()))
    assert 1.0 <= res["effective_activation_bits"] <= 2.0


def test_effective_bits_match_the_checkpoint_eval(tmp_path, capsys):
    """The .fbnn eval reports effective_activation_bits (both engines), close to the checkpoint eval's."""
    pytest.importorskip("sklearn")
    model = create_model("resnet20-fracbnn", num_classes=10, in_channels=1, width=0.25, threshold_init=0.0)
    model.input_size = (1, 8, 8)
    save_checkpoint(tmp_path / "d.pt", model, config={"data": {"name": "digits"}})
    assert main(["export", str(tmp_path / "d.pt"), "-o", str(tmp_path / "d.fbnn")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "d.pt"), "--limit", "60", "--json"]) == 0
    want = _json(capsys)["effective_activation_bits"]
    got = []
    for engine in ENGINES:
        assert main(["eval", str(tmp_path / "d.fbnn"), "--engine", engine, "--limit", "60", "--json"]) == 0
        got.append(_json(capsys)["effective_activation_bits"])
    assert len(set(got)) == 1  # the engines count the same gates
    assert 1.0 < want < 2.0 and got[0] == pytest.approx(want, abs=0.01)


def test_old_fbnn_without_dataset_falls_back_to_cifar10_with_a_note(own, tmp_path, capsys):
    packed = PackedModel.load(own / "m.fbnn")
    meta = {k: v for k, v in packed.meta.items() if k not in ("dataset", "preprocess", "tensors")}
    PackedModel(meta, packed.tensors).save(tmp_path / "old.fbnn")
    assert main(["eval", str(tmp_path / "old.fbnn"), "--data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "before models recorded their dataset; evaluating on cifar10" in err and "Traceback" not in err
    # the user can still name their data
    assert main(["eval", str(tmp_path / "old.fbnn"), "--dataset", "imagefolder", "--data", str(own / "data"),
                 "--json"]) == 0
    assert _json(capsys)["images"] == 8


def test_infer_applies_the_recorded_resize(own, tmp_path, capsys):
    """A model trained on a resized image folder resizes like training did; one used as-is refuses other sizes."""
    packed = PackedModel.load(own / "m.fbnn")
    meta = dict(packed.meta, preprocess={"mode": "L", "resize": [28, 28], "crop": None})
    meta.pop("tensors", None)
    PackedModel(meta, packed.tensors).save(tmp_path / "r.fbnn")
    big = PIL.fromarray(_image(3, np.random.default_rng(5), size=40), mode="L")
    big.convert("RGB").save(tmp_path / "big.png")
    small = big.resize((28, 28), PIL.BILINEAR)  # what ImageFolderDataset(image_size=(28, 28)) does
    small.save(tmp_path / "small.png")
    assert main(["infer", str(tmp_path / "r.fbnn"), str(tmp_path / "big.png"), str(tmp_path / "small.png"),
                 "--top", "4", "--json"]) == 0
    a, b = json.loads(capsys.readouterr().out)
    assert a["predictions"] == b["predictions"]
    assert main(["infer", str(own / "m.fbnn"), str(tmp_path / "big.png")]) == 2
    assert "40x40 pixels; the model takes 28x28" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the C testbench")
def test_hw_generate_csim_report_on_your_images(own, tmp_path, capsys):
    out = tmp_path / "prj"
    assert main(["hw", "generate", str(own / "m.fbnn"), "-o", str(out), "--data", str(own / "data"),
                 "--images", "5", "--calib-images", "4"]) == 0
    assert "imagefolder test images" in capsys.readouterr().out
    meta = json.loads((out / "hw_project.json").read_text())
    assert meta["test_images"]["count"] == 5 and "imagefolder" in meta["test_images"]["origin"]
    assert main(["hw", "csim", str(out)]) == 0
    assert "CSIM PASSED" in capsys.readouterr().out
    assert main(["hw", "report", str(own / "m.fbnn"), "--data", str(own / "data"), "--images", "3", "--json"]) == 0
    assert "imagefolder" in json.loads(capsys.readouterr().out)["source"]


@pytest.mark.parametrize("channels", [1, 3])
def test_hw_any_input_size_with_random_images_when_asked(tmp_path, capsys, channels):
    """A Cx28x28 model with no recorded data: random pixels only with --random-images, in the model's shape."""
    from fracbnn.deploy import export_model

    model = create_model("resnet20-fracbnn", num_classes=10, in_channels=channels, width=0.25).eval()
    model.input_size = (channels, 28, 28)
    export_model(model).save(tmp_path / "m.fbnn")
    args = [str(tmp_path / "m.fbnn"), "--images", "2"]
    assert main(["hw", "generate", *args, "-o", str(tmp_path / "p"), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "nowhere does not exist" in err and "--random-images" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()  # nothing generated from a failed start
    assert main(["hw", "report", *args, "--data", str(tmp_path / "nowhere")]) == 2
    capsys.readouterr()
    assert main(["hw", "generate", *args, "-o", str(tmp_path / "p"), "--random-images"]) == 0
    assert "random uint8 images" in capsys.readouterr().out
    assert main(["hw", "report", *args, "--random-images", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["cycles"] > 0


def test_hw_wrong_data_for_the_model_is_an_error(own, tmp_path, capsys):
    """Images of another shape than the model's (RGB 28x28 CIFAR-like data for a grey model) are refused."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        (tmp_path / "rgb" / split / "a").mkdir(parents=True)
        PIL.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "rgb" / split / "a" / "0.png")
    assert main(["hw", "generate", str(own / "m.fbnn"), "-o", str(tmp_path / "p"),
                 "--data", str(tmp_path / "rgb")]) == 2
    err = capsys.readouterr().err
    assert "(1, 32, 32)" in err and "takes (1, 28, 28)" in err


def test_resize_and_centre_crop_models(own, tmp_path, capsys):
    """ImageNet-style preprocessing (short side to S, centre crop C) in eval and infer, as the dataset does it."""
    pytest.importorskip("torchvision")
    from fracbnn.data.imagenet import ImageNetEvalTransform
    from fracbnn.deploy import export_model

    model = create_model("resnet20-fracbnn", num_classes=2, width=0.25).eval()
    model.input_size, model.dataset, model.data_options = (3, 16, 16), "imagenet", {"eval_resize": 18}
    packed = export_model(model)
    assert packed.meta["preprocess"] == {"mode": "RGB", "resize": 18, "crop": 16}
    packed.save(tmp_path / "i.fbnn")
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "inet" / split / cls).mkdir(parents=True)
            PIL.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(tmp_path / "inet" / split / cls / "0.png")
    assert main(["eval", str(tmp_path / "i.fbnn"), "--data", str(tmp_path / "inet"), "--json"]) == 0
    assert _json(capsys)["images"] == 2
    src = tmp_path / "inet" / "val" / "a" / "0.png"
    assert main(["infer", str(tmp_path / "i.fbnn"), str(src), "--top", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["predictions"]
    with PIL.open(src) as im:
        x = ImageNetEvalTransform(crop=16, resize=18)(im.convert("RGB")).numpy()[None]
    want = get_engine("golden")(packed).scores(x)[0]
    assert [p["logit"] for p in got] == pytest.approx(sorted(want.tolist(), reverse=True))
