"""Is data loading a bottleneck of CIFAR-10 training on this CPU?

Measures, side by side, images/s of
  * the CIFAR-10 training loader (batch 128, random crop + flip, uint8 batches), and
  * one resnet20-fracbnn training step (forward + backward + Adam step, batch 128,
    torch's default thread count),
then the ratio loader/step: above 1 the loader is faster than training consumes.
Uses the shared CIFAR-10 archive when present (--data, default ../shared/datasets),
else synthetic uint8 data of CIFAR shape. Like ``fracbnn train`` on a CPU, it first
calls fracbnn.train.allocator.keep_freed_memory(). The last line printed is one JSON object.

    python benchmarks/data_loading.py [--data PATH] [--loader-batches 200] [--steps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from fracbnn.data import InMemoryImageDataset, load_dataset, make_loader
from fracbnn.models import create_model
from fracbnn.train.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("FRACBNN_DATASETS", REPO.parent / "shared" / "datasets"))


def cifar_or_synthetic(data: Path):
    archive = data / "cifar-10-python.tar.gz" if data.is_dir() else data
    if archive.exists():
        t = time.perf_counter()
        ds = load_dataset("cifar10", archive)
        return ds, f"CIFAR-10 from {archive} (loaded in {time.perf_counter() - t:.1f} s)"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (50000,), generator=g)
    return InMemoryImageDataset(images, labels, [str(i) for i in range(10)], "synthetic", "train"), \
        "synthetic uint8 data of CIFAR-10 shape (archive not found)"


def loader_rate(ds, batch_size: int, batches: int) -> float:
    loader = make_loader(ds, batch_size, train=True, augment="cifar", seed=0)
    n, epoch = 0, 0
    t = time.perf_counter()
    while n < batches * batch_size:
        loader.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            n += x.shape[0]
            if n >= batches * batch_size:
                break
        epoch += 1
    return n / (time.perf_counter() - t)


def step_rate(ds, batch_size: int, steps: int) -> tuple[float, float]:
    """(images/s of training steps alone, seconds of loading per step when interleaved)."""
    model = create_model("resnet20-fracbnn", num_classes=ds.num_classes)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = make_loader(ds, batch_size, train=True, augment="cifar", seed=1)
    batches = loader.iter_from(0)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    x, y = next(batches)
    step(x, y)  # warm-up: allocator, autograd graph
    load_s = step_s = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(batches)
        t1 = time.perf_counter()
        step(x, y)
        t2 = time.perf_counter()
        load_s += t1 - t0
        step_s += t2 - t1
    return steps * batch_size / step_s, load_s / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--loader-batches", type=int, default=200)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's own choice); on a machine shared with other jobs "
                         "1 thread can be far faster than oversubscribed cores")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as fracbnn train does on CPU, so the step timed is the one training runs

    ds, source = cifar_or_synthetic(args.data)
    print(f"data: {source}")
    print(f"cpu cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    load = loader_rate(ds, args.batch_size, args.loader_batches)
    train, load_per_step = step_rate(ds, args.batch_size, args.steps)
    ratio = load / train
    print(f"{'':34}{'images/s':>12}{'ms/batch':>12}")
    print(f"{'loader (crop+flip, batch %d)' % args.batch_size:34}{load:12.0f}{1e3 * args.batch_size / load:12.2f}")
    print(f"{'resnet20-fracbnn train step':34}{train:12.0f}{1e3 * args.batch_size / train:12.2f}")
    print(f"loader/step ratio: {ratio:.1f}x  (loading takes {100 / ratio:.2f}% of a step's time; "
          f"interleaved with training: {1e3 * load_per_step:.2f} ms per batch)")
    print(json.dumps({"loader_images_per_s": round(load, 1), "train_step_images_per_s": round(train, 1),
                      "loader_over_step": round(ratio, 2),
                      "interleaved_load_ms_per_batch": round(1e3 * load_per_step, 3),
                      "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
                      "cpu_count": os.cpu_count(), "data": ds.name}))


if __name__ == "__main__":
    main()
