"""Convert a trained checkpoint into a packed integer model (.fbnn).

Binary weights are packed 1 bit each; BatchNorm, RPReLU, the gating
thresholds, residual additions and the next quantizer are folded into integer
comparisons and fixed-point arithmetic (docs/deploy-format.md). The file is
checked by SHA-256 and never overwritten unless --force is given.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..deploy.export import FixedPoint

    d = FixedPoint()
    p.add_argument("checkpoint", metavar="CKPT", help="trained checkpoint (.pt) of a -fracbnn or -bnn model")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.fbnn", help="packed model to write")
    p.add_argument("--frac-bits", type=int, default=d.frac_bits,
                   help=f"fraction bits F of the residual stream (default {d.frac_bits})")
    p.add_argument("--residual-bits", type=int, default=d.residual_bits,
                   help=f"total bits of the saturating residual stream (default {d.residual_bits})")
    p.add_argument("--param-frac-bits", type=int, default=d.param_frac_bits,
                   help=f"fraction bits P of the folded coefficients (default {d.param_frac_bits})")
    p.add_argument("--force", action="store_true", help="overwrite MODEL.fbnn if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args) -> int:
    import hashlib
    import json
    from pathlib import Path

    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..deploy.export import CIFAR10_CLASSES, FixedPoint, export_model
    from ..deploy.preprocess import attach_data_facts
    from ..errors import FracBNNError

    out = Path(args.output)
    if out.exists() and not args.force:
        raise FracBNNError(f"{out} exists; choose another -o path or pass --force to overwrite it")
    if out.suffix != ".fbnn":
        raise FracBNNError(f"the output name should end in .fbnn (got {out.name}); `fracbnn eval` recognises "
                           "packed models by that suffix")
    fx = FixedPoint(args.frac_bits, args.residual_bits, args.param_frac_bits).check()
    ckpt_path = Path(args.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    model = attach_data_facts(model_from_checkpoint(ckpt, source=str(ckpt_path)).eval(), ckpt)
    digest = hashlib.sha256(ckpt_path.read_bytes()).hexdigest()
    names = None
    if getattr(model, "classes", None) is None and _data_name(ckpt) == "cifar10" \
            and getattr(getattr(model, "fc", None), "out_features", None) == 10:
        names = CIFAR10_CLASSES  # a checkpoint from before class names were recorded, trained on CIFAR-10
    packed = export_model(model, fx, class_names=names,
                          source={"checkpoint": ckpt_path.name, "checkpoint_sha256": digest})
    try:
        packed.save(out)
    except OSError as e:  # read-only or full disk, no permission: the old file (if any) is untouched
        raise FracBNNError(f"cannot write {out} ({e.strerror or e}); choose another -o location") from None
    weight_bits = sum(int(t.size) * 8 for n, t in packed.tensors.items() if t.dtype.name == "uint8")
    res = {"output": str(out), "model": packed.meta["model"]["name"], "bytes": out.stat().st_size,
           "checkpoint_bytes": ckpt_path.stat().st_size, "ops": len(packed.program),
           "packed_weight_bits": weight_bits, "fixed_point": packed.meta["fixed_point"]}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"wrote {out}: {res['model']}, {len(packed.program)} ops, {res['bytes']:,} bytes "
              f"(checkpoint {res['checkpoint_bytes']:,} bytes); F={fx.frac_bits} B={fx.residual_bits} "
              f"P={fx.param_frac_bits}")
    return 0


def _data_name(ckpt: dict):
    """The data set named by the checkpoint's training config (``config.data.name``), or None."""
    cfg = ckpt.get("config")
    data = cfg.get("data") if isinstance(cfg, dict) else None
    return data.get("name") if isinstance(data, dict) else None
