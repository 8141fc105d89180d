"""Draw a run's training curves as PNG files.

Reads RUN_DIR/metrics.jsonl and writes, into RUN_DIR/plots (or --out):
  accuracy.png  train top-1, test top-1 and top-5 per epoch, steps marked
  loss.png      train and test loss per epoch
  sparsity.png  LSB sparsity per gated layer after the last epoch, and its mean over epochs
  lr.png        learning rate and training images/s per epoch
Needs matplotlib (pip install 'fracbnn[plot]').
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run folder (holding metrics.jsonl)")
    p.add_argument("--out", metavar="DIR", help="where to write the PNGs (default: RUN_DIR/plots)")
    p.add_argument("--json", action="store_true", help="print the written file names as one JSON object")


def run(args) -> int:
    import json
    from pathlib import Path

    from ..errors import FracBNNError
    from ..train.metrics import METRICS_FILE, read_metrics

    run_dir = Path(args.run_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise FracBNNError(f"{run_dir / METRICS_FILE} not found; give a run folder written by `fracbnn train`")
    records = read_metrics(run_dir)
    if not records:
        raise FracBNNError(f"{run_dir / METRICS_FILE} holds no complete epoch yet; plot after the first epoch")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FracBNNError("plotting needs matplotlib: pip install 'fracbnn[plot]'") from None
    out = Path(args.out) if args.out else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = [_accuracy(plt, records, out), _loss(plt, records, out), _lr(plt, records, out)]
    s = _sparsity(plt, records, out)
    if s:
        written.append(s)
    if args.json:
        print(json.dumps({"plots": [str(p) for p in written]}))
    else:
        for p in written:
            print(p)
    return 0


def _x(records):
    return [r.get("global_epoch", i + 1) for i, r in enumerate(records)]


def _mark_steps(ax, records):
    """Vertical lines at step boundaries, labelled with the step name."""
    prev = None
    for x, r in zip(_x(records), records):
        if r.get("step") != prev:
            ax.axvline(x - 0.5, color="0.8", lw=1, zorder=0)
            ax.annotate(str(r.get("step")), (x - 0.5, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                        rotation=90, va="top", ha="right", color="0.4")
            prev = r.get("step")


def _series(records, key, scale=1.0):
    return [None if r.get(key) is None else scale * r[key] for r in records]


def _accuracy(plt, records, out):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    x = _x(records)
    for key, label in (("train_top1", "train top-1"), ("val_top1", "test top-1"), ("val_top5", "test top-5")):
        ax.plot(x, _series(records, key, 100), marker="o", ms=3, label=label)
    _mark_steps(ax, records)
    ax.set(xlabel="epoch (all steps)", ylabel="accuracy (%)", title="Accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, out / "accuracy.png")


def _loss(plt, records, out):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    x = _x(records)
    ax.plot(x, _series(records, "train_loss"), marker="o", ms=3, label="train loss")
    ax.plot(x, _series(records, "val_loss"), marker="o", ms=3, label="test loss")
    _mark_steps(ax, records)
    ax.set(xlabel="epoch (all steps)", ylabel="cross-entropy", title="Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, out / "loss.png")


def _lr(plt, records, out):
    fig, ax = plt.subplots(figsize=(7, 4))
    x = _x(records)
    ax.plot(x, _series(records, "lr"), marker="o", ms=3, color="C0")
    ax.set(xlabel="epoch (all steps)", ylabel="learning rate (epoch start)", title="Learning rate and throughput")
    ax2 = ax.twinx()
    ax2.plot(x, _series(records, "images_per_sec"), marker="s", ms=3, color="C1")
    ax2.set_ylabel("training images/s", color="C1")
    _mark_steps(ax, records)
    return _save(plt, fig, out / "lr.png")


def _sparsity(plt, records, out):
    gated = [r for r in records if r.get("sparsity")]
    if not gated:
        return None
    last = gated[-1]["sparsity"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    names = list(last)
    ax1.bar(range(len(names)), [100 * last[n] for n in names], color="C2")
    ax1.set_xticks(range(len(names)), [n.replace("stages.", "s").replace(".conv", ".c") for n in names],
                   rotation=60, fontsize=7)
    ax1.set(ylabel="LSB sparsity (%)", title=f"Per-layer LSB sparsity ({gated[-1].get('step')}, epoch "
            f"{gated[-1].get('epoch')})", ylim=(0, 100))
    ax1.grid(axis="y", alpha=0.3)
    ax2.plot(_x(gated), [100 * sum(r["sparsity"].values()) / len(r["sparsity"]) for r in gated], marker="o", ms=3)
    ax2.set(xlabel="epoch (all steps)", ylabel="mean LSB sparsity (%)", title="Mean sparsity", ylim=(0, 100))
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.grid(alpha=0.3)
    return _save(plt, fig, out / "sparsity.png")


def MaxNLocator(**kwargs):  # noqa: N802 (imported lazily with matplotlib)
    from matplotlib.ticker import MaxNLocator as locator

    return locator(**kwargs)


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
