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
    p.add_argument("--frac-bits", default=str(d.frac_bits), metavar="F|auto",
                   help=f"fraction bits F of the residual stream (default {d.frac_bits}); 'auto': each layer gets the "
                        f"fewest bits (<= {d.frac_bits}) at which top-1 still agrees with PyTorch on the calibration "
                        "images (--agreement), with residual widths fitted as for --residual-bits auto (needs the data)")
    p.add_argument("--agreement", type=float, default=0.998, metavar="A",
                   help="with --frac-bits auto: the top-1 agreement with PyTorch to keep on each half of the "
                        "calibration images (default 0.998, a margin above the 0.995 the test set should show; "
                        "use thousands of --calibrate images so the halves measure it)")
    p.add_argument("--residual-bits", default=str(d.residual_bits), metavar="B|auto",
                   help=f"total bits of the saturating residual stream (default {d.residual_bits}); 'auto': each "
                        "layer gets the narrowest width holding 2x its peak on calibration images (needs the data)")
    p.add_argument("--param-frac-bits", type=int, default=d.param_frac_bits,
                   help=f"fraction bits P of the folded coefficients (default {d.param_frac_bits})")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="the training data (as for `fracbnn train`); with it, export checks on --calibrate training "
                        "images that no residual value saturates and reports where one does")
    p.add_argument("--calibrate", type=int, default=500, metavar="N",
                   help="calibration images from the training split (default 500; used with --data or auto)")
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
    frac_auto = str(args.frac_bits).lower() == "auto"
    try:
        frac_bits = FixedPoint().frac_bits if frac_auto else int(args.frac_bits)
    except ValueError:
        raise FracBNNError(f"--frac-bits must be a number of bits or 'auto', got {args.frac_bits!r}") from None
    if not 0.5 <= args.agreement <= 1.0:
        raise FracBNNError(f"--agreement must be a fraction in 0.5..1, got {args.agreement}")
    auto = str(args.residual_bits).lower() == "auto" or frac_auto
    try:
        residual_bits = FixedPoint().residual_bits if auto else int(args.residual_bits)
    except ValueError:
        raise FracBNNError(f"--residual-bits must be a number of bits or 'auto', got {args.residual_bits!r}") from None
    if args.calibrate < 1:
        raise FracBNNError(f"--calibrate must be at least 1 image, got {args.calibrate}")
    fx = FixedPoint(frac_bits, residual_bits, args.param_frac_bits).check()
    ckpt_path = Path(args.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    model = attach_data_facts(model_from_checkpoint(ckpt, source=str(ckpt_path)).eval(), ckpt)
    digest = hashlib.sha256(ckpt_path.read_bytes()).hexdigest()
    names = None
    if getattr(model, "classes", None) is None and _data_name(ckpt) == "cifar10" \
            and getattr(getattr(model, "fc", None), "out_features", None) == 10:
        names = CIFAR10_CLASSES  # a checkpoint from before class names were recorded, trained on CIFAR-10
    kwargs = dict(class_names=names, source={"checkpoint": ckpt_path.name, "checkpoint_sha256": digest})
    packed = export_model(model, fx, **kwargs)
    saturation = None
    if auto or args.data is not None:
        from ..deploy.preprocess import sample_images
        from ..deploy.widths import calibrated_export, saturation_report, search_frac_bits

        images, where = sample_images(packed, args.calibrate, data=args.data, split="train",
                                      missing_hint="; calibration needs the training data (--data DIR)")
        if frac_auto:  # per-layer F searched, B fitted at each F: nothing saturates on these images
            packed, _ = search_frac_bits(model, fx, images, target=args.agreement, progress=not args.json, **kwargs)
            packed.meta["calibration"]["source"] = where
            saturation = {}
        elif auto:  # widths fitted to 2x the measured peaks: nothing saturates on these images by construction
            packed, _ = calibrated_export(model, fx, images, **kwargs)
            packed.meta["calibration"]["source"] = where
            saturation = {}
        else:
            saturation = {k: c for k, (c, _) in saturation_report(packed, images).items() if c}
        if saturation and not args.json:
            worst = sorted(saturation.items(), key=lambda kv: -kv[1])[:3]
            print(f"warning: {sum(saturation.values())} residual values saturate on {len(images)} calibration images "
                  f"(most in {', '.join(f'{k} ({v})' for k, v in worst)}); logits will differ from PyTorch there: "
                  "export with --residual-bits auto (per-layer widths) or a larger --residual-bits")
    elif not args.json:
        print("note: saturation not checked (pass --data DIR to check it on training images, or "
              "--residual-bits auto to fit per-layer widths)")
    try:
        packed.save(out)
    except OSError as e:  # read-only or full disk, no permission: the old file (if any) is untouched
        raise FracBNNError(f"cannot write {out} ({e.strerror or e}); choose another -o location") from None
    weight_bits = sum(int(t.size) * 8 for n, t in packed.tensors.items() if t.dtype.name == "uint8")
    res = {"output": str(out), "model": packed.meta["model"]["name"], "bytes": out.stat().st_size,
           "checkpoint_bytes": ckpt_path.stat().st_size, "ops": len(packed.program),
           "packed_weight_bits": weight_bits, "fixed_point": packed.meta["fixed_point"],
           "residual_bits_by_layer": {n["output"]: n["bits"] for n in packed.program
                                      if n["op"] in ("scale_shift", "block_post")},
           "frac_bits_by_layer": packed.meta["fixed_point"].get("frac_widths"),
           "saturated_values": None if saturation is None else sum(saturation.values())}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"wrote {out}: {res['model']}, {len(packed.program)} ops, {res['bytes']:,} bytes "
              f"(checkpoint {res['checkpoint_bytes']:,} bytes); F={'auto' if frac_auto else fx.frac_bits} "
              f"B={'auto' if auto else fx.residual_bits} "
              f"P={fx.param_frac_bits}")
        if auto:
            widths = sorted(set(res["residual_bits_by_layer"].values()))
            print(f"per-layer residual widths {widths[0]}..{widths[-1]} bits from {args.calibrate} calibration images "
                  f"({packed.meta['calibration']['source']}); saturated values there: {res['saturated_values']}")
        if frac_auto:
            cal = packed.meta["calibration"]
            fr = sorted(set(res["frac_bits_by_layer"].values()))
            print(f"per-layer fraction bits {fr[0]}..{fr[-1]} (one F for all would need {cal['uniform_frac_bits']}); "
                  f"top-1 agreement with PyTorch {cal['agreement']:.2%} on the search half of the calibration "
                  f"images, {cal['agreement_held_out']:.2%} on the held-out half (target {cal['target']:.2%}, "
                  f"{cal['backoff_bits']} bits given back, {cal['trials']} trial exports)")
            if min(cal["agreement"], cal["agreement_held_out"]) < cal["target"]:
                print(f"warning: even at F = {fx.frac_bits} everywhere the agreement stays below the target; "
                      "lower --agreement or use more --calibrate images")
    return 0


def _data_name(ckpt: dict):
    """The data set named by the checkpoint's training config (``config.data.name``), or None."""
    cfg = ckpt.get("config")
    data = cfg.get("data") if isinstance(cfg, dict) else None
    return data.get("name") if isinstance(data, dict) else None
