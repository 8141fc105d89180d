"""Train a model with a recipe: the paper's steps in sequence, each from the previous one.

Examples:
  fracbnn train --config configs/cifar10-fracbnn.yaml --data ../shared/datasets --out runs/c10
  fracbnn train --resume --out runs/c10                          # continue a killed run
  fracbnn train --config configs/cifar10-fracbnn.yaml --steps step3-frac \\
      --init runs/c10/step2-binary/final.pt --out runs/c10-g02 --set gate.target=0.2
  torchrun --nproc_per_node 2 -m fracbnn.cli train --config ... --out runs/ddp   # data parallel

Overrides (--set KEY=VALUE, repeatable) use dotted keys, e.g. optim.lr=5e-4,
data.batch_size=64, steps.*.epochs=2, steps.step3-frac.gate_target=0.2.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="YAML", help="recipe file (see configs/); not needed with --resume")
    p.add_argument("--out", "-o", metavar="RUN_DIR", help="run folder (default: runs/<recipe name>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (completed steps are skipped)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value (repeatable)")
    p.add_argument("--data", metavar="PATH", help="dataset location (sets data.root)")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs of every step (sets steps.*.epochs)")
    p.add_argument("--steps", metavar="NAMES", help="comma-separated step names or 1-based numbers to run")
    p.add_argument("--init", metavar="CKPT", help="initial weights of the first step run (a fracbnn checkpoint)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (sets device)")
    p.add_argument("--seed", type=int, help="random seed (sets seed)")
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible kernels (sets deterministic)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (sets runtime.threads; default auto: free cores, see docs/training.md#speed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the results of every step as one JSON object")


def run(args) -> int:
    import json
    import os
    import time
    from pathlib import Path

    from ..errors import FracBNNError
    from ..train import load_recipe, train

    overrides = list(args.overrides)
    for flag, key in ((args.data, "data.root"), (args.device, "device"), (args.seed, "seed")):
        if flag is not None:
            overrides.append(f"{key}={flag}" if key != "data.root" else f"{key}={json.dumps(str(flag))}")
    if args.epochs is not None:
        overrides.append(f"steps.*.epochs={args.epochs}")
    if args.deterministic:
        overrides.append("deterministic=true")
    # display-only settings: also allowed with --resume (they do not change the training)
    display = ["runtime.progress=false"] if args.no_progress else []
    if args.threads is not None:  # speed only: also allowed with --resume
        display.append(f"runtime.threads={args.threads}")

    if args.resume:
        if not args.out:
            raise FracBNNError("--resume needs --out RUN_DIR (the folder of the run to continue)")
        saved = Path(args.out) / "config.yaml"
        if not saved.is_file():
            raise FracBNNError(f"{args.out} holds no run to resume ({saved} missing)")
        if args.config or overrides:
            raise FracBNNError("--resume continues a run with its saved recipe; drop --config and overrides "
                               "(start a new --out to change them)")
        cfg = load_recipe(saved, display)
    else:
        if not args.config:
            raise FracBNNError("give a recipe with --config configs/<recipe>.yaml (or --resume --out RUN_DIR)")
        cfg = load_recipe(args.config, overrides + display)
    out = args.out
    if out is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise FracBNNError("under torchrun pass --out RUN_DIR so every process uses the same folder")
        out = str(Path("runs") / f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}")

    only = None
    if args.steps:
        names = [s["name"] for s in cfg["steps"]]
        only = []
        for token in args.steps.split(","):
            token = token.strip()
            if token.isdigit() and 1 <= int(token) <= len(names):
                only.append(int(token) - 1)
            elif token in names:
                only.append(names.index(token))
            else:
                raise FracBNNError(f"--steps: no step {token!r}; steps are {', '.join(names)} (or 1..{len(names)})")
        only = sorted(set(only))
    results = train(cfg, out, resume=args.resume, only_steps=only, init=args.init)
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print(json.dumps({"run_dir": str(out), "steps": results}))
        else:
            for name, r in results.items():
                print(f"{name}: test top-1 {100 * r['top1']:.2f}%  top-5 {100 * r['top5']:.2f}%"
                      + (f"  effective activation bits {r['effective_activation_bits']:.3f}"
                         if r.get("effective_activation_bits", 32) < 32 else ""))
            print(f"run folder: {out}")
    return 0
