"""Starting a run safely: validate before writing, one writer per run folder, clean restarts (issue 13)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fracbnn.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from fracbnn.cli import main
from fracbnn.models import create_model
from fracbnn.train.runlock import LOCK_FILE, RunLock, RunLockedError

pytest.importorskip("sklearn")


def tiny(tmp_path: Path, name: str = "tiny.yaml", **data) -> Path:
    recipe = {
        "name": "tiny", "seed": 1, "device": "cpu",
        "model": {"name": "resnet20-fracbnn", "kwargs": {"width": 0.25}},
        "data": {"name": "digits", "augment": "none", "batch_size": 32, "eval_batch_size": 64,
                 "train_limit": 128, "test_limit": 64, **data},
        "runtime": {"threads": 1, "checkpoint_every": 1, "tensorboard": False, "progress": False},
        "steps": [{"name": "a", "conv_mode": "binary", "epochs": 2}],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("CPU threads")]
    assert len(err) == 1, err
    return err[0]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env



@pytest.mark.parametrize("bad", [
    ["--data", "/nonexistent/folder", "--set", "data.name=imagefolder"],  # data
    ["--set", "model.kwargs.in_channels=3"],                               # model build (digits has 1)
    ["--set", "model.kwargs.bogus=1"],                                     # model build (unknown option)
    ["--init", "INIT_MISMATCH"],                                           # --init of another model
    ["--init", "/nonexistent.pt"],                                         # --init missing
    ["--steps", "2"],                                                      # step selection
])
def test_failed_start_leaves_the_folder_as_it_was(tmp_path, capsys, bad, restore_threads):
    other = tmp_path / "other.pt"
    save_checkpoint(other, create_model("resnet20-fracbnn", width=0.5, in_channels=1))
    bad = [str(other) if a == "INIT_MISMATCH" else a for a in bad]
    out = tmp_path / "run"
    for existing in (False, True):  # a new folder, and an existing (empty) one
        if existing:
            out.mkdir()
        assert main(["train", "--config", str(tiny(tmp_path)), "--out", str(out), *bad]) == 2
        one_line_error(capsys)
        assert (not out.exists()) if not existing else list(out.iterdir()) == []
    # the corrected command then works in the same folder
    assert main(["train", "--config", str(tiny(tmp_path)), "--out", str(out), "--epochs", "1"]) == 0
    assert (out / "final.pt").is_file()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert main(["train", "--config", str(tiny(tmp_path)), "--out", str(target)]) == 2
    assert "is a file, not a folder" in one_line_error(capsys) and target.read_text() == "keep me"
    assert main(["train", "--config", str(tiny(tmp_path)), "--out", str(target / "run")]) == 2
    assert "Not a directory" in one_line_error(capsys)
    assert main(["quickstart", "--out", str(target)]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)
    assert main(["quickstart", "--threads", "0"]) == 2
    assert "runtime.threads must be a positive integer" in one_line_error(capsys)


def test_read_only_output_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """Any OSError on writing (EROFS, EACCES, ENOSPC...) becomes one line; root ignores chmod, so fake it."""
    import fracbnn.checkpoint as ckpt_mod

    def refuse(path, write):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(ckpt_mod, "atomic_write", refuse)
    import fracbnn.train.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "write_recipe", lambda cfg, path: refuse(path, None))
    assert main(["train", "--config", str(tiny(tmp_path)), "--out", str(tmp_path / "run")]) == 2
    line = one_line_error(capsys)
    assert "Read-only file system" in line and "config.yaml" in line
    metrics = tmp_path / "m"
    metrics.mkdir()
    (metrics / "metrics.jsonl").write_text('{"step": "a", "epoch": 1, "global_epoch": 1, "val_top1": 0.5}\n')
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    def savefig(self, path, **kw):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    assert main(["plot", str(metrics)]) == 2
    assert "Permission denied" in one_line_error(capsys)


def test_cuda_on_a_cpu_only_torch_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--config", str(tiny(tmp_path)), "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in one_line_error(capsys) and not (tmp_path / "r").exists()
    ck = tmp_path / "m.pt"
    save_checkpoint(ck, create_model("resnet20-fracbnn", width=0.25, in_channels=1, num_classes=10))
    assert main(["eval", str(ck), "--dataset", "digits", "--device", "cuda:0"]) == 2
    assert "CUDA is not available" in one_line_error(capsys)


def test_second_writer_is_refused_while_the_first_is_alive(tmp_path, capsys, restore_threads):
    """A real second process holds the lock: a new run and a --resume into its folder are both refused."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fracbnn.train.runlock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", str(out)],
        env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--config", str(tiny(tmp_path)), "--out", str(out)]) == 2
        line = one_line_error(capsys)
        assert f"in use by another fracbnn train (process {holder.pid})" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
        (out / "config.yaml").write_text(tiny(tmp_path).read_text())  # as if the holder had started this run
        assert main(["train", "--resume", "--out", str(out)]) == 2
        assert "in use by another fracbnn train" in one_line_error(capsys)
    finally:
        holder.kill()
        holder.wait()
    # the OS drops the lock of a killed process: no stale lock
    with RunLock(out):
        with pytest.raises(RunLockedError):
            RunLock(out).acquire()


def test_two_concurrent_trains_into_one_folder_one_wins(tmp_path):
    recipe = tiny(tmp_path)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fracbnn.cli", "train", "--config", str(recipe), "--out", str(out), "--epochs", "1"]
    procs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "in use by another fracbnn train" in loser or "already holds a run" in loser
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 1  # one run's epoch, not interleaved copies


def test_stray_temp_files_removed_lr_is_epoch_start_and_modes_agree(tmp_path, capsys, restore_threads):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny(tmp_path)), "--out", str(out), "--steps", "a",
                 "--set", "steps.a.epochs=1"]) == 0
    stray = [out / "a" / ".last.pt.x1y2z3.tmp", out / ".results.json.abc.tmp"]
    for p in stray:
        p.write_bytes(b"partial")
    (out / "a" / "final.pt").unlink()  # so --resume runs step a again from last.pt
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert not any(p.exists() for p in stray) and f"removed {stray[0]}" in err
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    assert set(modes.values()) == {0o666 & ~_umask()}, modes
    last = load_checkpoint(out / "a" / "last.pt")
    assert last["epoch"] == 1 and last["threads"] == 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_resumed_mid_epoch_records_the_epoch_start_lr(tmp_path, restore_threads, monkeypatch):
    import fracbnn.train.trainer as trainer_mod
    from fracbnn.train import load_recipe, train
    from fracbnn.train.metrics import read_metrics

    cfg = load_recipe(tiny(tmp_path))
    train(cfg, tmp_path / "ref")
    ref = [r["lr"] for r in read_metrics(tmp_path / "ref")]
    assert ref == pytest.approx([1e-3, 0.5e-3])  # linear decay per iteration, 4 batches per epoch

    class Stop(Exception):
        pass

    def save_then_stop(path, model, **kw):  # the run dies right after the checkpoint at epoch 2, batch 2
        save_checkpoint(path, model, **kw)
        if (kw.get("epoch"), kw.get("batch")) == (1, 2):
            raise Stop

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut")
    monkeypatch.undo()
    train(cfg, tmp_path / "cut", resume=True)
    assert [r["lr"] for r in read_metrics(tmp_path / "cut")] == pytest.approx(ref)


def test_atomic_write_gives_the_plain_open_mode(tmp_path):
    atomic_write(tmp_path / "x", lambda f: f.write(b"1"))
    with open(tmp_path / "y", "w") as f:
        f.write("1")
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == stat.S_IMODE((tmp_path / "y").stat().st_mode)


def test_train_help_keeps_example_lines(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "\n  fracbnn train --resume --out runs/c10" in out
