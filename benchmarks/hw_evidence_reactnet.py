"""Evidence for the ImageNet (ReActNet FracBNN) accelerator; run through `hw_evidence.py --model reactnet-fracbnn`.

Reduced models at 64 x 64 (so csim takes seconds): a random one with data-like BN statistics and part-open
gates at width 0.25 (channel tiles of 32 lanes, 2..256 channels), the same with most gates open, and a
briefly trained width-0.125 model (``--trained DIR``: the work folder of benchmarks/reactnet_agreement.py;
else trained here for ``--train-steps`` on the CIFAR-10 copy when ``--data`` is given, resumable in --out).
Each is generated, C-simulated against the golden engine and reported (model vs counted cycles, LSB work
saved). The full network (width 1, 224 x 224) is then modelled with the trained model's gate density per
layer, next to the published configuration (``speedup_vs_published_fps``); ``--full-images N`` (default 2)
also C-simulates a random full-width model at 224 x 224 on N images, whose measured figures then head the
summary. Last line: one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _data_like(width: float, size: int, seed: int, open_range=(0.2, 0.8), classes: int = 10):
    from fracbnn.models import create_model
    from fracbnn.models.calibrate import data_like, smooth_images

    torch.manual_seed(seed)
    m = create_model("reactnet-fracbnn", num_classes=classes, width=width)
    data_like(m, smooth_images(16, (size, size), 3, seed=seed), seed=seed, open_range=open_range)
    m.input_size = (3, size, size)
    return m.eval()


def _trained(args, out: Path):
    """(model, origin) of a briefly trained width-0.125 model at 64 x 64, or (None, reason)."""
    sys.path.insert(0, str(HERE))
    import reactnet_agreement as ra
    from fracbnn.data import load_dataset
    from fracbnn.models import create_model

    src = Path(args.trained) if args.trained else out / "trained"
    width = 0.125
    meta = src / "agreement.json"
    if meta.is_file():
        width = json.loads(meta.read_text()).get("width", width)
    model = create_model("reactnet-fracbnn", num_classes=10, width=width)
    model.input_size = (3, 64, 64)
    ckpt = src / "model.pt"
    if args.trained:
        if not ckpt.is_file():
            return None, f"{ckpt} not found (train one with benchmarks/reactnet_agreement.py --out {src})"
        model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
        return model.eval(), f"{ckpt} (width {width})"
    if not args.data:
        return None, "no --trained DIR and no --data to train on"
    src.mkdir(parents=True, exist_ok=True)
    train = load_dataset("cifar10", args.data, "train", download=False)
    model = ra.train(model, train.images, train.labels, args.train_steps, 32, 2e-3, ckpt)
    return model.eval(), f"trained here for {args.train_steps} steps ({ckpt})"


def _images(args, n: int, size: int):
    from fracbnn.models.calibrate import smooth_images

    if args.data and size == 64:
        from fracbnn.data import load_dataset

        test = load_dataset("cifar10", args.data, "test", download=False)
        x = test.images[:n].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        return x.numpy().astype(np.uint8), f"CIFAR-10 test images 0..{n - 1}, upsampled 2x"
    x = smooth_images(n, (size, size), 3, seed=7).numpy().astype(np.uint8)
    x[0] = 0
    if n > 1:
        x[1] = 255
    return x, "seeded smooth random images (incl. all-0 and all-255)"


def run_one(name: str, model, images, origin: str, out: Path) -> dict:
    from fracbnn.deploy import export_model
    from fracbnn.hw.csim import run_csim
    from fracbnn.hw.generate import load_project
    from fracbnn.hw.reactnet.generate import generate_rx_project, rx_from_project
    from fracbnn.hw.reactnet.report import build_rx_report

    packed = export_model(model)
    d = out / name
    t0 = time.time()
    generate_rx_project(packed, d, images=images, image_origin=origin, model_label=name)
    t1 = time.time()
    res = run_csim(d)
    t2 = time.time()
    meta = load_project(d)
    cfg, shapes = rx_from_project(meta)
    rep = build_rx_report(shapes, cfg, gates=meta.get("gates"), csim=res,
                          n_classes=meta["num_classes"], coef_bits=meta.get("coef_bits"),
                          thermo_bits=meta.get("thermo_bits", 32))
    c = rep["csim"]
    row = {"images": res["images"], "mismatched_images": res["mismatched_images"], "input_size": list(packed.input_size),
           "csim_cycles": c["csim_cycles"], "model_cycles": c["model_cycles"],
           "model_vs_csim": c["relative_error"], "max_layer_model_vs_csim": c["max_layer_relative_error"],
           "lsb_share_of_full_sweep": rep["lsb"]["share_of_full_sweep"], "fps_model": rep["totals"]["fps"],
           "gate_density": {n: g["gate_density"] for n, g in (meta.get("gates") or {}).items()},
           "generate_s": round(t1 - t0, 1), "csim_s": round(t2 - t1, 1),
           "speedup_vs_published_fps": rep["published"]["speedup_vs_published_fps"],
           "published_fps": rep["published"]["fps"], "dram_bytes": rep["totals"]["dram_bytes"],
           "dram_bandwidth_share": rep["totals"]["dram_bandwidth_share"],
           "resources": {k: rep["totals"][k] for k in ("lut", "ff", "bram18k", "dsp")}, "fits": rep["fits"]}
    print(f"{name}: {res['images']} images, {res['mismatched_images']} mismatched; csim {c['csim_cycles']:,.1f} "
          f"cycles/image, model {c['model_cycles']:,.1f} ({100 * c['relative_error']:+.2f}%, max per layer "
          f"{100 * c['max_layer_relative_error']:.2f}%); LSB {100 * row['lsb_share_of_full_sweep']:.1f}% of full "
          f"sweeps; generate {row['generate_s']} s, csim {row['csim_s']} s", flush=True)
    return row


def main(args) -> int:
    from fracbnn.hw.reactnet.design import proposed_imagenet
    from fracbnn.hw.reactnet.program import reactnet_shapes
    from fracbnn.hw.reactnet.report import build_rx_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, origin = _images(args, args.images, 64)
    runs = {}
    runs["random-w0.25"] = run_one("random-w0.25", _data_like(0.25, 64, 0), images, origin, out)
    runs["random-w0.25-open"] = run_one("random-w0.25-open", _data_like(0.25, 64, 1, (0.6, 0.95)), images, origin,
                                        out)
    trained, why = _trained(args, out)
    if trained is None:
        print(f"skip trained model: {why}")
    else:
        runs["trained"] = run_one("trained", trained, images, origin, out)
        runs["trained"]["origin"] = why
    if args.full_images:
        full_imgs, full_origin = _images(args, args.full_images, 224)
        runs["random-full-224"] = run_one("random-full-224", _data_like(1.0, 224, 2, classes=1000), full_imgs,
                                          full_origin, out)
    # the published network at 224 x 224: measured on the full-width model when it was simulated (its own gates),
    # and estimated with the trained model's gate density per layer (busiest lanes as independent gates)
    src = runs.get("trained") or runs["random-w0.25"]
    full = build_rx_report(reactnet_shapes(1.0, 224), proposed_imagenet(), densities=src["gate_density"],
                           n_classes=1000)
    est = {"fps": full["totals"]["fps"], "published_fps": full["published"]["fps"],
           "speedup_vs_published_fps": full["published"]["speedup_vs_published_fps"],
           "lsb_share_of_full_sweep": full["lsb"]["share_of_full_sweep"],
           "gate_densities_from": "trained" if "trained" in runs else "random-w0.25"}
    measured = runs.get("random-full-224")
    head = measured or {"speedup_vs_published_fps": est["speedup_vs_published_fps"], "fps_model": est["fps"],
                        "published_fps": est["published_fps"], "dram_bytes": full["totals"]["dram_bytes"],
                        "dram_bandwidth_share": full["totals"]["dram_bandwidth_share"],
                        "lsb_share_of_full_sweep": est["lsb_share_of_full_sweep"],
                        "resources": {k: full["totals"][k] for k in ("lut", "ff", "bram18k", "dsp")},
                        "fits": full["fits"]}
    summary = {
        "model": "reactnet-fracbnn", "images": args.images, "image_origin": origin,
        "mismatched_images": sum(r["mismatched_images"] for r in runs.values()),
        "csim_images": sum(r["images"] for r in runs.values()),
        "full_224_from": "csim of the full-width model" if measured else "model with the trained densities",
        "speedup_vs_published_fps": head["speedup_vs_published_fps"], "fps": head["fps_model"],
        "published_fps": head["published_fps"], "dram_bytes": head["dram_bytes"],
        "dram_bandwidth_share": head["dram_bandwidth_share"], "lsb_share_of_full_sweep": head["lsb_share_of_full_sweep"],
        "resources": head["resources"], "fits": head["fits"], "estimate_with_trained_densities": est,
        "runs": runs,
    }
    print(f"full network 224x224 ({summary['full_224_from']}): {summary['fps']:.1f} images/s vs the published "
          f"configuration {summary['published_fps']:.1f} = {summary['speedup_vs_published_fps']:.2f}x; DRAM "
          f"{summary['dram_bytes'] / 1e6:.2f} MB/image ({100 * summary['dram_bandwidth_share']:.0f}% of the assumed "
          f"bandwidth); LSB {100 * summary['lsb_share_of_full_sweep']:.1f}% of full sweeps; with the "
          f"{est['gate_densities_from']} model's gate densities: {est['fps']:.1f} images/s = "
          f"{est['speedup_vs_published_fps']:.2f}x")
    print(json.dumps(summary))
    return 1 if summary["mismatched_images"] else 0
