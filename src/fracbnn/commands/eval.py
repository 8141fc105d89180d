"""Evaluate a checkpoint (or an exported .fbnn model) on every image of a test split.

No image is dropped, whatever the batch size. The dataset defaults to the
one recorded in the checkpoint's training recipe. For a FracBNN model the
measured LSB sparsity of each gated layer and the effective activation bits
are reported too.

Examples:
  fracbnn eval runs/c10/final.pt --data ../shared/datasets
  fracbnn eval runs/c10/final.pt --data ../shared/datasets --batch-size 333 --json
  fracbnn eval model.fbnn --data ../shared/datasets --engine golden
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="a fracbnn checkpoint (.pt) or an exported model (.fbnn)")
    p.add_argument("--data", metavar="PATH", help="dataset location (default: the checkpoint recipe's data.root)")
    p.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=("test", "train", "val"), help="split (default: test)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (any value; default 256)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (checkpoints only)")
    p.add_argument("--engine", choices=("golden", "fast"), default="fast",
                   help="integer engine for .fbnn files (default: fast); ignored for checkpoints")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    import json
    import sys

    from ..errors import FracBNNError

    if args.batch_size < 1:
        raise FracBNNError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise FracBNNError(f"--limit must be at least 1 (the number of images to evaluate), got {args.limit}")
    if str(args.checkpoint).endswith(".fbnn"):
        try:
            from ..deploy.cli import eval_packed
        except ImportError as e:
            raise FracBNNError(f"evaluating .fbnn files needs fracbnn.deploy, which is unavailable ({e})") from None
        return eval_packed(args)

    from tqdm import tqdm

    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..data import load_dataset, make_loader
    from ..nn import sparsity_by_layer
    from ..summary import summarize
    from ..train.distributed import pick_device
    from ..train.evaluate import evaluate
    from ..train.trainer import body_effective_bits, dataset_options, limit_dataset

    device = pick_device(args.device)
    ckpt = load_checkpoint(args.checkpoint)
    recipe = ckpt.get("config") or {}
    data_cfg = recipe.get("data", {}) if isinstance(recipe, dict) else {}
    recorded = data_cfg.get("name") or (ckpt.get("dataset") or {}).get("name")  # recipe, or set by the importer
    name = args.dataset or recorded
    if not name:
        raise FracBNNError(f"{args.checkpoint} records no dataset; pass --dataset NAME (e.g. cifar10)")
    root = args.data if args.data is not None else data_cfg.get("root")
    # the recipe's image options (size, colour mode) when evaluating on the dataset it was trained on
    options = dataset_options({"data": data_cfg}) if data_cfg and str(name) == str(data_cfg.get("name")) else {}
    ds = load_dataset(name, root, split=args.split, download=False, **options)
    ds = limit_dataset(ds, args.limit)
    model = model_from_checkpoint(ckpt)
    check_data_fits(args.checkpoint, model, ds, name)
    model.to(device)
    loader = make_loader(ds, args.batch_size, train=False)
    with tqdm(total=len(loader), desc="eval", unit="batch", file=sys.stderr, disable=args.json, leave=False) as bar:
        res = evaluate(model, loader, device, progress=bar)
    if res["count"] != len(ds):
        raise FracBNNError(f"evaluated {res['count']} of {len(ds)} images; this is a bug, please report it")
    gate = res.pop("gate")
    rows = summarize(model, input_size=model.input_size, lsb_density=1.0).rows
    out = {
        "checkpoint": str(args.checkpoint), "model": ckpt["model"]["name"], "dataset": name, "split": args.split,
        "images": res["count"], "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
        "sparsity": sparsity_by_layer(gate),
        "effective_activation_bits": body_effective_bits(rows, gate),
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.checkpoint} ({out['model']}) on {name}/{args.split}: top-1 {100 * out['top1']:.2f}%  "
          f"top-5 {100 * out['top5']:.2f}%  loss {out['loss']:.4f}  ({out['images']} images)")
    if out["sparsity"]:
        print("LSB sparsity per gated layer:")
        for layer, s in out["sparsity"].items():
            print(f"  {layer:28s} {100 * s:6.2f}%")
        mean = sum(out["sparsity"].values()) / len(out["sparsity"])
        print(f"  {'mean':28s} {100 * mean:6.2f}%")
    if out["effective_activation_bits"] < 32:
        print(f"effective activation bits: {out['effective_activation_bits']:.3f}")
    return 0


def check_data_fits(source, model, ds, name: str) -> None:
    """A one-line error when the data's image shape or class count is not what the model was built for."""
    from ..errors import FracBNNError

    shape = (int(ds.in_channels), *map(int, ds.image_size))
    expected = getattr(model, "input_size", None)
    if expected is not None and tuple(expected) != shape:
        raise FracBNNError(f"{source} takes {'x'.join(map(str, expected))} images but {name} has "
                           f"{'x'.join(map(str, shape))}; evaluate it on the data it was trained on (--dataset)")
    if expected is None:
        model.input_size = shape
    fc = getattr(model, "fc", None)
    n_out = getattr(fc, "out_features", None)
    if n_out is not None and int(n_out) != int(ds.num_classes):
        raise FracBNNError(f"{source} predicts {n_out} classes but {name} has {ds.num_classes}; evaluate it on "
                           "the data it was trained on (--dataset)")
