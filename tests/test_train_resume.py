"""A run killed with SIGKILL mid-epoch resumes to exactly the weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fracbnn.checkpoint import load_checkpoint
from fracbnn.errors import FracBNNError
from fracbnn.train import load_recipe, train

pytest.importorskip("sklearn")


def tiny_recipe(tmp_path: Path, **runtime) -> Path:
    """Two steps on a digits subset with a narrow FracBNN: 16 batches per epoch, a checkpoint every batch."""
    recipe = {
        "name": "tiny-resume",
        "seed": 3,
        "deterministic": True,
        "device": "cpu",
        "model": {"name": "resnet20-fracbnn", "kwargs": {"width": 0.25}},
        "data": {"name": "digits", "augment": "cifar", "batch_size": 16, "eval_batch_size": 50,
                 "train_limit": 256, "test_limit": 100},
        "gate": {"target": 0.2},
        "runtime": {"threads": 1, "checkpoint_every": 1, "tensorboard": False, "progress": False, **runtime},
        "steps": [
            {"name": "a", "conv_mode": "binary", "epochs": 1, "weight_decay": 1e-5},
            {"name": "b", "conv_mode": "frac", "epochs": 2, "weight_decay": 0.0},
        ],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def restore_torch_globals():
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path, restore_torch_globals):
    recipe_path = tiny_recipe(tmp_path)
    cfg = load_recipe(recipe_path)

    # 1) uninterrupted reference run (in this process)
    ref_dir = tmp_path / "ref"
    train(cfg, ref_dir)
    ref = load_checkpoint(ref_dir / "final.pt")["state_dict"]

    # 2) the same run in a subprocess, SIGKILLed in the middle of step b, epoch 1
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fracbnn.cli", "train", "--config", str(recipe_path),
                             "--out", str(run_dir)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    last = run_dir / "b" / "last.pt"
    killed_at = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.is_file():
                try:
                    state = load_checkpoint(last)
                except FracBNNError:
                    state = None  # cannot happen with atomic writes; the assertion below would catch it
                if state is not None and state["epoch"] == 0 and state["batch"] >= 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = (state["epoch"], state["batch"])
                    break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_at is not None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "b" / "final.pt").exists()
    # whatever the kill interrupted, the latest checkpoint is complete and loadable
    state = load_checkpoint(last)
    assert (state["epoch"], state["batch"]) >= killed_at
    assert state["batch"] < 16 and state["epoch"] == 0

    # 3) resume: step a is skipped (complete), step b continues mid-epoch
    a_final_before = (run_dir / "a" / "final.pt").stat().st_mtime_ns
    train(load_recipe(run_dir / "config.yaml"), run_dir, resume=True)
    assert (run_dir / "a" / "final.pt").stat().st_mtime_ns == a_final_before
    resumed = load_checkpoint(run_dir / "final.pt")["state_dict"]

    assert set(resumed) == set(ref)
    for key in ref:
        assert torch.equal(resumed[key], ref[key]), f"{key} differs after resume"
    # metrics of the redone epoch are written once, not twice
    import json

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"]) for r in records] == [("a", 1), ("b", 1), ("b", 2)]
    ref_records = [json.loads(line) for line in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    for r, q in zip(records, ref_records):
        assert r["train_loss"] == q["train_loss"] and r["val_top1"] == q["val_top1"]


def test_existing_run_is_not_overwritten_without_resume(tmp_path, restore_torch_globals):
    recipe_path = tiny_recipe(tmp_path)
    cfg = load_recipe(recipe_path, ["steps.*.epochs=0"])
    run_dir = tmp_path / "run"
    train(cfg, run_dir)
    before = (run_dir / "config.yaml").read_text()
    with pytest.raises(FracBNNError, match="--resume"):
        train(cfg, run_dir)
    assert (run_dir / "config.yaml").read_text() == before
