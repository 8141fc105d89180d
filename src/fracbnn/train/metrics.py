"""Per-epoch metrics: one JSON line per epoch in ``metrics.jsonl``, mirrored to TensorBoard.

JSONL is the source of truth (``fracbnn plot`` reads it); TensorBoard is an
optional extra: when it is not installed a single warning is printed and
training goes on.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from ..checkpoint import atomic_write

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True, enabled: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except Exception as e:  # ImportError, or a broken tensorboard install
                print(f"fracbnn train: warning: TensorBoard logging is off ({type(e).__name__}: "
                      f"{str(e)[:100]}); install it with pip install 'fracbnn[tensorboard]'. "
                      f"Metrics still go to {self.path}", file=sys.stderr)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._tb is not None:
            step = int(record.get("global_epoch", 0))
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
            for layer, value in (record.get("sparsity") or {}).items():
                self._tb.add_scalar(f"sparsity/{layer}", value, step)
            self._tb.flush()

    def truncate_after(self, step_name: str, epoch: int) -> None:
        """Drop records at or after (step, epoch): a resumed run rewrites those epochs."""
        if not self.enabled or not self.path.is_file():
            return
        records = read_metrics(self.path.parent)
        keep, seen_step = [], False
        for r in records:
            if r.get("step") == step_name:
                seen_step = True
                if r.get("epoch", 0) >= epoch:
                    continue
            elif seen_step:
                continue  # later steps are being redone too
            keep.append(r)
        if len(keep) != len(records):
            text = "".join(json.dumps(r) + "\n" for r in keep).encode()
            atomic_write(self.path, lambda f: f.write(text))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """All epoch records of a run, skipping a torn last line (a killed writer)."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
