"""Classify PNG/JPEG images with a packed model (.fbnn), printing class and score.

Images must already have the model's input size (e.g. 32x32 for CIFAR
models); they are not resized, because the integer model is defined on that
size.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.fbnn", help="packed model from `fracbnn export`")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG or JPEG files")
    p.add_argument("--engine", default="golden", help="inference engine: golden (reference) or fast")
    p.add_argument("--top", type=int, default=1, help="show the best K classes (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args) -> int:
    from ..deploy.cli import infer_files

    return infer_files(args.model, args.images, engine=args.engine, top=args.top, as_json=args.json)
