"""The packed (integer) model: metadata, an op program and integer tensors.

A :class:`PackedModel` is what ``fracbnn export`` writes and every engine
runs. ``program`` is a list of ops (dicts) executed in order on named integer
buffers; their exact semantics are defined in :mod:`fracbnn.deploy.golden`
and docs/deploy-format.md. ``validate`` checks a program against the schema
below by inferring every buffer's shape, so a file that passes its checksum
but was written by something else still fails with a clear message instead
of crashing an engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .container import PackedFormatError, read_container, write_container

KIND = "fracbnn.packed-model"

#: op name -> (tensor attributes with their dtype, other required attributes)
OP_SCHEMA = {
    "thermometer": ({}, ("input", "output", "resolution", "bits")),
    "binary_conv": ({"weight": "uint8"}, ("input", "output", "in_channels", "out_channels", "kernel", "stride",
                                          "padding")),
    "quantize2": ({}, ("input", "output", "frac_bits")),
    "sign_bit": ({}, ("input", "output")),
    "frac_conv": ({"weight": "uint8", "gate_threshold": "int64"}, ("input", "output", "in_channels",
                                                                   "out_channels", "kernel", "stride", "padding")),
    "scale_shift": ({"mul": "int64", "add": "int64"}, ("input", "output", "shift", "bits")),
    "avgpool2_dup": ({}, ("input", "output")),
    "block_post": ({"sign": "int64", "threshold": "int64", "pos_mul": "int64", "pos_add": "int64",
                    "neg_mul": "int64", "neg_add": "int64", "sc_mul": "int64"},
                   ("input", "shortcut", "output", "shift", "bits")),
    "global_sum_pool": ({}, ("input", "output")),
    "linear": ({"weight": "int64", "bias": "int64"}, ("input", "output")),
}


def pack_weight_bits(sign_w: np.ndarray) -> np.ndarray:
    """(Cout, Cin, kh, kw) weights in {-1, +1} -> uint8 (Cout, kh, kw, ceil(Cin/8)).

    Bit ``ci % 8`` (least significant first) of byte ``ci // 8`` is 1 for a
    +1 weight of input channel ci, 0 for -1; unused high bits are 0.
    """
    bits = (np.asarray(sign_w) > 0).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.packbits(bits, axis=-1, bitorder="little")


def unpack_weight_bits(packed: np.ndarray, in_channels: int) -> np.ndarray:
    """Inverse of :func:`pack_weight_bits`: uint8 0/1 bits of shape (Cout, Cin, kh, kw)."""
    bits = np.unpackbits(packed, axis=-1, count=in_channels, bitorder="little")
    return np.ascontiguousarray(bits.transpose(0, 3, 1, 2))


@dataclass
class PackedModel:
    meta: dict
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def program(self) -> list[dict]:
        return self.meta["program"]

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.meta["input_size"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def logit_denominator(self) -> int:
        """Real logit = integer logit / logit_denominator."""
        return int(self.meta["logit_denominator"])

    @property
    def class_names(self) -> list[str]:
        names = self.meta.get("class_names")
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    def save(self, path: str | os.PathLike):
        self.validate()
        return write_container(path, self.meta, self.tensors)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PackedModel":
        meta, tensors = read_container(path)
        if meta.get("kind") != KIND:
            raise PackedFormatError(f"{path} is an FBNN container but not a FracBNN packed model "
                                    f"(kind {meta.get('kind')!r}); export one with `fracbnn export`")
        model = cls(meta, tensors)
        try:
            model.validate()
        except PackedFormatError as e:
            raise PackedFormatError(f"{path}: {e}") from None
        return model

    def validate(self) -> dict[str, tuple]:
        """Check metadata and program (see :func:`infer_shapes`); returns buffer shapes for N = 1."""
        for key in ("program", "input_size", "num_classes", "logit_denominator"):
            if key not in self.meta:
                raise PackedFormatError(f"metadata lacks {key!r}; re-export the model")
        try:
            size = tuple(int(v) for v in self.meta["input_size"])
            if len(size) != 3 or min(size) < 1 or int(self.meta["logit_denominator"]) < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise PackedFormatError("metadata has a bad input_size or logit_denominator; re-export the model") from None
        if not isinstance(self.program, list):
            raise PackedFormatError("metadata 'program' is not a list of ops; re-export the model")
        shapes = infer_shapes(self.program, size, self.tensors)
        if shapes.get("logits") != (1, self.num_classes):
            raise PackedFormatError(f"the program does not end in 'logits' of {self.num_classes} classes")
        return shapes


def infer_shapes(program: list[dict], input_size, tensors: dict) -> dict[str, tuple]:
    """Shape of every buffer (batch 1), checking each op against OP_SCHEMA; PackedFormatError if inconsistent."""
    bad = PackedFormatError
    shapes = {"image": (1, *input_size)}
    for i, op in enumerate(program):
        name = op.get("op") if isinstance(op, dict) else None
        if name not in OP_SCHEMA:
            raise bad(f"op {i} is {name!r}, which this fracbnn does not know; upgrade fracbnn or re-export")
        tensor_attrs, attrs = OP_SCHEMA[name]
        missing = [a for a in (*attrs, *tensor_attrs) if a not in op]
        if missing:
            raise bad(f"op {i} ({name}) lacks {', '.join(missing)}; re-export the model")
        for attr, dtype in tensor_attrs.items():
            t = op[attr]
            if t is None and attr == "gate_threshold":
                continue
            if not isinstance(t, str) or t not in tensors:
                raise bad(f"op {i} ({name}) refers to missing tensor {t!r}; re-export the model")
            if tensors[t].dtype.name != dtype:
                raise bad(f"tensor {t!r} has dtype {tensors[t].dtype.name}, expected {dtype}")
        inputs = op["input"] if isinstance(op["input"], list) else [op["input"]]
        if name == "block_post":
            inputs = inputs + [op["shortcut"]]
        for b in inputs:
            if not isinstance(b, str) or b not in shapes:
                raise bad(f"op {i} ({name}) reads buffer {b!r} before anything writes it")
        try:
            out = _infer_shape(name, op, [shapes[b] for b in inputs], tensors)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise bad(f"op {i} ({name}) is inconsistent: {e}; re-export the model") from None
        outputs = op["output"] if isinstance(op["output"], list) else [op["output"]]
        for b in outputs:
            shapes[b] = out
    return shapes


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _infer_shape(name: str, op: dict, ins: list[tuple], tensors: dict) -> tuple:
    x = ins[0]
    if name == "thermometer":
        _need(int(op["bits"]) >= 1 and 1 <= int(op["resolution"]) <= 255, "bad resolution or bits")
        return (x[0], x[1] * int(op["bits"]), x[2], x[3])
    if name in ("binary_conv", "frac_conv"):
        cin, cout, k, s, p = (int(op[a]) for a in ("in_channels", "out_channels", "kernel", "stride", "padding"))
        if name == "frac_conv":
            _need(len(ins) == 2 and ins[0] == ins[1], "frac_conv needs two equal-shaped bit planes")
        _need(x[1] == cin, f"input has {x[1]} channels, op says {cin}")
        _need(tensors[op["weight"]].shape == (cout, k, k, (cin + 7) // 8), "weight shape mismatch")
        _need(k >= 1 and s >= 1 and p >= 0, "bad kernel/stride/padding")
        if name == "frac_conv" and op["gate_threshold"] is not None:
            _need(tensors[op["gate_threshold"]].shape == (cout,), "gate threshold shape mismatch")
        return (x[0], cout, _conv_out(x[2], k, s, p), _conv_out(x[3], k, s, p))
    if name in ("quantize2", "sign_bit", "scale_shift"):
        if name == "scale_shift":
            for t in ("mul", "add"):
                _need(tensors[op[t]].shape == (x[1],), f"{t} shape mismatch")
            _need(0 <= int(op["shift"]) < 62 and 2 <= int(op["bits"]) <= 62, "bad shift or bits")
        return x
    if name == "avgpool2_dup":
        return (x[0], 2 * x[1], x[2] // 2, x[3] // 2)
    if name == "block_post":
        sc = ins[1]
        _need(sc == x, f"shortcut shape {sc} differs from conv output {x}")
        for t in ("sign", "threshold", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul"):
            _need(tensors[op[t]].shape == (x[1],), f"{t} shape mismatch")
        _need(0 <= int(op["shift"]) < 62 and 2 <= int(op["bits"]) <= 62, "bad shift or bits")
        return x
    if name == "global_sum_pool":
        return (x[0], x[1])
    if name == "linear":
        w, b = tensors[op["weight"]], tensors[op["bias"]]
        _need(w.ndim == 2 and w.shape[1] == x[1] and b.shape == (w.shape[0],), "weight/bias shape mismatch")
        return (x[0], w.shape[0])
    raise ValueError(f"unknown op {name}")


def accumulator_bits(program: list[dict], input_size, tensors: dict, residual_bits: int) -> dict[str, int]:
    """Worst-case signed bits of each op's widest intermediate (before shift/saturation).

    Bounds are analytic (|x| <= max over the data type's range), so an
    implementation with accumulators this wide can never overflow. Keyed by
    the op's output buffer (the first one for quantize2).
    """
    shapes = infer_shapes(program, input_size, tensors)
    res_max = 2 ** (residual_bits - 1)
    bound: dict[str, int] = {"image": 255}
    bits = {}

    def mx(name):
        return int(np.abs(tensors[name]).max()) if tensors[name].size else 0

    for op in program:
        kind, out = op["op"], op["output"]
        if kind in ("binary_conv", "frac_conv"):
            taps = int(op["in_channels"]) * int(op["kernel"]) ** 2
            b = taps if kind == "binary_conv" else 3 * taps
        elif kind == "thermometer" or kind in ("quantize2", "sign_bit"):
            b = 1
        elif kind == "scale_shift":
            b = mx(op["mul"]) * bound[op["input"]] + mx(op["add"])
        elif kind == "avgpool2_dup":
            b = 4 * bound[op["input"]]
        elif kind == "block_post":
            a = bound[op["input"]]
            b = max(mx(op["pos_mul"]) * a + mx(op["pos_add"]), mx(op["neg_mul"]) * a + mx(op["neg_add"])) \
                + mx(op["sc_mul"]) * bound[op["shortcut"]]
        elif kind == "global_sum_pool":
            s = shapes[op["input"]]
            b = bound[op["input"]] * s[2] * s[3]
        elif kind == "linear":
            b = mx(op["weight"]) * bound[op["input"]] * tensors[op["weight"]].shape[1] + mx(op["bias"])
        else:
            raise ValueError(kind)
        one_bit = kind in ("thermometer", "quantize2", "sign_bit")  # 0/1 planes
        bits[out if isinstance(out, str) else out[0]] = 1 if one_bit else int(b).bit_length() + 1
        after = min(b, res_max) if kind in ("scale_shift", "block_post") else b
        for o in (out if isinstance(out, list) else [out]):
            bound[o] = after
    return bits
