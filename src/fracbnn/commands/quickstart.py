"""Train a small FracBNN on the built-in 8x8 digits in about a minute (CPU, no download).

Runs the three training steps of the recipe (float weights, binary weights,
fractional gated convolutions) on scikit-learn's digits, then prints the
test accuracy and the model summary. The recipe is the same as
configs/digits-quickstart.yaml.
"""

from __future__ import annotations

import argparse

#: Same content as configs/digits-quickstart.yaml (a test keeps them equal).
QUICKSTART_RECIPE = {
    "name": "digits-quickstart",
    "seed": 0,
    "model": {"name": "resnet20-fracbnn", "kwargs": {"width": 1.0}},
    "data": {"name": "digits", "augment": "none", "batch_size": 64, "eval_batch_size": 360},
    "optim": {"lr": 3.0e-3, "schedule": "linear"},
    "gate": {"target": 0.0},
    "runtime": {"checkpoint_every": 0},
    "steps": [
        {"name": "step1-float", "conv_mode": "float", "epochs": 4, "weight_decay": 1.0e-5},
        {"name": "step2-binary", "conv_mode": "binary", "epochs": 3, "weight_decay": 0.0},
        {"name": "step3-frac", "conv_mode": "frac", "epochs": 3, "weight_decay": 0.0},
    ],
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="RUN_DIR", help="keep the run here (default: a temporary folder, deleted)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: auto, the free cores; see docs/training.md#speed)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (test_top1 as a fraction, the summary totals, timings)")


def run(args) -> int:
    import copy
    import json
    import tempfile
    import time
    from pathlib import Path

    import torch

    from ..nn import sparsity_by_layer
    from ..checkpoint import model_from_checkpoint
    from ..data import load_dataset, make_loader
    from ..summary import summarize
    from ..train import train
    from ..train.config import merge, resolve, DEFAULTS
    from ..train.evaluate import evaluate

    recipe = merge(copy.deepcopy(DEFAULTS), QUICKSTART_RECIPE, where="quickstart")
    recipe["seed"] = int(args.seed)
    if args.threads is not None:  # 0 or less is refused by resolve() with a one-line error
        recipe["runtime"]["threads"] = int(args.threads)
    recipe["runtime"]["tensorboard"] = False
    cfg = resolve(recipe)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fracbnn-quickstart-") as tmp:
        run_dir = Path(args.out) if args.out else Path(tmp) / "run"
        results = train(cfg, run_dir)
        train_seconds = time.perf_counter() - t0
        model = model_from_checkpoint(run_dir / "final.pt")
        test = load_dataset("digits", split="test")
        model.input_size = (test.in_channels, *test.image_size)
        # Re-evaluate the saved model: checks the checkpoint round trip and fills the gate statistics
        res = evaluate(model, make_loader(test, 360, train=False), torch.device("cpu"))
        summary = summarize(model, input_size=model.input_size)
    final = results[cfg["steps"][-1]["name"]]
    out = {
        "test_top1": res["top1"], "test_top5": res["top5"], "test_images": res["count"],
        "recipe_test_top1": final["top1"],
        "steps": {k: {"top1": v["top1"], "top5": v["top5"]} for k, v in results.items()},
        "sparsity": sparsity_by_layer(res["gate"]),
        "effective_activation_bits": summary.totals["effective_activation_bits"],
        "train_seconds": round(train_seconds, 2), "total_seconds": round(time.perf_counter() - t0, 2),
        "threads": torch.get_num_threads(), "run_dir": str(args.out) if args.out else None,
        "summary": summary.to_dict(),
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(summary.format_table())
    print()
    for name, r in out["steps"].items():
        print(f"{name:14s} test top-1 {100 * r['top1']:.2f}%")
    print(f"\nquick start: test top-1 {100 * out['test_top1']:.2f}% on {out['test_images']} digits images "
          f"(effective activation bits {out['effective_activation_bits']:.3f}), trained in "
          f"{out['train_seconds']:.1f} s on {out['threads']} thread(s)")
    if args.out:
        print(f"run folder: {args.out}")
    return 0
