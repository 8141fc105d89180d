"""Throughput of the inference engines on a packed model (random images).

Also reports whether each engine's integer logits are identical to the
first engine's (the golden engine by default), on the same images.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.fbnn", help="packed model from `fracbnn export`")
    p.add_argument("--engines", default=None,
                   help="comma-separated engine names (default: golden, plus fast when available)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--batches", type=int, default=3, help="timed batches per engine (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from ..deploy import fast
    from ..deploy.cli import bench_engines
    from ..errors import FracBNNError

    if args.batch_size < 1 or args.batches < 1:
        raise FracBNNError("--batch-size and --batches must be at least 1")
    if args.engines:
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    else:
        # the fast engine is listed only when its compiled extension is importable
        engines = ["golden"] + (["fast"] if fast.available() else [])
    return bench_engines(args.model, engines, args.batch_size, args.batches, as_json=args.json)
