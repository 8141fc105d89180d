"""Command-line back ends for packed models: eval, infer, bench.

``fracbnn eval`` (commands/eval.py) hands ``.fbnn`` paths to
:func:`eval_packed`; ``fracbnn infer`` and ``fracbnn bench`` call
:func:`infer_files` and :func:`bench_engines`.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from ..errors import FracBNNError
from ..ir import Graph, PackedModel
from .engines import get_engine


def load_engine(model_path, engine: str = "golden"):
    """(packed model, engine instance) for a .fbnn path and an engine name."""
    packed = PackedModel.load(model_path)
    return packed, get_engine(engine)(packed)


def _arg(args, name, default=None):
    v = getattr(args, name, default)
    return default if v is None else v


def eval_packed(args) -> int:
    """Top-1 (and top-5) of a .fbnn model on a dataset split, batch by batch.

    Reads ``args.model`` (or ``args.checkpoint``), ``args.data``, ``args.engine``
    ("golden"|"fast"), ``args.batch_size``, ``args.json``, and optionally
    ``args.dataset`` (default: the one recorded in the model, cifar10 for older
    files), ``args.split`` (default test), ``args.limit``. Images go through the
    recorded preprocessing; file-backed data sets (image folders) are decoded by
    loader workers a batch at a time, never held in memory.
    """
    import sys

    from tqdm import tqdm

    from ..data import load_dataset, make_loader
    from ..train.trainer import limit_dataset
    from .preprocess import check_dataset_fits, dataset_options, recorded_dataset

    path = _arg(args, "model") or _arg(args, "checkpoint") or _arg(args, "path")
    packed, engine = load_engine(path, _arg(args, "engine", "golden"))
    quiet = bool(_arg(args, "json", False))
    name, note = recorded_dataset(packed.meta)
    if _arg(args, "dataset"):
        name = str(args.dataset).lower()
    elif note:
        print(f"note: {note}", file=sys.stderr)
    ds = load_dataset(name, _arg(args, "data"), _arg(args, "split", "test"), download=False,
                      **dataset_options(name, packed.meta))
    ds = limit_dataset(ds, _arg(args, "limit"))
    check_dataset_fits(ds, packed, name)
    bs = int(_arg(args, "batch_size", 100)) or 100
    workers = 0 if getattr(ds, "in_memory", False) else min(4, max(1, (os.cpu_count() or 2) - 1))
    loader = make_loader(ds, min(bs, len(ds)), train=False, num_workers=workers)
    c1 = c5 = n = 0
    t0 = time.perf_counter()
    for images, y in tqdm(loader, desc=f"eval ({engine.name})", unit="batch", disable=quiet, file=sys.stderr):
        logits = engine.logits(np.ascontiguousarray(images.numpy(), dtype=np.uint8))
        y = y.numpy()
        c1 += int((np.argmax(logits, axis=1) == y).sum())
        k = min(5, logits.shape[1])
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        c5 += int((top == y[:, None]).any(axis=1).sum())
        n += len(y)
    dt = time.perf_counter() - t0
    if n != len(ds):
        raise FracBNNError(f"evaluated {n} of {len(ds)} images; this is a bug, please report it")
    res = {"model": str(path), "engine": engine.name, "dataset": name, "split": _arg(args, "split", "test"),
           "images": n, "top1": c1 / max(n, 1), "top5": c5 / max(n, 1),
           "seconds": round(dt, 3), "images_per_second": round(n / dt, 2) if dt > 0 else None,
           "fixed_point": packed.meta.get("fixed_point")}
    counts = getattr(engine, "gate_counts", None)  # both engines count open LSB gates
    if counts:
        layer = Graph(packed.program).layer_name  # gate counts are kept per conv output buffer
        res["sparsity"] = {layer(k): 1 - o / t for k, (o, t) in counts.items() if t}
        opened, total = sum(o for o, _ in counts.values()), sum(t for _, t in counts.values())
        res["lsb_density"] = opened / total if total else None
    res["effective_activation_bits"] = effective_activation_bits(packed, counts or {})
    sat = getattr(engine, "saturation_counts", None)  # both engines count clipped residual values
    res["saturated_values"] = None if sat is None else sum(c for c, _ in sat.values())
    if quiet:
        print(json.dumps(res))
    else:
        print(f"{path} [{engine.name}] on {name}/{res['split']}: top-1 {100 * res['top1']:.2f}%  "
              f"top-5 {100 * res['top5']:.2f}%  on {n} images ({res['images_per_second']} images/s)"
              + (f"; LSB gate density {100 * res['lsb_density']:.1f}%" if res.get("lsb_density") is not None else "")
              + (f"; effective activation bits {res['effective_activation_bits']:.3f}"
                 if res["effective_activation_bits"] is not None else "")
              + (f"; {res['saturated_values']} residual values saturated (export with --residual-bits auto)"
                 if res["saturated_values"] else ""))
    return 0


def effective_activation_bits(packed: PackedModel, counts: dict) -> float | None:
    """Mean activation bits of the model's body at the gate densities the engine counted.

    The same rule as the checkpoint eval (fracbnn.summary): each gated layer's
    LSB pass is weighted by its measured density. None when the architecture
    recorded in the file cannot be rebuilt to count its operations.
    """
    from ..models import create_model
    from ..summary import summarize, summary_totals, with_lsb_densities

    spec = packed.meta.get("model") or {}
    try:
        model = create_model(spec["name"], **spec.get("kwargs", {}))
        rows = summarize(model, input_size=packed.input_size, lsb_density=1.0).rows
    except Exception:  # an architecture this fracbnn cannot build: report no figure rather than fail the eval
        return None
    layer = Graph(packed.program).layer_name
    densities = {layer(k): o / t for k, (o, t) in counts.items() if t}
    return summary_totals(with_lsb_densities(rows, densities))["effective_activation_bits"]


def infer_files(model_path, images: list[str], engine: str = "golden", top: int = 1, as_json: bool = False) -> int:
    """Print the predicted class and score of each image file."""
    from .images import load_image
    from .preprocess import image_transform

    if int(top) < 1:
        raise FracBNNError(f"--top must be at least 1, got {top}")
    packed, eng = load_engine(model_path, engine)
    convert = image_transform(packed.meta)
    pixels = np.stack([load_image(p, packed.input_size, convert) for p in images])
    scores = eng.scores(pixels)
    names = packed.class_names
    top = max(1, min(int(top), packed.num_classes))
    results = []
    for path, s in zip(images, scores):
        order = np.argsort(-s, kind="stable")[:top]
        e = np.exp(s - s.max())
        prob = e / e.sum()
        results.append({"image": str(path), "predictions": [
            {"class": int(k), "name": names[k], "logit": float(s[k]), "probability": float(prob[k])} for k in order]})
    if as_json:
        print(json.dumps(results if len(results) > 1 else results[0]))
    else:
        for r in results:
            best = ", ".join(f"{p['name']} (class {p['class']}, logit {p['logit']:.3f}, p={p['probability']:.3f})"
                             for p in r["predictions"])
            print(f"{r['image']}: {best}")
    return 0


def bench_engines(model_path, engines: list[str], batch_size: int = 64, batches: int = 3, seed: int = 0,
                  as_json: bool = False) -> int:
    """Images per second of each engine on random pixels, and whether their logits agree."""
    packed = PackedModel.load(model_path)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(batch_size, *packed.input_size), dtype=np.uint8)
    rows, ref = [], None
    for name in engines:
        eng = get_engine(name)(packed)
        eng.logits(x[:1])  # warm-up (lazy initialisation, caches)
        t0 = time.perf_counter()
        for _ in range(batches):
            logits = eng.logits(x)
        dt = time.perf_counter() - t0
        same = None if ref is None else bool(np.array_equal(ref, logits))
        ref = logits if ref is None else ref
        rows.append({"engine": name, "images": batch_size * batches, "seconds": round(dt, 4),
                     "images_per_second": round(batch_size * batches / dt, 2),
                     "identical_to_first": same})
    if as_json:
        print(json.dumps({"model": str(model_path), "batch_size": batch_size, "results": rows}))
    else:
        for r in rows:
            extra = "" if r["identical_to_first"] is None else \
                f"  logits identical to {engines[0]}: {r['identical_to_first']}"
            print(f"{r['engine']:>8}: {r['images_per_second']:10.1f} images/s{extra}")
    return 0
