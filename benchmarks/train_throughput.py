"""Training-step throughput of ResNet-20 FP, BNN and FracBNN side by side on this machine.

One training step = forward, cross-entropy, backward and an Adam update on a
batch of random CIFAR-sized uint8 images (data loading excluded). The models
are timed in interleaved rounds (fp, bnn, fracbnn, fp, bnn, ...), so a load
change on a shared machine hits all of them alike; the median step time of
each is reported. Two more FracBNN rows show what the speed-ups buy:
"fracbnn-pytorch" runs the fused gated-convolution node and the input layer
with PyTorch ops only (the C kernels of fracbnn.nn.cpu_ops switched off), and
"fracbnn-unfused" also replaces the fused node by the plain autograd
composition (FracConv2d.fused = False).

Like ``fracbnn train`` on a CPU, the benchmark first calls
fracbnn.train.allocator.keep_freed_memory() (``--no-keep-freed-memory``
skips it); the setting applies to every model alike.

The last line is one JSON object; ``fracbnn_over_fp`` = FracBNN step time /
FP step time (target: at most 1.5).

    python benchmarks/train_throughput.py [--batch 128] [--reps 7] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from fracbnn.models import create_model
from fracbnn.nn import FracConv2d, cpu_ops
from fracbnn.train.allocator import keep_freed_memory


def make_step(name: str, batch: int, fused: bool = True, kernels: bool = True):
    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, FracConv2d):
            m.fused = fused
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (batch,), generator=g)

    def step():
        old = cpu_ops.set_enabled(kernels)
        try:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            opt.step()
        finally:
            cpu_ops.set_enabled(old)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7, help="timed rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-unfused", action="store_true", help="skip the two slower FracBNN comparison rows")
    ap.add_argument("--no-keep-freed-memory", action="store_true",
                    help="leave glibc's malloc thresholds alone (fracbnn train raises them on CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = False if args.no_keep_freed_memory else keep_freed_memory()

    variants = {"fp": ("resnet20-fp", True, True), "bnn": ("resnet20-bnn", True, True),
                "fracbnn": ("resnet20-fracbnn", True, True)}
    if not args.no_unfused:
        variants["fracbnn-pytorch"] = ("resnet20-fracbnn", True, False)
        variants["fracbnn-unfused"] = ("resnet20-fracbnn", False, False)
    steps = {k: make_step(name, args.batch, fused, kernels) for k, (name, fused, kernels) in variants.items()}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {k: [] for k in steps}
    for _ in range(args.reps):
        for k, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"training step, batch {args.batch}, {torch.get_num_threads()} thread(s), median of {args.reps} "
          f"interleaved rounds (torch {torch.__version__}; C training kernels "
          f"{'built' if cpu_ops.built() else 'NOT built'}; keep_freed_memory {kept})")
    for k, t in med.items():
        print(f"  {k:16s} {1000 * t:9.1f} ms/step  {args.batch / t:8.1f} images/s  "
              f"x{t / med['fp']:.2f} of fp  (min {1000 * min(times[k]):.1f} ms, max {1000 * max(times[k]):.1f} ms)")
    result = {
        "batch": args.batch, "threads": torch.get_num_threads(), "reps": args.reps,
        "train_kernels": cpu_ops.enabled(), "keep_freed_memory": kept,
        "step_seconds": {k: round(v, 5) for k, v in med.items()},
        "images_per_second": {k: round(args.batch / v, 2) for k, v in med.items()},
        "bnn_over_fp": round(med["bnn"] / med["fp"], 3),
        "fracbnn_over_fp": round(med["fracbnn"] / med["fp"], 3),
        # ratio of the fastest rounds: less sensitive to other load on a shared machine
        "fracbnn_over_fp_min": round(min(times["fracbnn"]) / min(times["fp"]), 3),
        "target_fracbnn_over_fp": 1.5,
    }
    for k in ("fracbnn-pytorch", "fracbnn-unfused"):
        if k in med:
            result[k.replace("-", "_") + "_over_fp"] = round(med[k] / med["fp"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
