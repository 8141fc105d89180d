"""The whole ImageNet path on CPU, on a tiny generated ImageFolder of JPEG images.

data (SPEC transforms, uint8) -> student ReActNet + frozen torchvision
ResNet-50 teacher -> distillation-only loss -> backward -> one Adam step ->
evaluation of every validation image with any batch size; and the same
through `fracbnn train` with the ImageNet recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

torchvision = pytest.importorskip("torchvision", reason="the ImageNet pipeline needs torchvision "
                                  "(pip install 'fracbnn[imagenet]')")
Image = pytest.importorskip("PIL.Image", reason="JPEG decoding needs Pillow")

from fracbnn.cli import main  # noqa: E402
from fracbnn.data import load_dataset, make_loader  # noqa: E402
from fracbnn.data.imagenet import ImageNetEvalTransform, ImageNetTrainTransform  # noqa: E402
from fracbnn.errors import CheckpointError, FracBNNError  # noqa: E402
from fracbnn.models import create_model  # noqa: E402
from fracbnn.models.teachers import torchvision_teacher  # noqa: E402
from fracbnn.train.distill import TrainingLoss, distillation_loss  # noqa: E402
from fracbnn.train.evaluate import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("n01440764", "n01443537", "n01484850")
SIZES = ((60, 80), (96, 64), (72, 72), (50, 90))  # (H, W) of generated photos, not square on purpose


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory) -> Path:
    """3 classes; 4 training and 3 validation JPEGs per class, of assorted sizes."""
    root = tmp_path_factory.mktemp("tiny-imagenet")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 3)):
        for c, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = SIZES[(i + c) % len(SIZES)]
                base = rng.integers(0, 256, (1, 1, 3))
                img = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{cls}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory) -> Path:
    """A local ResNet-50 weights file with a 3-class head, like the tiny data (random values:
    the pipeline, not accuracy, is under test)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None, num_classes=len(CLASSES)).state_dict(), path)
    return path


def test_transforms_give_uint8_at_the_requested_size(tiny_imagenet):
    with Image.open(next((tiny_imagenet / "train" / CLASSES[0]).iterdir())) as im:
        im = im.convert("RGB")
        train, val = ImageNetTrainTransform(64), ImageNetEvalTransform(64)
        a, b = train(im), train(im)
        v1, v2 = val(im), val(im)
    assert a.dtype == torch.uint8 and a.shape == (3, 64, 64)
    assert not torch.equal(a, b)  # random crop / flip / lighting
    assert v1.dtype == torch.uint8 and v1.shape == (3, 64, 64) and torch.equal(v1, v2)
    assert val.resize == 73  # 256/224 of the crop
    # loader workers may receive the transforms by pickling (spawn start method)
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(val))(im), v1)
    assert pickle.loads(pickle.dumps(train))(im).shape == (3, 64, 64)
    assert ImageNetEvalTransform().resize == 256 and ImageNetEvalTransform().crop == 224


def test_teacher_from_local_file_is_frozen_and_strict(tmp_path, resnet50_weights):
    teacher = torchvision_teacher("resnet50", resnet50_weights)
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    bn = teacher.net.bn1
    before = bn.running_mean.clone()
    out = teacher(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (2, len(CLASSES)) and torch.equal(bn.running_mean, before)

    sd = torch.load(resnet50_weights, weights_only=True)
    del sd["layer4.2.bn3.running_var"]
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: layer4\.2\.bn3\.running_var"):
        torchvision_teacher("resnet50", tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="not found"):
        torchvision_teacher("resnet50", tmp_path / "absent.pth")
    with pytest.raises(FracBNNError, match="unknown torchvision model"):
        torchvision_teacher("resnet5000", resnet50_weights)


def test_whole_path_one_step_and_evaluation(tiny_imagenet, resnet50_weights):
    torch.manual_seed(0)
    train = load_dataset("imagenet", tiny_imagenet, "train", image_size=64)
    val = load_dataset("imagenet", tiny_imagenet, "val", image_size=64)
    assert (len(train), len(val), train.num_classes) == (12, 9, 3)
    images, labels = next(iter(make_loader(train, 4, train=True, seed=0)))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 64, 64) and labels.shape == (4,)

    student = create_model("reactnet-fracbnn", num_classes=3, width=0.25)
    teacher = torchvision_teacher("resnet50", resnet50_weights)
    criterion = TrainingLoss(teacher, alpha=0.0, temperature=1.0)  # distillation only
    opt = torch.optim.Adam(student.parameters(), lr=5e-4)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()
    logits = student(images)
    loss = criterion(logits, labels, images)
    with torch.no_grad():
        expect = distillation_loss(logits, teacher(images), 1.0)
    assert torch.isfinite(loss) and torch.allclose(loss, expect)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert student.blocks[5].conv1.threshold.grad.abs().sum() > 0  # gate thresholds learn too
    assert all(p.grad is None for p in teacher.parameters())
    opt.step()
    after = student.state_dict()
    assert not torch.equal(after["stem.weight"], before["stem.weight"])
    assert not torch.equal(after["blocks.12.conv2.weight"], before["blocks.12.conv2.weight"])

    # every validation image counts, whatever the batch size
    results = [evaluate(student, make_loader(val, bs, train=False), torch.device("cpu")) for bs in (1, 4, 9, 16)]
    results.append(evaluate(student, make_loader(val, 4, train=False, num_workers=2), torch.device("cpu")))
    assert [r["count"] for r in results] == [9, 9, 9, 9, 9]
    assert len({round(r["top1"], 6) for r in results}) == 1
    assert all(abs(r["loss"] - results[0]["loss"]) < 1e-4 for r in results)
    gate = results[0]["gate"]
    assert len(gate) == 26 and all(s["total"] > 0 for s in gate.values())


@pytest.mark.slow
def test_fracbnn_train_with_the_imagenet_recipe(tmp_path, tiny_imagenet, resnet50_weights):
    """`fracbnn train configs/imagenet-fracbnn.yaml` end to end at 224x224, shrunk: a narrow student,
    steps 1 and 2 with 0 epochs (evaluate and hand over their weights), step 3 one epoch on 4 images."""
    out = tmp_path / "run"
    argv = ["train", "--config", str(REPO / "configs" / "imagenet-fracbnn.yaml"), "--data", str(tiny_imagenet),
            "--out", str(out), "--no-progress", "--json", "--set", "steps.*.epochs=0", "--set", "steps.step3-frac.epochs=1",
            "--set", "model.kwargs.width=0.125", "--set", f"distill.teacher.weights={resnet50_weights}",
            "--set", "data.batch_size=4", "--set", "data.eval_batch_size=4", "--set", "data.num_workers=0",
            "--set", "data.train_limit=4", "--set", "runtime.tensorboard=false"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["step1-float", "step2-binary", "step3-frac"]
    assert all(r["count"] == 9 for r in results.values())  # all validation images, last batch partial
    from fracbnn.checkpoint import load_checkpoint

    final = load_checkpoint(out / "final.pt")
    assert final["model"]["name"] == "reactnet-fracbnn" and final["model"]["kwargs"]["frac_mode"] == "frac"


@pytest.mark.parametrize("workers", [0, 2])
def test_augmentation_repeats_with_the_same_seed(tiny_imagenet, workers):
    """In-process transforms draw from torch's generator; worker processes are seeded by the loader."""
    train = load_dataset("imagenet", tiny_imagenet, "train", image_size=32)

    def first_batch(torch_seed, loader_seed):
        torch.manual_seed(torch_seed)
        return next(iter(make_loader(train, 6, train=True, seed=loader_seed, num_workers=workers)))[0]

    assert torch.equal(first_batch(1, 0), first_batch(1, 0))
    assert not torch.equal(first_batch(1, 0), first_batch(2, 1))
