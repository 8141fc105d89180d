"""FPGA accelerator: generate a Vitis HLS project, C-simulate it, report cycles and resources.

  fracbnn hw generate model.fbnn --board ultra96v2 -o DIR   # HLS project + testbench (100 test images
                                                            # of the model's recorded data set; --data PATH)
  fracbnn hw csim DIR                                       # g++ build + run; exit 1 on any logit mismatch
  fracbnn hw report DIR|model.fbnn [--json]                 # per-layer cycles, images/s, LUT/FF/BRAM/DSP

The design and every formula of the models: docs/hw.md.
"""

from __future__ import annotations

import argparse


def _config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("accelerator configuration (default: the proposed Ultra96 design)")
    g.add_argument("--design", choices=("fracbnn", "published"), default="fracbnn",
                   help="loop structure: ours, or the published design's (report only)")
    g.add_argument("--lanes", type=int, help="output channels computed in parallel (power of two)")
    g.add_argument("--word-bits", type=int, help="XNOR-popcount word width (power of two)")
    g.add_argument("--min-segment-bits", type=int,
                   help="narrowest popcount segment; word/segment pixels per cycle on narrow layers")
    g.add_argument("--epilogue-units", type=int, help="(channel, pixel) pairs the epilogue handles per cycle")
    g.add_argument("--no-lsb-skip", action="store_true", help="sweep every LSB tile (no gate-driven skipping)")
    lsb = g.add_mutually_exclusive_group()
    lsb.add_argument("--lsb-lanes", action="store_true",
                     help="LSB work lists per lane (open pixel x channel entries; the default design)")
    lsb.add_argument("--lsb-tiles", action="store_true",
                     help="LSB work list per 2-pixel x 16-channel tile instead of per lane: fewer BRAM18K, but on a "
                     "trained network almost every tile has an open gate (docs/hw.md)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="hw_command", metavar="ACTION")
    g = sub.add_parser("generate", help="write a Vitis HLS project for a packed model",
                       description="Write a Vitis HLS project (kernel, parameter headers, testbench with real "
                       "test images and golden logits, TCL, PYNQ driver, README) for a packed FracBNN: a CIFAR ResNet (weights in "
                       "headers) or a ReActNet FracBNN (the ImageNet accelerator; weights in params.bin).")
    g.add_argument("model", metavar="MODEL.fbnn", help="packed model written by `fracbnn export` (a fracbnn "
                   "checkpoint is exported on the fly)")
    g.add_argument("--board", default="ultra96v2", help="target board (ultra96v2)")
    g.add_argument("-o", "--out", required=True, metavar="DIR", help="project directory (new or a previous project)")
    g.add_argument("--images", type=int, default=100, metavar="N", help="test images in the testbench (default 100)")
    _data_args(g)
    g.add_argument("--calib-images", type=int, default=64, metavar="K",
                   help="training images (random with --random-images) used to order output channels "
                   "by gate rate so rarely-open channels share lanes (default 64; 0 keeps the natural order)")
    _config_args(g)
    c = sub.add_parser("csim", help="build and run the C testbench with g++",
                       description="Compile the project's kernel and testbench with g++ -O2, run it on the stored "
                       "images, print per-layer cycle counts; exit 1 if any logit differs from the golden engine.")
    c.add_argument("project", metavar="DIR")
    c.add_argument("--json", action="store_true", help="print the csim result as JSON")
    r = sub.add_parser("report", help="cycles, images/s and resource estimate",
                       description="Per-layer cycles, latency, images/s and an LUT/FF/BRAM18K/DSP estimate of the "
                       "design; for a project DIR also the comparison with its C simulation's cycle counts.")
    r.add_argument("target", metavar="DIR|MODEL.fbnn", help="a generated project or a packed model")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--lsb-density", type=float, metavar="D",
                   help="LSB tile density to assume for every layer (default: measured)")
    r.add_argument("--images", type=int, default=100, metavar="N",
                   help="images to measure LSB densities on, for a MODEL.fbnn (default 100)")
    _data_args(r)
    _config_args(r)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", help="the model's data set: an image folder with train/ and val/, or "
                   "the CIFAR folder / archive (default: $FRACBNN_DATA, else the data cache; never downloaded); "
                   "a missing or wrong path is an error")
    p.add_argument("--dataset", metavar="NAME", help="data set name (default: the one recorded in the model)")
    p.add_argument("--random-images", action="store_true",
                   help="use seeded random pixels instead of the data set (say so explicitly: never a fallback)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random images")


def _config(args, base=None):
    from ..errors import FracBNNError
    from ..hw.design import proposed_ultra96, published_ultra96, with_overrides

    if base is None:
        base = published_ultra96() if args.design == "published" else proposed_ultra96()
    try:
        if args.no_lsb_skip and args.lsb_lanes:
            raise ValueError("--lsb-lanes skips closed LSB work; it cannot be combined with --no-lsb-skip")
        tiles = args.lsb_tiles or args.no_lsb_skip  # full sweeps run over tiles
        cfg = with_overrides(base, lanes=args.lanes, word_bits=args.word_bits,
                             min_segment_bits=args.min_segment_bits, epilogue_units=args.epilogue_units,
                             lsb_skip=False if args.no_lsb_skip else None,
                             lsb_lanes=False if tiles else (True if args.lsb_lanes else None))
        if tiles and cfg.name == "fracbnn-ultra96":
            cfg = with_overrides(cfg, name="fracbnn-ultra96-tiles")
    except ValueError as e:
        raise FracBNNError(str(e)) from None
    return cfg


RANDOM_HINT = " (or pass --random-images for seeded random pixels)"


def _calib_images(args, packed, n):
    from ..deploy.preprocess import sample_images

    if n <= 0:
        return None
    return sample_images(packed, n, data=args.data, dataset=args.dataset, split="train", seed=args.seed,
                         random=args.random_images, missing_hint=RANDOM_HINT)[0]


def _images(args, packed, n):
    from ..errors import FracBNNError
    from ..deploy.preprocess import sample_images

    if n < 1:
        raise FracBNNError(f"--images must be at least 1, got {n}")
    return sample_images(packed, n, data=args.data, dataset=args.dataset, seed=args.seed, random=args.random_images,
                         missing_hint=RANDOM_HINT)


def _magic(p) -> bytes:
    with open(p, "rb") as f:
        return f.read(4)


def _load_model(path):
    """A packed model from a .fbnn file, or exported on the fly from a fracbnn checkpoint."""
    from pathlib import Path

    from ..deploy import PackedModel

    p = Path(path)
    if p.is_file() and _magic(p) != b"FBNN":
        from ..checkpoint import load_checkpoint, model_from_checkpoint
        from ..deploy import export_model
        from ..deploy.preprocess import attach_data_facts

        ckpt = load_checkpoint(p)
        return export_model(attach_data_facts(model_from_checkpoint(ckpt, source=str(p)).eval(), ckpt))
    return PackedModel.load(p)


def _rx_config(args, base=None):
    """The ImageNet design's configuration: ``base`` (a project's) or the proposed / published one, with the
    options that apply to it; the CIFAR-only options are refused."""
    from ..errors import FracBNNError
    from ..hw.reactnet.design import proposed_imagenet, published_imagenet, with_overrides

    foreign = [o for o, v in (("--min-segment-bits", args.min_segment_bits), ("--epilogue-units", args.epilogue_units),
                              ("--lsb-lanes", args.lsb_lanes), ("--lsb-tiles", args.lsb_tiles)) if v]
    if foreign:
        raise FracBNNError(f"{', '.join(foreign)} apply to the CIFAR design only; the ImageNet (ReActNet) design "
                           "takes --lanes, --word-bits, --no-lsb-skip and --design")
    if base is None or args.design == "published":
        base = published_imagenet() if args.design == "published" else proposed_imagenet()
    try:
        return with_overrides(base, lanes=args.lanes, word_bits=args.word_bits,
                              lsb_skip=False if args.no_lsb_skip else None)
    except ValueError as e:
        raise FracBNNError(str(e)) from None


def _generate_reactnet(args, packed) -> int:
    from pathlib import Path

    from ..hw.reactnet.generate import generate_rx_project
    from ..hw.reactnet.program import rx_program

    rx_program(packed)  # unsupported variants (binary ReActNet, wide shortcuts) fail before images are read
    cfg = _rx_config(args)
    images, origin = _images(args, packed, args.images)
    meta = generate_rx_project(packed, args.out, cfg=cfg, board=args.board, images=images, image_origin=origin,
                               model_label=Path(args.model).name)
    print(f"wrote {args.out}: ImageNet accelerator, {len(meta['layers'])} conv layers, "
          f"{meta['params_bytes']:,} bytes of weights and constants, {meta['test_images']['count']} test images "
          f"({origin}); next: fracbnn hw csim {args.out}")
    return 0


def _csim_reactnet(args, meta: dict) -> int:
    import json

    from ..hw.csim import run_csim
    from ..hw.reactnet.generate import rx_from_project
    from ..hw.reactnet.model import cycle_model
    from ..hw.reactnet.report import compare_with_csim

    cfg, shapes = rx_from_project(meta)  # a damaged project file fails before the build
    res = run_csim(args.project)
    model = cycle_model(shapes, cfg, meta.get("gates"), thermo_bits=meta.get("thermo_bits", 32))
    cmp = compare_with_csim(model, res)
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "stdout"} | {"model_comparison": cmp}, indent=1))
    else:
        print(res["stdout"].rstrip())
        print(f"csim: {res['images']} images, {res['mismatched_images']} mismatched, "
              f"{res['cycles_per_image']:,.1f} cycles/image; cycle model {cmp['model_cycles']:,.1f} "
              f"({100 * cmp['relative_error']:+.2f}%)")
    return 1 if res["returncode"] != 0 else 0


def run(args) -> int:
    import json
    from pathlib import Path

    from ..errors import FracBNNError

    if not args.hw_command:
        raise FracBNNError("choose an action: fracbnn hw generate|csim|report (see fracbnn hw --help)")
    if args.hw_command == "generate":
        from ..hw.generate import check_output_dir, generate_project

        check_output_dir(args.out)
        if args.design == "published":
            raise FracBNNError("--design published is a reference for `hw report`; the generator writes our design")
        packed = _load_model(args.model)
        from ..hw.reactnet.program import is_reactnet_program

        if is_reactnet_program(packed):
            return _generate_reactnet(args, packed)
        cfg = _config(args)
        images, origin = _images(args, packed, args.images)
        calib = _calib_images(args, packed, args.calib_images)
        meta = generate_project(packed, args.out, cfg=cfg, board=args.board, images=images, image_origin=origin,
                                model_label=Path(args.model).name, calib_images=calib)
        print(f"wrote {args.out}: {len(meta['layers'])} conv layers, {meta['test_images']['count']} test images "
              f"({origin}); next: fracbnn hw csim {args.out}")
        return 0
    if args.hw_command == "csim":
        from ..hw.csim import run_csim
        from ..hw.generate import config_from_project, layers_from_project, load_project

        meta = load_project(args.project)
        if meta.get("family") == "reactnet":
            return _csim_reactnet(args, meta)
        from ..hw.perf_model import cycle_model
        from ..hw.measure import measured
        from ..hw.report import compare_with_csim

        layers = layers_from_project(meta)  # a damaged project file fails before the build
        cfg = config_from_project(meta)
        res = run_csim(args.project)
        dens, entries = measured(meta["lsb"], cfg)
        cmp = compare_with_csim(cycle_model(layers, cfg, dens, n_classes=meta["num_classes"], lsb_entries=entries),
                                res)
        if args.json:
            print(json.dumps({k: v for k, v in res.items() if k != "stdout"} | {"model_comparison": cmp}, indent=1))
        else:
            print(res["stdout"].rstrip())
            print(f"cycle model: {cmp['model_cycles']:,} cycles/image vs csim {cmp['csim_cycles']:,.1f} "
                  f"({100 * cmp['relative_error']:+.2f}%)")
        return 1 if res["returncode"] != 0 else 0
    # report
    from ..hw.report import build_report, format_report, load_csim

    if args.lsb_density is not None and not 0.0 <= args.lsb_density <= 1.0:
        raise FracBNNError(f"--lsb-density must be between 0 and 1, got {args.lsb_density}")
    target = Path(args.target)
    meta = packed = None
    if target.is_dir():
        from ..hw.generate import load_project

        meta = load_project(target)
        reactnet = meta.get("family") == "reactnet"
    else:
        from ..hw.reactnet.program import is_reactnet_program

        packed = _load_model(target)
        reactnet = is_reactnet_program(packed)
    if reactnet:  # the ImageNet design has its own model and report
        return _report_reactnet(args, target, meta, packed)
    if meta is not None:
        from ..hw.generate import config_from_project, layers_from_project

        base = config_from_project(meta) if args.design == "fracbnn" else None
        cfg = _config(args, base)
        layers = layers_from_project(meta)
        stats = meta["lsb"]
        csim = load_csim(target) if cfg == config_from_project(meta) else None
        n_classes, source = meta["num_classes"], f"{target} ({meta.get('model', '')})"
        widths = meta.get("widths")  # what the generated kernel declares (absent in projects of older versions)
    else:
        from ..hw.program import hw_program

        cfg = _config(args)
        prog = hw_program(packed)
        layers, csim, n_classes, source = prog.shapes, None, len(prog.fc_bias), str(target)
        from ..hw.widths import declared_widths

        widths = declared_widths(prog)  # what `hw generate` would declare for this model
        stats = {}
        if args.lsb_density is None and cfg.style == "fracbnn":
            from ..hw.measure import calibrate

            calib = _calib_images(args, packed, 64)
            images, origin = _images(args, packed, args.images)
            stats = calibrate(packed, prog, cfg, images, calib)  # the generator's channel order and densities
            source += f" (LSB densities measured on {len(images)} {origin.split(' from ')[0]})"
    from ..hw.measure import measured

    dens = args.lsb_density if args.lsb_density is not None else measured(stats, cfg)[0]
    rep = build_report(layers, cfg, dens, lsb_stats=stats, csim=csim, source=source, n_classes=n_classes,
                       widths=widths if cfg.style == "fracbnn" else None)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0


def _report_reactnet(args, target, meta: dict | None, packed) -> int:
    """`hw report` of a ReActNet project (``meta``, its project file) or packed model (``packed``): the ImageNet
    design's model, DRAM, resources, published design and (for a project) the csim comparison."""
    import json

    from ..hw.reactnet.generate import rx_from_project
    from ..hw.reactnet.report import build_rx_report, format_rx_report
    from ..hw.report import load_csim

    if meta is not None:
        saved, shapes = rx_from_project(meta)
        cfg = _rx_config(args, saved)
        gates = meta.get("gates") or {}
        csim = load_csim(target) if cfg == saved else None
        n_classes, coef_bits = meta["num_classes"], meta.get("coef_bits")
        thermo_bits = meta.get("thermo_bits", 32)
        source = f"{target} ({meta.get('model', '')})"
    else:
        from ..hw.reactnet.design import proposed_imagenet
        from ..hw.reactnet.measure import gate_stats
        from ..hw.reactnet.model import coefficient_bits
        from ..hw.reactnet.program import rx_program

        prog = rx_program(packed)
        cfg = _rx_config(args)
        shapes, csim, n_classes = prog.shapes, None, len(prog.fc_bias)
        coef_bits, thermo_bits, source = coefficient_bits(prog), prog.thermo_bits, str(target)
        gates = {}
        if args.lsb_density is None:
            images, origin = _images(args, packed, args.images)
            lists_cfg = cfg if cfg.style == "fracbnn" else proposed_imagenet()
            gates = gate_stats(packed, prog, lists_cfg, images)
            source += f" (gates measured on {len(images)} {origin.split(' from ')[0]})"
    dens = args.lsb_density
    rep = build_rx_report(shapes, cfg, gates=gates if dens is None else None, densities=dens, csim=csim,
                          source=source, n_classes=n_classes, coef_bits=coef_bits, thermo_bits=thermo_bits)
    print(json.dumps(rep, indent=1) if args.json else format_rx_report(rep))
    return 0
