"""Bad input and a hostile environment give one-line errors, never a traceback or silent damage (issue 13, 9/11)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fracbnn.checkpoint import save_checkpoint
from fracbnn.cli import main
from fracbnn.models import create_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clierr")
    model = create_model("resnet20-fracbnn", width=0.25)
    model.input_size = (3, 32, 32)
    save_checkpoint(d / "c.pt", model, config={"data": {"name": "cifar10"}})
    assert main(["export", str(d / "c.pt"), "-o", str(d / "c.fbnn")]) == 0
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "ok.png")
    return d


def _one_line_error(capsys, rc, needle):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _fail_writes(monkeypatch, code):
    """Every new file fails with OSError(code), as on a read-only or full disk (tests may run as root)."""
    def refuse(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EDQUOT])
def test_export_to_unwritable_place_is_one_line_and_keeps_the_old_file(files, tmp_path, capsys, monkeypatch, code):
    out = tmp_path / "m.fbnn"
    out.write_bytes(b"previous export")
    _fail_writes(monkeypatch, code)
    rc = main(["export", str(files / "c.pt"), "-o", str(out), "--force"])
    _one_line_error(capsys, rc, os.strerror(code))
    assert out.read_bytes() == b"previous export"


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_hw_generate_to_unwritable_place(files, tmp_path, capsys, monkeypatch, code):
    _fail_writes(monkeypatch, code)
    rc = main(["hw", "generate", str(files / "c.fbnn"), "-o", str(tmp_path / "p"), "--random-images"])
    _one_line_error(capsys, rc, f"cannot write to {tmp_path} ({os.strerror(code)})")
    assert not (tmp_path / "p").exists()


def test_hw_generate_into_a_file(files, tmp_path, capsys):
    (tmp_path / "f").write_text("keep")
    for target in (tmp_path / "f", tmp_path / "f" / "sub"):
        rc = main(["hw", "generate", str(files / "c.fbnn"), "-o", str(target), "--random-images"])
        _one_line_error(capsys, rc, "is a file, not a directory")
    assert (tmp_path / "f").read_text() == "keep"


def test_any_os_error_at_the_entry_point_is_one_line(files, capsys, monkeypatch):
    """The class: whatever OSError a command meets (here ENOTDIR while reading) is one line with a hint."""
    import fracbnn.commands.summary as summary

    def broken(args):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/a/file/x")

    monkeypatch.setattr(summary, "run", broken)
    err = _one_line_error(capsys, main(["summary", "resnet20-fracbnn"]), "/a/file/x: Not a directory")
    assert "a part of the path is a file" in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_closed_stdout_pipe_is_quiet(files):
    """`fracbnn ... | head`: the reader leaves early; no BrokenPipeError traceback."""
    p = subprocess.Popen([sys.executable, "-m", "fracbnn.cli", "summary", "resnet20-fracbnn", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(
                             REPO / "src")})
    p.stdout.close()  # nobody reads: the first write fails with EPIPE
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err == "", err


@pytest.mark.parametrize("limit", ["-3", "0"])
def test_eval_limit_must_be_positive(files, capsys, limit):
    for target in ("c.pt", "c.fbnn"):
        rc = main(["eval", str(files / target), "--limit", limit])
        _one_line_error(capsys, rc, "--limit must be at least 1")


def test_eval_checkpoint_on_data_of_another_shape(files, capsys):
    pytest.importorskip("sklearn")
    rc = main(["eval", str(files / "c.pt"), "--dataset", "digits"])
    _one_line_error(capsys, rc, "but digits has 1x8x8")
    rc = main(["eval", str(files / "c.fbnn"), "--dataset", "digits"])
    _one_line_error(capsys, rc, "the digits images are (1, 8, 8) (C, H, W)")


@pytest.mark.parametrize("size,needle", [
    (["3", "2", "2"], "cannot run on 3x2x2 images"),
    (["3", "1", "1"], "cannot run on 3x1x1 images"),
    (["0", "32", "32"], "three positive numbers"),
    (["3", "-4", "32"], "three positive numbers"),
    (["1", "32", "32"], "takes 3-channel images"),
])
def test_summary_input_size_checked(capsys, size, needle):
    _one_line_error(capsys, main(["summary", "resnet20-fracbnn", "--input-size", *size]), needle)


def test_infer_undecodable_images(files, tmp_path, capsys, monkeypatch):
    """Any image Pillow cannot decode is one line naming it: truncated data, a decompression bomb, --top 0."""
    from PIL import Image

    data = (files / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    _one_line_error(capsys, main(["infer", str(files / "c.fbnn"), str(tmp_path / "cut.png")]), "cut.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32x32 = 1,024 pixels: over twice the limit, a "bomb"
    err = _one_line_error(capsys, main(["infer", str(files / "c.fbnn"), str(files / "ok.png")]), "ok.png")
    assert "DecompressionBombError" in err
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)  # over the limit but under twice it: Pillow only warns
    err = _one_line_error(capsys, main(["infer", str(files / "c.fbnn"), str(files / "ok.png")]), "ok.png")
    assert "DecompressionBombWarning" in err
    monkeypatch.undo()
    _one_line_error(capsys, main(["infer", str(files / "c.fbnn"), str(files / "ok.png"), "--top", "0"]),
                    "--top must be at least 1")


def test_csim_on_read_only_project_names_the_reason(files, tmp_path, capsys, monkeypatch):
    assert main(["hw", "generate", str(files / "c.fbnn"), "-o", str(tmp_path / "p"), "--random-images",
                 "--images", "1", "--calib-images", "0"]) == 0
    capsys.readouterr()
    _fail_writes(monkeypatch, errno.EROFS)
    err = _one_line_error(capsys, main(["hw", "csim", str(tmp_path / "p")]), "cannot write to")
    assert "Read-only file system" in err and "linker" not in err.lower()


@pytest.mark.parametrize("argv,extra", [
    (["infer", "{d}/c.fbnn", "{d}/ok.png"], "images"),
    (["eval", "{d}/c.fbnn", "--dataset", "imagefolder", "--data", "{d}/folder"], "images"),
])
def test_missing_extra_prints_the_install_line(files, capsys, monkeypatch, argv, extra):
    from PIL import Image

    folder = files / "folder"
    for split in ("train", "val"):
        (folder / split / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32)).save(folder / split / "a" / "0.png")
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    _one_line_error(capsys, main([a.format(d=files) for a in argv]), f"pip install 'fracbnn[{extra}]'")


def test_plot_without_matplotlib_prints_the_install_line(tmp_path, capsys, monkeypatch):
    from fracbnn.train.metrics import METRICS_FILE

    (tmp_path / METRICS_FILE).write_text(json.dumps({"epoch": 1, "global_epoch": 1, "step": "s", "lr": 0.1,
                                                     "train_loss": 1.0, "test_top1": 0.5}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    _one_line_error(capsys, main(["plot", str(tmp_path)]), "pip install 'fracbnn[plot]'")
