"""The ``.fbnn`` container: header, JSON metadata, raw tensors, SHA-256.

Layout (all integers little-endian; see docs/deploy-format.md):

    offset 0   8 bytes   magic b"FBNN\\x00\\r\\n\\x1a" (the \\r\\n and \\x1a catch text-mode
                         transfers, like PNG's signature)
    offset 8   uint32    container format version (FORMAT_VERSION)
    offset 12  uint32    reserved, 0
    offset 16  uint64    length J of the JSON metadata in bytes
    offset 24  J bytes   UTF-8 JSON object; its "tensors" table gives every tensor's
                         name, dtype, shape, offset (from the data start) and nbytes
    ...        zero padding up to a multiple of 64 bytes -> data start
    ...        tensor bytes, each tensor starting at a multiple of 64
    last 32    SHA-256 of every byte before it

No pickle and no code: reading a file only parses JSON and copies bytes, so a
hostile file can at worst be rejected. A custom format (instead of e.g.
safetensors) keeps the version in a fixed place, checks the whole file with
one digest and needs no extra dependency.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from ..fileio import atomic_write
from ..errors import FracBNNError

MAGIC = b"FBNN\x00\r\n\x1a"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQ")
_ALIGN = 64
_DIGEST = 32
#: dtypes a tensor may have in the file (always stored little-endian).
DTYPES = {"uint8": np.uint8, "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64}


class PackedFormatError(FracBNNError):
    """A .fbnn file is missing, truncated, corrupt, of another version or not a FracBNN model."""


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def write_container(path: str | os.PathLike, meta: dict, tensors: dict[str, np.ndarray]) -> Path:
    """Write ``meta`` (JSON-able) and integer ``tensors`` atomically to ``path``."""
    table, blobs, offset = {}, [], 0
    for name in sorted(tensors):  # sorted: the same model always gives the same bytes
        arr = np.ascontiguousarray(tensors[name])
        dtype = arr.dtype.name
        if dtype not in DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {dtype}; allowed: {', '.join(DTYPES)}")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        table[name] = {"dtype": dtype, "shape": list(arr.shape), "offset": offset, "nbytes": len(data)}
        blobs.append(data + b"\0" * _pad(len(data)))
        offset += len(data) + _pad(len(data))
    body = dict(meta)
    body["tensors"] = table
    js = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(js)) + js
    head += b"\0" * _pad(len(head))
    payload = head + b"".join(blobs)
    payload += hashlib.sha256(payload).digest()
    return atomic_write(path, lambda f: f.write(payload))


def read_container(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a container; every failure is a one-line PackedFormatError."""
    path = Path(path)
    if not path.is_file():
        raise PackedFormatError(f"{path} not found; export one with `fracbnn export CHECKPOINT -o {path.name}`")
    raw = path.read_bytes()
    if len(raw) < _HEADER.size or raw[:4] != MAGIC[:4]:
        raise PackedFormatError(f"{path} is not a FracBNN packed model (no FBNN signature); "
                                "export one with `fracbnn export CHECKPOINT -o model.fbnn`")
    if raw[:8] != MAGIC:
        raise PackedFormatError(f"{path} has a damaged signature (was it transferred in text mode?); "
                                "copy it again in binary mode or re-export it")
    _, version, _, jlen = _HEADER.unpack_from(raw)
    if version != FORMAT_VERSION:
        raise PackedFormatError(f"{path} is packed-format version {version}; this fracbnn reads version "
                                f"{FORMAT_VERSION}; re-export it from its checkpoint with this fracbnn")
    if len(raw) < _HEADER.size + jlen + _DIGEST:
        raise PackedFormatError(f"{path} is truncated ({len(raw)} bytes, header needs more); "
                                "copy it again or re-export it")
    if hashlib.sha256(raw[:-_DIGEST]).digest() != raw[-_DIGEST:]:
        raise PackedFormatError(f"{path} fails its SHA-256 check (truncated or corrupted); "
                                "copy it again or re-export it")
    try:
        meta = json.loads(raw[_HEADER.size:_HEADER.size + jlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackedFormatError(f"{path} has unreadable metadata ({e}); re-export it") from None
    start = _HEADER.size + jlen
    start += _pad(start)
    end = len(raw) - _DIGEST
    tensors = {}
    table = meta.pop("tensors", None)
    if not isinstance(table, dict):
        raise PackedFormatError(f"{path} has no tensor table; re-export it")
    for name, t in table.items():
        try:
            dtype = np.dtype(DTYPES[t["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in t["shape"])
            off, nbytes = start + int(t["offset"]), int(t["nbytes"])
            if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or off < start or off + nbytes > end:
                raise ValueError("size or offset out of range")
        except (KeyError, TypeError, ValueError) as e:
            raise PackedFormatError(f"{path}: tensor {name!r} has a bad table entry ({e}); re-export it") from None
        tensors[name] = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)),
                                      offset=off).reshape(shape).astype(dtype.newbyteorder("="))
    return meta, tensors
