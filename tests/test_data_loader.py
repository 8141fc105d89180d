"""Batch loader: determinism, resume, rank slicing, coverage, and the crop+flip augmentation."""

from __future__ import annotations

import pytest
import torch

from fracbnn.data import InMemoryImageDataset, apply_crop_flip, make_loader
from fracbnn.data.augment import CropFlipParams, draw_crop_flip


def random_dataset(n=100, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    # label = sample index mod 10, and pixel [0,0,0] is unique enough to identify samples via labels below
    labels = torch.arange(n) % 10
    return InMemoryImageDataset(images, labels, [str(i) for i in range(10)])


class IndexDataset(InMemoryImageDataset):
    """Each image carries its own index in its first two pixels, so batches reveal which samples they hold."""

    def __init__(self, n):
        images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
        images[:, 0, 0, 0] = torch.arange(n) // 256
        images[:, 0, 0, 1] = torch.arange(n) % 256
        super().__init__(images, torch.arange(n) % 3, ["a", "b", "c"])


def ids(images):
    return (images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()).tolist()


def collect(loader, start=0):
    return [(x.clone(), y.clone()) for x, y in loader.iter_from(start)]


def same(batches_a, batches_b):
    return len(batches_a) == len(batches_b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(batches_a, batches_b))


def test_train_order_is_a_function_of_seed_and_epoch():
    ds = random_dataset()
    a = make_loader(ds, 16, train=True, augment="cifar", seed=3)
    b = make_loader(ds, 16, train=True, augment="cifar", seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    assert same(collect(a), collect(b))
    assert same(collect(a), collect(a))  # iterating twice replays the epoch
    b.set_epoch(6)
    assert not same(collect(a), collect(b))
    c = make_loader(ds, 16, train=True, augment="cifar", seed=4)
    c.set_epoch(5)
    assert not same(collect(a), collect(c))
    o5, o6 = a.order(), b.order()
    assert sorted(o5.tolist()) == list(range(len(ds))) and not torch.equal(o5, o6)


def test_train_drop_last_and_lengths():
    ds = IndexDataset(100)
    tr = make_loader(ds, 16, train=True)
    assert tr.drop_last and len(tr) == 6
    seen = [i for x, _ in tr for i in ids(x)]
    assert len(seen) == 96 and len(set(seen)) == 96
    full = make_loader(ds, 16, train=True, drop_last=False)
    assert len(full) == 7
    seen = [i for x, _ in full for i in ids(x)]
    assert sorted(seen) == list(range(100))


def test_iter_from_equals_tail_without_loading_skipped_batches():
    ds = random_dataset(n=90)
    loader = make_loader(ds, 8, train=True, augment="cifar", seed=1)
    loader.set_epoch(2)
    full = collect(loader)
    for k in (0, 1, 5, len(loader) - 1, len(loader)):
        assert same(collect(loader, k), full[k:])

    fetched = []
    original = ds.get_batch

    def spy(indices):
        fetched.append(len(indices))
        return original(indices)

    ds.get_batch = spy
    list(loader.iter_from(9))
    assert len(fetched) == len(loader) - 9
    with pytest.raises(ValueError):
        loader.iter_from(len(loader) + 1)


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("train", [True, False])
def test_rank_slices_concatenate_to_global_batch(world_size, train):
    ds = random_dataset(n=101, h=12, w=12)
    kw = dict(train=train, augment="cifar", seed=7)
    single = make_loader(ds, 16, **kw)
    ranks = [make_loader(ds, 16, rank=r, world_size=world_size, **kw) for r in range(world_size)]
    for lo in [single, *ranks]:
        lo.set_epoch(3)
    assert all(len(r) == len(single) for r in ranks)
    per_rank = [collect(r) for r in ranks]
    for i, (x, y) in enumerate(collect(single)):
        parts = [per_rank[r][i] for r in range(world_size)]
        assert all(p[0].shape[0] <= 16 // world_size for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_rank_slices_resume_mid_epoch():
    ds = random_dataset(n=64)
    single = make_loader(ds, 8, train=True, augment="cifar", seed=2)
    r1 = make_loader(ds, 8, train=True, augment="cifar", seed=2, rank=1, world_size=2)
    tail_single, tail_r1 = collect(single, 3), collect(r1, 3)
    assert all(torch.equal(a[0][4:], b[0]) for a, b in zip(tail_single, tail_r1))


@pytest.mark.parametrize("batch_size,world_size", [(7, 1), (1, 1), (100, 1), (250, 1), (6, 3), (8, 4)])
def test_eval_covers_every_sample_once_in_order(batch_size, world_size):
    ds = IndexDataset(100)
    loaders = [make_loader(ds, batch_size, train=False, rank=r, world_size=world_size) for r in range(world_size)]
    assert all(not lo.drop_last for lo in loaders)
    per_rank = [[ids(x) for x, _ in lo] for lo in loaders]
    merged = [i for b in range(len(loaders[0])) for r in range(world_size) for i in per_rank[r][b]]
    assert merged == list(range(100))
    labels = torch.cat([y for x, y in make_loader(ds, batch_size, train=False)])
    assert torch.equal(labels, ds.labels)


def test_eval_has_no_augmentation_by_default_and_exact_pixels():
    ds = random_dataset(n=20)
    x = torch.cat([b for b, _ in make_loader(ds, 6, train=False)])
    assert torch.equal(x, ds.images)
    assert x.dtype == torch.uint8


def test_argument_errors():
    ds = random_dataset(n=20)
    with pytest.raises(ValueError, match="divisible"):
        make_loader(ds, 10, train=True, world_size=3)
    with pytest.raises(ValueError, match="every sample"):
        make_loader(ds, 10, train=False, drop_last=True)
    with pytest.raises(ValueError, match="augmentation"):
        make_loader(ds, 10, train=True, augment="mixup")
    with pytest.raises(ValueError, match="rank"):
        make_loader(ds, 10, train=True, rank=2, world_size=2)
    from fracbnn.errors import FracBNNError
    with pytest.raises(FracBNNError, match="larger than the dataset"):
        make_loader(ds, 32, train=True)


# ------------------------------------------------------------------ augmentation

def reference_crop_flip(img, top, left, flip, pad):
    """Pixel-by-pixel definition: pad with zeros, take the window, mirror it."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sx = (w - 1 - x) if flip else x
            py, px = top + y - pad, left + sx - pad
            if 0 <= py < h and 0 <= px < w:
                out[:, y, x] = img[:, py, px]
    return out


def test_crop_flip_matches_pixel_definition():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (40, 3, 6, 7), generator=g, dtype=torch.uint8)
    params = draw_crop_flip(40, g, pad=4)
    out = apply_crop_flip(images, params)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for i in range(40):
        top, left = params.offsets[i].tolist()
        ref = reference_crop_flip(images[i], top, left, bool(params.flips[i]), 4)
        assert torch.equal(out[i], ref), i


def test_crop_flip_special_cases():
    images = torch.randint(1, 256, (3, 2, 32, 32), dtype=torch.uint8)
    ident = CropFlipParams(torch.full((3, 2), 4), torch.zeros(3, dtype=torch.bool), 4)
    assert torch.equal(apply_crop_flip(images, ident), images)
    flip = CropFlipParams(torch.full((3, 2), 4), torch.ones(3, dtype=torch.bool), 4)
    assert torch.equal(apply_crop_flip(images, flip), images.flip(-1))
    corner = CropFlipParams(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, dtype=torch.bool), 4)
    out = apply_crop_flip(images, corner)  # window shifted 4 up and 4 left: zero border top/left
    assert (out[:, :, :4, :] == 0).all() and (out[:, :, :, :4] == 0).all()
    assert torch.equal(out[:, :, 4:, 4:], images[:, :, :28, :28])


def test_augmentation_parameters_are_spread():
    params = draw_crop_flip(20000, torch.Generator().manual_seed(1))
    assert set(params.offsets.flatten().tolist()) == set(range(9))
    assert 0.47 < params.flips.float().mean().item() < 0.53
    counts = torch.bincount(params.offsets[:, 0], minlength=9).float() / 20000
    assert (counts - 1 / 9).abs().max() < 0.02


def test_loader_augments_train_batches_only_when_asked():
    ds = random_dataset(n=32)
    plain = make_loader(ds, 32, train=True, augment=None, seed=0)
    aug = make_loader(ds, 32, train=True, augment="cifar", seed=0)
    (xp, yp), = list(plain)
    (xa, ya), = list(aug)
    assert torch.equal(yp, ya)  # same order, augmentation does not change it
    order = plain.order()
    assert torch.equal(xp, ds.images[order])
    assert not torch.equal(xa, xp)
    # every augmented image is one of the 9 x 9 x 2 crop/flip variants of its source image
    variants = []
    for top in range(9):
        for left in range(9):
            for flip in (False, True):
                p = CropFlipParams(torch.tensor([[top, left]] * 32), torch.tensor([flip] * 32), 4)
                variants.append(apply_crop_flip(xp, p))
    variants = torch.stack(variants, 1)  # (32, 162, C, H, W)
    match = (variants == xa[:, None]).flatten(2).all(-1)
    assert match.any(1).all()


def test_subset_and_epoch_hook():
    ds = IndexDataset(30)
    sub = ds.subset([5, 2, 29])
    assert ids(sub.images) == [5, 2, 29] and sub.labels.tolist() == [2, 2, 2] and sub.classes == ds.classes

    class Recording(IndexDataset):
        epochs: list

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    rec = Recording(10)
    rec.epochs = []
    loader = make_loader(rec, 5, train=True)
    loader.set_epoch(4)
    assert rec.epochs == [4]
