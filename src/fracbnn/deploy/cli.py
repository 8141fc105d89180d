"""Command-line back ends for packed models: eval, infer, bench.

``fracbnn eval`` (commands/eval.py) hands ``.fbnn`` paths to
:func:`eval_packed`; ``fracbnn infer`` and ``fracbnn bench`` call
:func:`infer_files` and :func:`bench_engines`.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ..errors import FracBNNError
from .engines import get_engine
from .packed import PackedModel


def load_engine(model_path, engine: str = "golden"):
    """(packed model, engine instance) for a .fbnn path and an engine name."""
    packed = PackedModel.load(model_path)
    return packed, get_engine(engine)(packed)


def _arg(args, name, default=None):
    v = getattr(args, name, default)
    return default if v is None else v


def eval_packed(args) -> int:
    """Top-1 (and top-5) of a .fbnn model on a dataset split.

    Reads ``args.model`` (or ``args.checkpoint``), ``args.data``, ``args.engine``
    ("golden"|"fast"), ``args.batch_size``, ``args.json``, and optionally
    ``args.dataset`` (default cifar10), ``args.split`` (default test), ``args.limit``.
    """
    from tqdm import tqdm

    from ..data import load_dataset

    path = _arg(args, "model") or _arg(args, "checkpoint") or _arg(args, "path")
    packed, engine = load_engine(path, _arg(args, "engine", "golden"))
    ds = load_dataset(_arg(args, "dataset", "cifar10"), _arg(args, "data"), _arg(args, "split", "test"),
                      download=False)
    images, labels = ds.images.numpy(), ds.labels.numpy()
    limit = _arg(args, "limit")
    if limit:
        images, labels = images[:int(limit)], labels[:int(limit)]
    if tuple(images.shape[1:]) != packed.input_size:
        raise FracBNNError(f"the dataset has {tuple(images.shape[1:])} images, the model takes {packed.input_size}")
    if labels.size and labels.max() >= packed.num_classes:
        raise FracBNNError(f"the dataset has labels up to {labels.max()}, the model only {packed.num_classes} classes")
    bs = int(_arg(args, "batch_size", 100)) or 100
    c1 = c5 = 0
    t0 = time.perf_counter()
    quiet = bool(_arg(args, "json", False))
    for i in tqdm(range(0, len(images), bs), desc=f"eval ({engine.name})", unit="batch", disable=quiet):
        logits = engine.logits(images[i:i + bs])
        y = labels[i:i + bs]
        c1 += int((np.argmax(logits, axis=1) == y).sum())
        k = min(5, logits.shape[1])
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        c5 += int((top == y[:, None]).any(axis=1).sum())
    dt = time.perf_counter() - t0
    n = len(images)
    res = {"model": str(path), "engine": engine.name, "images": n, "top1": c1 / max(n, 1), "top5": c5 / max(n, 1),
           "seconds": round(dt, 3), "images_per_second": round(n / dt, 2) if dt > 0 else None,
           "fixed_point": packed.meta.get("fixed_point")}
    counts = getattr(engine, "gate_counts", None)  # both engines count open LSB gates
    if counts:
        res["sparsity"] = {k.removesuffix(".acc"): 1 - o / t for k, (o, t) in counts.items() if t}
        opened, total = sum(o for o, _ in counts.values()), sum(t for _, t in counts.values())
        res["lsb_density"] = opened / total if total else None
    if quiet:
        print(json.dumps(res))
    else:
        print(f"{path} [{engine.name}]: top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%  "
              f"on {n} images ({res['images_per_second']} images/s)"
              + (f"; LSB gate density {100 * res['lsb_density']:.1f}%" if res.get("lsb_density") is not None else ""))
    return 0


def infer_files(model_path, images: list[str], engine: str = "golden", top: int = 1, as_json: bool = False) -> int:
    """Print the predicted class and score of each image file."""
    from .images import load_image

    packed, eng = load_engine(model_path, engine)
    pixels = np.stack([load_image(p, packed.input_size) for p in images])
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
