"""`fracbnn data`: reports a dataset, prepares the cache, and fails offline with the --data hint."""

from __future__ import annotations

import json
import re

from fracbnn.cli import main
from test_data_datasets import make_fake_cifar10


def test_data_command_digits_json(capsys):
    assert main(["data", "digits", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["images"] for s in out["splits"]] == [1437, 360]
    assert out["splits"][0]["image_shape"] == [1, 8, 8] and len(out["classes"]) == 10


def test_data_command_extracts_archive_then_works_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRACBNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FRACBNN_DATA", raising=False)
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_fake_cifar10(archive)
    assert main(["data", "cifar10", "--data", str(archive)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"train +30 images 3x32x32", text) and re.search(r"test +5 images 3x32x32", text)
    assert str(tmp_path / "cache") in text

    assert main(["data", "cifar10", "--no-download"]) == 2  # nothing in the default cache location
    err = capsys.readouterr().err
    assert "pass --data PATH (folder or cifar-10-python.tar.gz)" in err and len(err.strip().splitlines()) == 1
