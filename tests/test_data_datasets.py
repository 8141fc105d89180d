"""Datasets: CIFAR from folder / archive / (fake) download, offline errors, safe unpickling,
the built-in digits, and image folders. No network: downloads use file:// URLs."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fracbnn.data import load_dataset, make_loader
from fracbnn.data import cifar as cifar_mod
from fracbnn.errors import FracBNNError

NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch(n, seed, label_key="labels", extra=None):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"fake", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         label_key.encode(): [int(v) for v in rng.integers(0, 10, n)],
         b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    d.update(extra or {})
    return d


def _add(tf, name, obj):
    data = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def make_fake_cifar10(path: Path, per_batch=6) -> dict:
    """A tiny archive in the canonical cifar-10-python layout; returns the pickled contents."""
    top = "cifar-10-batches-py"
    contents = {f"data_batch_{i}": _batch(per_batch, i) for i in range(1, 6)}
    contents["test_batch"] = _batch(per_batch - 1, 99)
    contents["batches.meta"] = {b"label_names": [n.encode() for n in NAMES10], b"num_vis": 3072}
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(top)
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        for name, obj in contents.items():
            _add(tf, f"{top}/{name}", obj)
    return contents


def make_fake_cifar100(path: Path) -> None:
    top = "cifar-100-python"
    rng = np.random.default_rng(5)
    with tarfile.open(path, "w:gz") as tf:
        for split, n in (("train", 12), ("test", 4)):
            _add(tf, f"{top}/{split}", {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                          b"fine_labels": [i % 100 for i in range(n)],
                                          b"coarse_labels": [i % 20 for i in range(n)]})
        _add(tf, f"{top}/meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                                 b"coarse_label_names": [f"c{i}".encode() for i in range(20)]})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FRACBNN_CACHE", str(d))
    monkeypatch.delenv("FRACBNN_DATA", raising=False)
    return d


@pytest.fixture
def fake10(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    archive = src / "cifar-10-python.tar.gz"
    return archive, make_fake_cifar10(archive)


def check_matches(ds, contents, split):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    data = np.concatenate([contents[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([contents[n][b"labels"] for n in names])
    assert torch.equal(ds.images, torch.from_numpy(data))
    assert torch.equal(ds.labels, torch.from_numpy(labels))
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert ds.classes == NAMES10 and ds.num_classes == 10
    assert ds.in_channels == 3 and ds.image_size == (32, 32)
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and isinstance(y, int)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10, cifar100, digits, imagefolder"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="holdout")
    with pytest.raises(TypeError, match="unexpected"):
        load_dataset("digits", image_size=(8, 8))


def test_archive_extracted_once_into_cache_never_beside_it(cache, fake10, monkeypatch):
    archive, contents = fake10
    before = sorted(os.listdir(archive.parent))
    train = load_dataset("cifar10", archive)
    check_matches(train, contents, "train")
    assert len(train) == 30
    test = load_dataset("cifar10", archive.parent, split="val")  # folder holding the archive; val == test
    check_matches(test, contents, "test")
    assert sorted(os.listdir(archive.parent)) == before  # nothing written next to the archive
    extracted = list((cache / "extracted").glob("cifar10-*/cifar-10-batches-py"))
    assert len(extracted) == 1 and (extracted[0] / "data_batch_5").is_file()
    assert not [p for p in extracted[0].parent.iterdir() if p.name.startswith(".")]  # no temp leftovers

    def no_reopen(*a, **k):
        raise AssertionError("archive re-extracted although the cache is complete")

    monkeypatch.setattr(tarfile, "open", no_reopen)
    check_matches(load_dataset("cifar10", archive), contents, "train")
    # the extracted folder itself, and its parent, are accepted as root too
    check_matches(load_dataset("cifar10", extracted[0], "test"), contents, "test")
    check_matches(load_dataset("cifar10", extracted[0].parent, "test"), contents, "test")


def test_interrupted_extraction_is_not_mistaken_for_complete(cache, fake10):
    archive, contents = fake10
    load_dataset("cifar10", archive)
    folder = next((cache / "extracted").glob("cifar10-*/cifar-10-batches-py"))
    (folder / ".fracbnn-complete").unlink()  # as if the process died before the rename
    (folder / "data_batch_3").write_bytes(b"partial")
    check_matches(load_dataset("cifar10", archive), contents, "train")


def test_truncated_archive_gives_clear_error(cache, tmp_path, fake10):
    archive, _ = fake10
    bad = tmp_path / "cut" / "cifar-10-python.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(FracBNNError, match="truncated or corrupt") as e:
        load_dataset("cifar10", bad)
    assert "\n" not in str(e.value)
    bad.write_bytes(b"not an archive at all" * 20)
    with pytest.raises(FracBNNError, match="not a tar archive") as e:
        load_dataset("cifar10", bad)
    assert "\n" not in str(e.value)
    assert not list((cache / "extracted").glob("*/cifar-10-batches-py"))


def test_missing_data_and_offline_errors_name_the_data_option(cache, tmp_path, monkeypatch):
    hint = "pass --data PATH (folder or cifar-10-python.tar.gz)"
    with pytest.raises(FracBNNError, match=r"does not exist.*" + re.escape(hint)):
        load_dataset("cifar10", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FracBNNError, match="no cifar10 data in"):
        load_dataset("cifar10", tmp_path / "empty")
    with pytest.raises(FracBNNError) as e:
        load_dataset("cifar10", download=False)
    assert hint in str(e.value)
    # "offline": nothing listens on port 9 of this machine, so the connection is refused at once
    spec = dataclasses.replace(cifar_mod.CIFAR10, url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setitem(cifar_mod.SPECS, "cifar10", spec)
    with pytest.raises(FracBNNError) as e:
        load_dataset("cifar10")
    assert "cannot download" in str(e.value) and hint in str(e.value) and "\n" not in str(e.value)
    assert not list(cache.rglob("*.part"))


def test_download_verifies_md5_then_uses_cache(cache, fake10, monkeypatch):
    archive, contents = fake10
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    wrong = dataclasses.replace(cifar_mod.CIFAR10, url=archive.as_uri(), md5="0" * 32)
    monkeypatch.setitem(cifar_mod.SPECS, "cifar10", wrong)
    with pytest.raises(FracBNNError, match="md5"):
        load_dataset("cifar10")
    assert not (cache / "downloads" / "cifar-10-python.tar.gz").exists()
    good = dataclasses.replace(cifar_mod.CIFAR10, url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(cifar_mod.SPECS, "cifar10", good)
    check_matches(load_dataset("cifar10"), contents, "train")
    assert (cache / "cifar-10-batches-py" / "test_batch").is_file()
    archive.unlink()  # the source is gone: the cache alone must serve, without downloading
    check_matches(load_dataset("cifar10", split="test", download=False), contents, "test")


def test_data_env_var_is_the_default_root(cache, fake10, monkeypatch):
    archive, contents = fake10
    monkeypatch.setenv("FRACBNN_DATA", str(archive))
    check_matches(load_dataset("cifar10", download=False), contents, "train")


def test_pickle_with_code_is_refused(cache, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in NAMES10]}))
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(FracBNNError, match="refusing to load"):
        load_dataset("cifar10", folder, "test")
    assert not (tmp_path / "pwned").exists()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(FracBNNError, match=r"\(N, 3072\)"):
        load_dataset("cifar10", folder, "test")


def test_cifar100_fine_and_coarse_labels(cache, tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    make_fake_cifar100(archive)
    fine = load_dataset("cifar100", archive)
    assert len(fine) == 12 and fine.num_classes == 100 and fine.classes[7] == "f7"
    assert fine.labels.tolist() == list(range(12))
    coarse = load_dataset("cifar100", archive, "test", labels="coarse")
    assert len(coarse) == 4 and coarse.num_classes == 20 and coarse.labels.tolist() == [0, 1, 2, 3]
    with pytest.raises(FracBNNError, match="cifar-100-python.tar.gz"):
        load_dataset("cifar100", download=False)


# ------------------------------------------------------------------ digits

def test_digits_split_and_values():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    for ds in (train, test):
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 8, 8)
        assert ds.in_channels == 1 and ds.image_size == (8, 8) and ds.num_classes == 10
        assert ds.classes == [str(i) for i in range(10)]
    # stratified: every class has 36 (+-1) test images
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    # together the two splits are exactly the 1797 images, mapped v -> round(v * 255 / 16)
    bunch = load_digits()
    expected = {tuple(int(round(v * 255 / 16)) for v in row) + (int(t),) for row, t in zip(bunch.data, bunch.target)}
    got = torch.cat([torch.cat([d.images.flatten(1).long(), d.labels[:, None]], 1) for d in (train, test)])
    got_rows = {tuple(r) for r in got.tolist()}
    assert got_rows == expected
    assert set(torch.cat([train.images, test.images]).unique().tolist()) <= {round(v * 255 / 16) for v in range(17)}
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    again = load_dataset("digits", split="test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


# ------------------------------------------------------------------ image folders

@pytest.fixture
def image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    root = tmp_path / "imgs"
    colours = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}
    for split, n in (("train", 3), ("val", 2)):
        for cls, rgb in colours.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                size = (10 + i, 12 + 2 * i)  # mixed sizes: the loader must resize
                Image.new("RGB", size, rgb).save(d / f"{i}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root, colours


def test_imagefolder_decodes_resizes_and_labels(image_folder):
    root, colours = image_folder
    train = load_dataset("imagefolder", root, image_size=(6, 5))
    val = load_dataset("imagefolder", root, "val", image_size=(6, 5))
    assert (len(train), len(val)) == (9, 6)
    assert train.classes == ["cat", "dog", "emu"] and train.num_classes == 3 and train.in_channels == 3
    assert train.image_size == (6, 5) and [s[1] for s in val.samples] == [0, 0, 1, 1, 2, 2]
    for i in range(len(val)):
        x, y = val[i]
        assert x.shape == (3, 6, 5) and x.dtype == torch.uint8
        expected = torch.tensor(colours[val.classes[y]], dtype=torch.uint8)[:, None, None].expand(3, 6, 5)
        assert torch.equal(x, expected)  # a uniform colour survives bilinear resizing exactly
    grey = load_dataset("imagefolder", root, "val", image_size=(4, 4), mode="L")
    assert grey[0][0].shape == (1, 4, 4) and grey.in_channels == 1


def test_imagefolder_loader_with_workers_matches_in_process(image_folder):
    root, _ = image_folder
    ds = load_dataset("imagefolder", root, image_size=(8, 8))
    a = make_loader(ds, 4, train=True, augment="cifar", seed=1, drop_last=False)
    b = make_loader(ds, 4, train=True, augment="cifar", seed=1, drop_last=False, num_workers=2)
    ba, bb = list(a), list(b)
    assert len(ba) == len(a) == 3
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(ba, bb))
    r1 = make_loader(ds, 4, train=True, augment="cifar", seed=1, drop_last=False, rank=1, world_size=2)
    assert all(torch.equal(x[2:], xr) for (x, _), (xr, _) in zip(ba, r1))
    ev = [y for _, y in make_loader(ds, 7, train=False)]
    assert torch.cat(ev).tolist() == ds.labels


def test_imagefolder_errors(image_folder, tmp_path):
    root, _ = image_folder
    with pytest.raises(FracBNNError, match="pass --data PATH"):
        load_dataset("imagefolder")
    with pytest.raises(FracBNNError, match="has no train/"):
        load_dataset("imagefolder", root / "train")
    with pytest.raises(FracBNNError, match="image_size"):
        ds = load_dataset("imagefolder", root)  # mixed sizes without resizing
        [ds[i] for i in range(len(ds))]
    bad = root / "val" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = load_dataset("imagefolder", root, "val", image_size=(8, 8))
    with pytest.raises(FracBNNError, match="broken.png"):
        [ds[i] for i in range(len(ds))]
    with pytest.raises(FracBNNError, match=r"cannot decode image .*broken.png"):
        list(make_loader(ds, 2, train=False, num_workers=1))


def test_concurrent_extractions_agree(cache, fake10):
    """Several processes/threads extracting the same archive at once all end with one complete copy."""
    from concurrent.futures import ThreadPoolExecutor

    from fracbnn.data.cache import extract_archive

    archive, contents = fake10
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: extract_archive(archive, "cifar-10-batches-py", cache / "race"), range(4)))
    assert len(set(folders)) == 1 and (folders[0] / ".fracbnn-complete").is_file()
    assert sorted(p.name for p in (cache / "race").iterdir()) == ["cifar-10-batches-py"]  # no temp leftovers
    check_matches(load_dataset("cifar10", folders[0]), contents, "train")


def test_user_placed_cache_folder_is_used_without_download(cache, fake10):
    archive, contents = fake10
    with tarfile.open(archive) as tf:
        tf.extractall(cache, filter="data")  # as a user would: cache/cifar-10-batches-py, no marker
    check_matches(load_dataset("cifar10", split="test", download=False), contents, "test")


class _NoisyTransform:
    """A per-sample random transform drawing from torch's global RNG, as torchvision transforms do."""

    def __call__(self, im):
        x = torch.from_numpy(np.asarray(im.resize((4, 4)), dtype=np.uint8).transpose(2, 0, 1).copy())
        return x ^ torch.randint(0, 256, x.shape, dtype=torch.uint8)


def test_worker_transforms_replay_per_seed_and_epoch(image_folder):
    root, _ = image_folder
    ds = load_dataset("imagefolder", root, transform=_NoisyTransform(), image_size=(4, 4))

    def run(epoch):
        loader = make_loader(ds, 3, train=True, seed=5, num_workers=2)
        loader.set_epoch(epoch)
        return torch.cat([x for x, _ in loader])

    torch.manual_seed(123)
    a = run(1)
    torch.manual_seed(456)  # the global RNG of the main process must not matter
    assert torch.equal(a, run(1))
    assert not torch.equal(a, run(2))
