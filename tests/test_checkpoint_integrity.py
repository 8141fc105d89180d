"""Checkpoint integrity: a checksum written at save time catches damaged tensors on load (issue 13, item 8)."""

from __future__ import annotations

import warnings
import zipfile

import pytest
import torch

from fracbnn.checkpoint import load_checkpoint, payload_digest, save_checkpoint
from fracbnn.cli import main
from fracbnn.errors import CheckpointError
from fracbnn.models import create_model


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, create_model("resnet20-fracbnn", width=0.25), config={"name": "x"}, epoch=3)
    return path


def _tensor_record(path):
    """(offset, size) of the largest tensor's bytes inside the torch zip file."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        with open(path, "rb") as f:  # local header: 30 bytes + name + extra, then the stored bytes
            f.seek(info.header_offset + 26)
            n, m = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        return info.header_offset + 30 + n + m, info.file_size


def test_flipped_bytes_inside_a_tensor_are_an_error_naming_the_file(ckpt, capsys):
    assert load_checkpoint(ckpt)["checksum"]["algorithm"] == "sha256-v1"
    offset, size = _tensor_record(ckpt)
    data = bytearray(ckpt.read_bytes())
    for i in range(offset + 8, offset + min(size, 408)):  # 400 bytes inside the tensor
        data[i] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks from torch either
        with pytest.raises(CheckpointError, match=rf"{ckpt} is damaged: its contents do not match the checksum"):
            load_checkpoint(ckpt)
    assert main(["summary", str(ckpt)]) == 2 and "is damaged" in capsys.readouterr().err
    assert main(["eval", str(ckpt), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is damaged" in err


def test_checksum_covers_plain_values_and_old_checkpoints_still_load(ckpt, tmp_path):
    raw = torch.load(ckpt, weights_only=True)
    changed = dict(raw, epoch=4)
    assert payload_digest(changed) != raw["checksum"]["digest"]
    torch.save(changed, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint(tmp_path / "edited.pt")
    old = {k: v for k, v in raw.items() if k != "checksum"}  # written before checksums existed
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["epoch"] == 3


@pytest.mark.parametrize("content, says", [
    (lambda good: b"XXXX" + good[4:], "is damaged or of another format (it does not start like a PyTorch file)"),
    (lambda good: b"FBNN\x00\r\n\x1a" + good[8:], "is an exported packed model (.fbnn), not a checkpoint"),
    (lambda good: good[: len(good) // 2], "is truncated or corrupt (PyTorch cannot read it)"),
    (lambda good: b"", "is empty, not a checkpoint"),
])
def test_damaged_or_foreign_files_say_what_they_are(ckpt, tmp_path, capsys, content, says):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content(ckpt.read_bytes()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(bad)
    assert str(e.value).startswith(f"{bad} {says}") and "\n" not in str(e.value)
    assert "Weights only" not in str(e.value) and "PytorchStreamReader" not in str(e.value)
    assert main(["summary", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err


def test_unsafe_pickle_is_named_without_torch_advice(tmp_path):
    path = tmp_path / "module.pt"
    torch.save({"m": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "refused as unsafe to load" in msg and "torch.nn.modules.linear.Linear" in msg
    assert "weights_only" not in msg and "\n" not in msg
