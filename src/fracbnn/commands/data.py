"""Check (and prepare) a dataset: extract or download it once and report what was found.

Run it before a long or offline training run: CIFAR archives get extracted
into the cache (or downloaded, md5-checked) now, and the printed sizes,
classes and image shape confirm the data is what the recipe expects. For an
image folder every file is decoded (with a progress bar), so a corrupt, empty
or odd-sized image is named now rather than in the middle of training.

Examples:
  fracbnn data cifar10 --data ../shared/datasets/cifar-10-python.tar.gz
  fracbnn data imagefolder --data my_images --mode L --image-size 28 28
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="cifar10, cifar100, digits, imagefolder or imagenet")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="dataset folder or archive (e.g. cifar-10-python.tar.gz); default: $FRACBNN_DATA, "
                        "else the cache ($FRACBNN_CACHE, ~/.cache/fracbnn), else download")
    p.add_argument("--no-download", action="store_true", help="never download; fail if the data is not local")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="imagefolder only: resize images to H x W (as data.image_size in a recipe)")
    p.add_argument("--mode", default=None, metavar="MODE",
                   help="imagefolder only: RGB (3 channels, default) or L / grayscale (1 channel), as data.mode")
    p.add_argument("--no-check", action="store_true",
                   help="image folders: skip decoding every file (only count them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def describe(ds) -> dict:
    """Sizes, classes and image shape of one split (plus class balance for in-memory data)."""
    info = {"split": ds.split, "images": len(ds), "num_classes": ds.num_classes,
            "image_shape": [ds.in_channels, *ds.image_size], "source": getattr(ds, "source", "")}
    if getattr(ds, "in_memory", False):
        import torch

        counts = torch.bincount(ds.labels, minlength=ds.num_classes)
        info["per_class_min"], info["per_class_max"] = int(counts.min()), int(counts.max())
        info["pixel_mean"] = round(float(ds.images.float().mean()), 2)
    return info


def run(args) -> int:
    from ..data import cache_dir, load_dataset
    from ..errors import FracBNNError
    from ..train.config import _normalize_image_size, _normalize_mode

    kwargs = {}
    if args.image_size or args.mode:
        if str(args.name).lower() != "imagefolder":
            raise FracBNNError("--image-size and --mode apply to imagefolder only")
        if args.image_size:
            kwargs["image_size"] = tuple(_normalize_image_size(list(args.image_size)))
        if args.mode:
            kwargs["mode"] = _normalize_mode(args.mode)
    splits = [load_dataset(args.name, args.data, split=s, download=not args.no_download, **kwargs)
              for s in ("train", "test")]
    checked = False
    if not args.no_check:
        for ds in splits:
            if hasattr(ds, "check_files"):
                ds.check_files(progress=not (args.no_progress or args.json))
                checked = True
    report = {"name": args.name, "classes": list(splits[0].classes), "cache": str(cache_dir()),
              "splits": [describe(ds) for ds in splits], "files_checked": checked}
    if args.json:
        print(json.dumps(report))
        return 0
    names = report["classes"]
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    print(f"{args.name}: {len(names)} classes: {shown}")
    for s in report["splits"]:
        balance = f", {s['per_class_min']}..{s['per_class_max']} per class" if "per_class_min" in s else ""
        print(f"  {s['split']:5} {s['images']:>8,} images {'x'.join(map(str, s['image_shape']))}{balance}"
              f"  from {s['source']}")
    if checked:
        print(f"  every image file decodes{' and has the same size' if not args.image_size else ''}")
    print(f"cache: {report['cache']}")
    return 0
