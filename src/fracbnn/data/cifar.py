"""CIFAR-10 and CIFAR-100 from the canonical "python version" files.

The data can be given as the extracted folder, a folder that contains it or
the official archive, or the official archive file itself; archives are
extracted once into the cache (see ``cache.py``). Without local data the
official archive is downloaded and its md5 checked.

The batch files are pickles. They are read with an unpickler that only
accepts plain containers and numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FracBNNError
from .cache import archive_key, cache_dir, dataset_root_default, download, extract_archive
from .memory import InMemoryImageDataset


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str  # top folder inside the archive
    archive: str  # official archive file name
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str

    @property
    def hint(self) -> str:
        return f"pass --data PATH (folder or {self.archive})"


CIFAR10 = CifarSpec(
    name="cifar10", folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
    meta_file="batches.meta", label_key="labels", names_key="label_names",
)
CIFAR100 = CifarSpec(
    name="cifar100", folder="cifar-100-python", archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",), test_files=("test",), meta_file="meta",
    label_key="fine_labels", names_key="fine_label_names",
)
SPECS = {s.name: s for s in (CIFAR10, CIFAR100)}


# ---------------------------------------------------------------- safe unpickling

def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1")
    ("_codecs", "encode"): lambda: codecs.encode,
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except numpy arrays and byte-string decoding."""

    def find_class(self, module, name):
        make = _ALLOWED.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return make()


def _load_pickle(path: Path) -> dict:
    try:
        data = path.read_bytes()
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except FileNotFoundError as e:
        raise FracBNNError(f"missing file {path}; the dataset folder is incomplete") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise FracBNNError(f"cannot read {path}: not a CIFAR batch file or truncated ({e})") from e
    if not isinstance(obj, dict):
        raise FracBNNError(f"cannot read {path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batches(folder: Path, files: tuple[str, ...], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        d = _load_pickle(path)
        if "data" not in d or label_key not in d:
            raise FracBNNError(f"cannot read {path}: keys 'data' and '{label_key}' expected, found {sorted(d)}")
        data = np.asarray(d["data"])
        lab = np.asarray(d[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(lab) != len(data):
            raise FracBNNError(f"cannot read {path}: expected uint8 data of shape (N, 3072) and N labels, got "
                               f"{data.dtype} {data.shape} and {len(lab)} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def _read_class_names(folder: Path, spec: CifarSpec, names_key: str) -> list[str]:
    meta = _load_pickle(folder / spec.meta_file)
    if names_key not in meta:
        raise FracBNNError(f"cannot read {folder / spec.meta_file}: no '{names_key}' entry")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[names_key]]


# ---------------------------------------------------------------- locating the data

def _is_batches_folder(path: Path, spec: CifarSpec) -> bool:
    return path.is_dir() and (path / spec.meta_file).is_file()


def _has_all_files(path: Path, spec: CifarSpec) -> bool:
    return all((path / f).is_file() for f in (spec.meta_file, *spec.train_files, *spec.test_files))


def _from_archive(archive: Path, spec: CifarSpec) -> Path:
    dest = cache_dir() / "extracted" / f"{spec.name}-{archive_key(archive)}"
    return extract_archive(archive, spec.folder, dest)


def locate_cifar(spec: CifarSpec, root: str | Path | None = None, download_ok: bool = True) -> Path:
    """The folder holding the batch files, extracting or downloading as needed."""
    if root is None:
        root = dataset_root_default()
    if root is not None:
        p = Path(root).expanduser()
        if not p.exists():
            raise FracBNNError(f"data path {p} does not exist; {spec.hint}")
        if p.is_file():
            return _from_archive(p, spec)
        if _is_batches_folder(p, spec):
            return p
        if _is_batches_folder(p / spec.folder, spec):
            return p / spec.folder
        if (p / spec.archive).is_file():
            return _from_archive(p / spec.archive, spec)
        raise FracBNNError(f"no {spec.name} data in {p}: expected {spec.folder}/ or {spec.archive} there; "
                           f"{spec.hint}")
    cached = cache_dir() / spec.folder
    if _has_all_files(cached, spec):  # extracted by us (atomically) or placed there by the user
        return cached
    if not download_ok:
        raise FracBNNError(f"{spec.name} is not in the cache {cache_dir()} and downloading is disabled; "
                           f"{spec.hint}")
    archive = download(spec.url, cache_dir() / "downloads" / spec.archive, spec.md5, what=spec.archive,
                       hint=spec.hint)
    return extract_archive(archive, spec.folder, cache_dir())


def load_cifar(name: str, root: str | Path | None = None, split: str = "train", download: bool = True,
               labels: str = "fine") -> InMemoryImageDataset:
    """CIFAR-10/100 split as an in-memory uint8 dataset. ``labels``: CIFAR-100 "fine" or "coarse"."""
    spec = SPECS[name]
    label_key, names_key = spec.label_key, spec.names_key
    if spec is CIFAR100:
        if labels not in ("fine", "coarse"):
            raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
        label_key, names_key = f"{labels}_labels", f"{labels}_label_names"
    folder = locate_cifar(spec, root, download)
    classes = _read_class_names(folder, spec, names_key)
    files = spec.train_files if split == "train" else spec.test_files
    images, targets = _read_batches(folder, files, label_key)
    if len(targets) and (targets.min() < 0 or targets.max() >= len(classes)):
        raise FracBNNError(f"labels in {folder} lie outside 0..{len(classes) - 1}; the files are corrupt")
    return InMemoryImageDataset(torch.from_numpy(images), torch.from_numpy(targets), classes, name=name,
                                split=split, source=str(folder))
