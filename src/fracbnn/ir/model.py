"""The packed model: metadata, a program of op nodes, integer tensors; validation by the op registry.

A :class:`PackedModel` is what ``fracbnn export`` writes and every engine
runs. ``program`` is a list of nodes executed in order on named integer
buffers (the image is the buffer ``"image"``; the last op writes
``"logits"``). What a node means is defined by its op class
(:mod:`fracbnn.ir.ops`); this module only walks the program and asks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .container import PackedFormatError, read_container, write_container
from .op import INT, NodeError, get_op

KIND = "fracbnn.packed-model"


def node_op(node, index: int):
    """The op class of a node, or PackedFormatError naming it."""
    name = node.get("op") if isinstance(node, dict) else None
    try:
        return get_op(name)
    except (KeyError, TypeError):
        raise PackedFormatError(f"op {index} is {name!r}, which this fracbnn does not know; "
                                "upgrade fracbnn or re-export") from None


def infer_shapes(program: list[dict], input_size, tensors: dict) -> dict[str, tuple]:
    """Shape of every buffer (batch 1), each node checked by its op; PackedFormatError if inconsistent."""
    shapes = {"image": (1, *input_size)}
    for i, node in enumerate(program):
        op = node_op(node, i)
        try:
            op.check_node(node, tensors)
            ins = op.input_buffers(node)
            for b in ins:
                if b not in shapes:
                    raise NodeError(f"reads buffer {b!r} before anything writes it")
            outs = op().infer_shapes(node, [shapes[b] for b in ins], tensors)
        except NodeError as e:
            raise PackedFormatError(f"op {i} ({node['op']}) is inconsistent: {e}; re-export the model") from None
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise PackedFormatError(f"op {i} ({node['op']}) is inconsistent: {e!r}; re-export the model") from None
        for b, s in zip(op.output_buffers(node), outs):
            shapes[b] = tuple(int(v) for v in s)
    return shapes


def value_bounds(program: list[dict], input_size, tensors: dict) -> tuple[dict[str, int], dict[str, int]]:
    """(widest-intermediate bound per node, bound of every buffer): worst-case magnitudes, analytic.

    A node is keyed by its first output buffer. An implementation whose
    accumulators hold these bounds can never overflow.
    """
    shapes = infer_shapes(program, input_size, tensors)
    bound: dict[str, int] = {"image": 255}
    widest: dict[str, int] = {}
    for node in program:
        op = get_op(node["op"])
        ins = op.input_buffers(node)
        acc, outs = op().bounds(node, [bound[b] for b in ins], [shapes[b] for b in ins], tensors)
        out_names = op.output_buffers(node)
        widest[out_names[0]] = int(acc)
        for b, v in zip(out_names, outs):
            bound[b] = int(v)
    return widest, bound


def accumulator_bits(program: list[dict], input_size, tensors: dict) -> dict[str, int]:
    """Worst-case signed bits of each node's widest intermediate (1 for bit planes), keyed by first output.

    The saturation widths are read from the nodes themselves (they may differ per layer).
    """
    widest, _ = value_bounds(program, input_size, tensors)
    bits = {}
    for node in program:
        op = get_op(node["op"])
        key = op.output_buffers(node)[0]
        bits[key] = 1 if op.out_kind != INT else int(widest[key]).bit_length() + 1
    return bits


@dataclass
class PackedModel:
    meta: dict
    tensors: dict = field(default_factory=dict)

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
