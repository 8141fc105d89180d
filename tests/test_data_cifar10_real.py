"""CIFAR-10 read from the shared archive (skipped when ../shared/datasets is absent)."""

from __future__ import annotations

import pytest
import torch

from conftest import datasets_dir
from fracbnn.data import load_dataset, make_loader

ARCHIVE = datasets_dir() / "cifar-10-python.tar.gz"
pytestmark = pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"{ARCHIVE} not present")


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """Extract once per session into a temporary cache, then load both splits."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRACBNN_CACHE", str(tmp_path_factory.mktemp("fracbnn-cache")))
        yield load_dataset("cifar10", ARCHIVE), load_dataset("cifar10", ARCHIVE, split="test")


def test_sizes_classes_and_balance(cifar10):
    train, test = cifar10
    assert (len(train), len(test)) == (50000, 10000)
    assert train.num_classes == test.num_classes == 10
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.bincount(train.labels, minlength=10).tolist() == [5000] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    mean = train.images[:2000].float().mean().item()
    assert 90 < mean < 150  # natural images, not noise or an all-zero decode


def test_loaders_on_real_data(cifar10):
    train, test = cifar10
    loader = make_loader(train, 128, train=True, augment="cifar", seed=0)
    assert len(loader) == 390
    x, y = next(iter(loader))
    assert x.shape == (128, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    ev = make_loader(test, 1000, train=False)
    assert len(ev) == 10 and sum(len(y) for _, y in ev) == 10000
