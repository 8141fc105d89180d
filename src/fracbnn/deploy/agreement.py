"""Agreement study: packed integer model vs the PyTorch model, per fixed-point width.

    python -m fracbnn.deploy.agreement CKPT --data DATASETS --out DIR \\
        --widths 8,16,16 6,16,16 ... [--engine fast] [--check-golden 500] [--limit N]
    python -m fracbnn.deploy.agreement CKPT --data DATASETS --out DIR --packed A.fbnn ...

For each width triple F,B,P (frac bits, residual bits, coefficient frac bits)
it exports the checkpoint (or, with ``--packed``, takes each given export
of it, e.g. one with per-layer widths from ``fracbnn export --frac-bits
auto``), runs the chosen engine on the test split and reports top-1 of both models, prediction agreement and logit differences.
When the sweep uses another engine, the first ``--check-golden`` images are
also run through the golden engine and must give identical integer logits.
Results go to DIR/agreement.json after every width (re-running skips widths
already measured, so an interrupted study resumes); the PyTorch logits are
cached in DIR/torch_logits.npy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def torch_logits(model, images: np.ndarray, batch: int = 250) -> np.ndarray:
    import torch
    from tqdm import tqdm

    out = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(images), batch), desc="pytorch", unit="batch"):
            out.append(model(torch.from_numpy(images[i:i + batch])).double().numpy())
    return np.concatenate(out)


def engine_logits(engine, images: np.ndarray, batch: int = 250, desc: str = "") -> np.ndarray:
    from tqdm import tqdm

    return np.concatenate([engine.logits(images[i:i + batch])
                           for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch")])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="dataset folder or archive (CIFAR-10)")
    p.add_argument("--out", required=True, help="folder for agreement.json and the cached PyTorch logits")
    p.add_argument("--widths", nargs="+", default=["8,16,16"], help="F,B,P triples")
    p.add_argument("--packed", nargs="+", default=[], metavar="FBNN",
                   help="packed exports of CKPT to measure instead of --widths (their own per-layer widths)")
    p.add_argument("--engine", default="golden")
    p.add_argument("--check-golden", type=int, default=500, help="images also run on the golden engine")
    p.add_argument("--limit", type=int, default=0, help="use only the first N test images")
    args = p.parse_args(argv)

    from ..checkpoint import model_from_checkpoint
    from ..data import load_dataset
    from ..errors import FracBNNError
    from .engines import get_engine
    from .export import FixedPoint, export_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("cifar10", args.data, "test", download=False)
    images, labels = ds.images.numpy(), ds.labels.numpy()
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    model = model_from_checkpoint(args.checkpoint).eval()
    cache = out / "torch_logits.npy"
    if cache.exists() and len(np.load(cache)) == len(images):
        ref = np.load(cache)
    else:
        ref = torch_logits(model, images)
        np.save(cache, ref)
    ref_pred = ref.argmax(1)
    res_path = out / "agreement.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    results["checkpoint"] = str(args.checkpoint)
    results["checkpoint_bytes"] = Path(args.checkpoint).stat().st_size
    results["images"] = len(images)
    results["pytorch_top1"] = float((ref_pred == labels).mean())
    widths = results.setdefault("widths", {})
    from ..ir.model import PackedModel

    for w in (args.packed or args.widths):
        key = f"{w}/{args.engine}"
        if key in widths:
            continue
        if args.packed:
            fbnn = Path(w)
            packed = PackedModel.load(fbnn)
            fp = packed.meta["fixed_point"]
            f, b, pfrac = "per-layer" if "frac_widths" in fp else fp["frac_bits"], fp["residual_bits"], \
                fp["param_frac_bits"]
        else:
            f, b, pfrac = (int(v) for v in w.split(","))
            try:
                packed = export_model(model, FixedPoint(f, b, pfrac))
            except FracBNNError as e:  # e.g. widths whose accumulators would not fit int64
                widths[key] = {"frac_bits": f, "residual_bits": b, "param_frac_bits": pfrac, "error": str(e)}
                res_path.write_text(json.dumps(results, indent=1))
                print(f"F={f} B={b} P={pfrac}: not exportable: {e}", flush=True)
                continue
            fbnn = out / f"model_F{f}_B{b}_P{pfrac}.fbnn"
            packed.save(fbnn)
        t0 = time.time()
        got = engine_logits(get_engine(args.engine)(packed), images, desc=f"{args.engine} F={f} B={b} P={pfrac}")
        secs = time.time() - t0
        n_check = min(args.check_golden, len(images)) if args.engine != "golden" else 0
        identical = None
        if n_check:
            gold = engine_logits(get_engine("golden")(packed), images[:n_check], desc="golden check")
            identical = bool(np.array_equal(gold, got[:n_check]))
        scores = got / packed.logit_denominator
        pred = got.argmax(1)
        diff = np.abs(scores - ref)
        widths[key] = {
            "frac_bits": f, "residual_bits": b, "param_frac_bits": pfrac, "engine": args.engine,
            "agreement": float((pred == ref_pred).mean()), "packed_top1": float((pred == labels).mean()),
            "pytorch_top1": results["pytorch_top1"],
            "top1_delta_points": 100 * float((pred == labels).mean() - results["pytorch_top1"]),
            "logit_abs_diff_mean": float(diff.mean()), "logit_abs_diff_max": float(diff.max()),
            "fbnn_bytes": fbnn.stat().st_size, "seconds": round(secs, 1),
            "golden_checked_images": n_check, "golden_identical": identical,
        }
        res_path.write_text(json.dumps(results, indent=1))
        r = widths[key]
        print(f"F={f} B={b} P={pfrac} [{args.engine}]: agreement {100 * r['agreement']:.2f}%  "
              f"top-1 {100 * r['packed_top1']:.2f}% (PyTorch {100 * r['pytorch_top1']:.2f}%)  "
              f"mean |dlogit| {r['logit_abs_diff_mean']:.4f}  golden identical on {n_check}: {identical}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
