"""Per-layer bits and operation counts of a registered model or a checkpoint.

MODEL is a registry name (e.g. resnet20-fracbnn) or a checkpoint file; for a
checkpoint with recorded gate statistics the measured LSB density is used.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="registry name (see --list) or checkpoint path")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--lsb-density", type=float, default=None, metavar="D",
                   help="share of outputs whose LSB pass runs (0..1); default: measured, else 1.0")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="image size (default: the model's own, e.g. 3 32 32)")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes (registry names only)")
    p.add_argument("--width", type=float, default=None, help="width multiplier (registry names only)")


def run(args) -> int:
    from ..errors import FracBNNError
    from ..models import create_model, list_models
    from ..summary import summarize

    if args.lsb_density is not None and not 0.0 <= args.lsb_density <= 1.0:
        raise FracBNNError(f"--lsb-density must be between 0 and 1, got {args.lsb_density}")
    densities = None
    if args.model in list_models():
        kwargs = {k: v for k, v in (("num_classes", args.num_classes), ("width", args.width)) if v is not None}
        model = create_model(args.model, **kwargs)
    elif os.path.exists(args.model):
        from ..checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(args.model)
        model = model_from_checkpoint(ckpt)
        densities = recorded_densities(ckpt)
    else:
        raise FracBNNError(f"{args.model!r} is neither a model name ({', '.join(list_models())}) nor a file")
    size = _checked_input_size(model, args.input_size)
    try:
        s = summarize(model, input_size=size, lsb_density=args.lsb_density, layer_densities=densities)
    except (RuntimeError, ValueError) as e:  # images too small for the strides/pooling of the network
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise FracBNNError(f"{args.model} cannot run on {'x'.join(map(str, size))} images ({first}); pass a larger "
                           "--input-size, e.g. the model's own") from None
    print(s.to_json() if args.json else s.format_table())
    return 0


def _checked_input_size(model, size):
    """``--input-size`` with positive sizes and the model's channel count (None: the model's own)."""
    from ..errors import FracBNNError

    if size is None:
        return None
    if min(size) < 1:
        raise FracBNNError(f"--input-size must be three positive numbers C H W, got {' '.join(map(str, size))}")
    channels = getattr(model, "spec", {}).get("kwargs", {}).get("in_channels")
    if channels is not None and int(channels) != size[0]:
        raise FracBNNError(f"{model.spec['name']} takes {channels}-channel images, --input-size gives {size[0]}; "
                           f"pass {channels} as C")
    return tuple(size)


def recorded_densities(ckpt: dict) -> dict[str, float] | None:
    """Per-layer LSB densities measured at the end of training (``results.sparsity``), if any."""
    sparsity = (ckpt.get("results") or {}).get("sparsity") or {}
    return {name: 1.0 - float(v) for name, v in sparsity.items()} or None
