"""Your own image folder end to end: recipe options, class-balanced limits, up-front file checks (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from fracbnn.checkpoint import load_checkpoint
from fracbnn.cli import main
from fracbnn.data import load_dataset
from fracbnn.errors import FracBNNError
from fracbnn.train import ConfigError, load_recipe, train
from fracbnn.train.trainer import balanced_limit

Image = pytest.importorskip("PIL.Image")


def make_grey_folder(root: Path, classes: int = 4, train_per_class: int = 6, val_per_class: int = 2,
                     size: int = 12) -> Path:
    """A grayscale ImageFolder: each class a different brightness with a little noise."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = 30 + 60 * c
                pix = (base + torch.randint(0, 20, (size, size), generator=g)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pix.numpy(), mode="L").save(d / f"{i:03d}.png")
    return root


def grey_recipe(tmp_path: Path, root: Path, **data) -> Path:
    recipe = {
        "name": "grey", "seed": 0, "device": "cpu",
        "model": {"name": "resnet20-fracbnn", "kwargs": {"width": 0.25, "in_channels": 1}},
        "data": {"name": "imagefolder", "root": str(root), "mode": "grayscale", "image_size": [8, 8],
                 "augment": "none", "batch_size": 8, "eval_batch_size": 8, **data},
        "runtime": {"threads": 1, "checkpoint_every": 0, "tensorboard": False, "progress": False},
        "steps": [{"name": "s1", "conv_mode": "frac", "epochs": 1}],
    }
    path = tmp_path / "grey.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_grayscale_recipe_trains_one_channel_model_and_eval_reuses_its_options(tmp_path, capsys):
    root = make_grey_folder(tmp_path / "imgs")
    cfg = load_recipe(grey_recipe(tmp_path, root))
    assert cfg["data"]["mode"] == "L" and cfg["data"]["image_size"] == [8, 8]
    res = train(cfg, tmp_path / "run")
    assert res["s1"]["count"] == 8
    ckpt = load_checkpoint(tmp_path / "run" / "final.pt")
    assert ckpt["input_size"] == [1, 8, 8] and ckpt["classes"] == ["c0", "c1", "c2", "c3"]
    assert ckpt["dataset"] == {"name": "imagefolder", "image_size": [8, 8], "mode": "L"}
    # eval finds data, size and colour mode in the checkpoint: no --dataset, no options
    assert main(["eval", str(tmp_path / "run" / "final.pt"), "--json"]) == 0
    assert '"images": 8' in capsys.readouterr().out


def test_image_options_only_for_imagefolder_and_validated():
    with pytest.raises(ConfigError, match="imagefolder data only"):
        load_recipe(None, ["data.name=digits", "data.mode=L", "steps=[{epochs: 1}]"])
    for bad in ("data.mode=CMYK", "data.image_size=[0, 4]", "data.image_size=[4]", "data.image_size=abc"):
        with pytest.raises(ConfigError, match=r"data\.(mode|image_size) must"):
            load_recipe(None, ["data.name=imagefolder", bad, "steps=[{epochs: 1}]"])
    assert load_recipe(None, ["data.name=imagefolder", "data.image_size=28", "steps=[{epochs: 1}]"]
                       )["data"]["image_size"] == [28, 28]


def test_limit_takes_the_same_number_from_every_class(tmp_path):
    root = make_grey_folder(tmp_path / "imgs", classes=4, train_per_class=6)
    ds = load_dataset("imagefolder", root, mode="L")
    sub = balanced_limit(ds, 10)  # 10 = 3 + 3 + 2 + 2
    counts = torch.bincount(torch.tensor(sub.labels), minlength=4).tolist()
    assert len(sub) == 10 and sorted(counts) == [2, 2, 3, 3]
    x, y = sub[len(sub) - 1]
    assert x.shape == (1, 12, 12) and y == 3  # order kept: class 3 last
    # a class with too few images gives all it has; the others fill up
    (root / "train" / "c0" / "005.png").unlink()
    for p in sorted((root / "train" / "c0").iterdir())[1:]:
        p.unlink()
    counts = torch.bincount(torch.tensor(balanced_limit(load_dataset("imagefolder", root, mode="L"), 13).labels),
                            minlength=4).tolist()
    assert counts[0] == 1 and sum(counts) == 13 and max(counts) - min(counts[1:]) <= 1


def _bad_files(root: Path) -> dict[str, Path]:
    bad = {"empty": root / "val" / "c1" / "empty.png", "corrupt": root / "val" / "c2" / "broken.png",
           "truncated": root / "train" / "c3" / "000.png"}
    bad["empty"].write_bytes(b"")
    bad["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    data = bad["truncated"].read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])
    return bad


def test_data_command_checks_every_file_and_names_the_bad_ones(tmp_path, capsys):
    root = make_grey_folder(tmp_path / "imgs")
    assert main(["data", "imagefolder", "--data", str(root), "--mode", "L", "--no-progress"]) == 0
    assert "every image file decodes" in capsys.readouterr().out
    bad = _bad_files(root)
    assert main(["data", "imagefolder", "--data", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty.png" not in err  # the train split fails first: only its file
    assert str(bad["truncated"]) in err and "1 of 24 train images cannot be used" in err
    bad["truncated"].unlink()
    assert main(["data", "imagefolder", "--data", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{bad['empty']} (empty file)" in err and str(bad["corrupt"]) in err


def test_mixed_sizes_are_named_up_front_unless_resized(tmp_path, capsys):
    root = make_grey_folder(tmp_path / "imgs")
    odd = root / "train" / "c1" / "odd.png"
    Image.new("L", (20, 9), 7).save(odd)
    assert main(["data", "imagefolder", "--data", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{odd} (20x9)" in err and "differ in size" in err and "--image-size" in err
    assert main(["data", "imagefolder", "--data", str(root), "--image-size", "8", "8", "--no-progress"]) == 0


def test_train_checks_files_before_anything_is_written(tmp_path, capsys):
    root = make_grey_folder(tmp_path / "imgs")
    bad = _bad_files(root)
    bad["truncated"].unlink()  # leave only validation problems: found before epoch 1, not after it
    out = tmp_path / "run"
    assert main(["train", "--config", str(grey_recipe(tmp_path, root)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "CPU threads: 1 (set by runtime.threads)" and len(err) == 2
    assert str(bad["empty"]) in err[1] and str(bad["corrupt"]) in err[1] and "2 of 10 test images cannot be used" in err[1]
    assert not out.exists()


def test_empty_class_folder_is_refused(tmp_path):
    root = make_grey_folder(tmp_path / "imgs")
    (root / "train" / "zebra").mkdir()
    with pytest.raises(FracBNNError, match=r"1 class folder\(s\) hold no images: .*zebra"):
        load_dataset("imagefolder", root)
    (root / "train" / "zebra").rmdir()
    for p in (root / "val" / "c2").iterdir():
        p.unlink()
    with pytest.raises(FracBNNError, match=r"hold no images: .*val/c2"):
        load_dataset("imagefolder", root, "val")
