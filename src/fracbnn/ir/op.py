"""One integer op = one class: its attributes, shape rule, value bound and golden execution.

A node of the program is a plain JSON dict ``{"op": NAME, <attributes>}``
(that is what a ``.fbnn`` stores). The op class registered under NAME is the
only place that knows what the attributes mean:

* ``inputs`` / ``outputs``: attributes holding buffer names (a name or a list
  of names); consumers ask :meth:`IntegerOp.input_buffers` instead of
  parsing names;
* ``tensors``: attributes naming integer tensors, with their dtype;
* ``params``: plain integer attributes;
* ``name`` (optional, every op): the trained module the node comes from
  (e.g. ``stages.0.0.conv1``), for reports that speak of layers;
* :meth:`infer_shapes`: the output shapes, checking the node;
* :meth:`bounds`: the worst-case magnitude of the widest intermediate and of
  each output, from the inputs' bounds (the accumulator-width analysis);
* :meth:`execute`: the golden numpy semantics, the definition every other
  engine must reproduce bit for bit.

The class docstring is the op's documentation (docs/deploy-format.md is
generated from it). Modelled on qonnx custom ops: adding an op is adding one
class here, and the validator, the golden engine and the width analysis pick
it up from the registry.
"""

from __future__ import annotations

import numpy as np

#: buffer kinds: "bits" = uint8 0/1 planes (1 means +1), "int" = int64 integers
BITS, INT = "bits", "int"

_REGISTRY: dict[str, type["IntegerOp"]] = {}


class NodeError(ValueError):
    """A node is inconsistent with its op's definition (the validator turns it into PackedFormatError)."""


def need(cond: bool, msg: str) -> None:
    if not cond:
        raise NodeError(msg)


def register_op(cls: type["IntegerOp"]) -> type["IntegerOp"]:
    """Class decorator: make ``cls`` the op named ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"op {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get_op(name) -> type["IntegerOp"]:
    """The op class called ``name``; KeyError if there is none."""
    _load_ops()
    return _REGISTRY[name]


def registered_ops() -> dict[str, type["IntegerOp"]]:
    """Every op, by name, in registration (documentation) order."""
    _load_ops()
    return dict(_REGISTRY)


def _load_ops() -> None:
    from . import ops  # noqa: F401  (registers the built-in ops on first use)


class ExecContext:
    """What an execution may report besides its outputs, accumulated over calls.

    ``gate_counts``: per gated conv output, (open gates, outputs).
    ``saturation``: per saturating node output, (values clipped, values).
    ``peaks``: per saturating node output, the largest |value| before saturation
    (what a width must hold so that nothing clips; see fracbnn.ir.passes).
    """

    def __init__(self):
        self.gate_counts: dict[str, tuple[int, int]] = {}
        self.saturation: dict[str, tuple[int, int]] = {}
        self.peaks: dict[str, int] = {}

    def count_gates(self, key: str, is_open: np.ndarray) -> None:
        prev = self.gate_counts.get(key, (0, 0))
        self.gate_counts[key] = (prev[0] + int(is_open.sum()), prev[1] + int(is_open.size))

    def count_saturation(self, key: str, unclipped: np.ndarray, bits: int) -> None:
        hi = (1 << (int(bits) - 1)) - 1
        clipped = int(np.count_nonzero((unclipped > hi) | (unclipped < -hi - 1)))
        prev = self.saturation.get(key, (0, 0))
        self.saturation[key] = (prev[0] + clipped, prev[1] + int(unclipped.size))
        if unclipped.size:
            peak = int(max(int(unclipped.max()), -int(unclipped.min())))
            self.peaks[key] = max(self.peaks.get(key, 0), peak)


class IntegerOp:
    """Base class; subclasses set the class attributes and override the three methods."""

    name: str = ""
    #: attribute names holding input / output buffer names, in order
    inputs: tuple[str, ...] = ("input",)
    outputs: tuple[str, ...] = ("output",)
    #: how many buffers each input / output attribute holds (1: a string; n > 1: a list of n names)
    arity: dict[str, int] = {}
    #: tensor attribute -> dtype; those in ``optional`` may be null
    tensors: dict[str, str] = {}
    optional: frozenset[str] = frozenset()
    #: integer attributes, each with a one-line meaning (for the docs)
    params: dict[str, str] = {}
    #: kind of every output buffer (BITS or INT)
    out_kind: str = INT

    # -- graph view
    @classmethod
    def buffers(cls, node: dict, attr: str) -> list[str]:
        v = node[attr]
        return list(v) if isinstance(v, list) else [v]

    @classmethod
    def input_buffers(cls, node: dict) -> list[str]:
        return [b for a in cls.inputs for b in cls.buffers(node, a)]

    @classmethod
    def output_buffers(cls, node: dict) -> list[str]:
        return [b for a in cls.outputs for b in cls.buffers(node, a)]

    @classmethod
    def check_node(cls, node: dict, tensors: dict) -> None:
        """Attributes present, of the right form; tensors present with their dtypes."""
        missing = [a for a in (*cls.inputs, *cls.outputs, *cls.params, *cls.tensors) if a not in node]
        need(not missing, f"lacks {', '.join(missing)}")
        for a in (*cls.inputs, *cls.outputs):
            n = cls.arity.get(a, 1)
            v = node[a]
            ok = isinstance(v, str) if n == 1 else (isinstance(v, list) and len(v) == n
                                                   and all(isinstance(b, str) for b in v))
            need(ok, f"attribute {a!r} must be {'a buffer name' if n == 1 else f'a list of {n} buffer names'}")
        need(isinstance(node.get("name", ""), str), "attribute 'name' must be a string")
        for a in cls.params:
            need(isinstance(node[a], int) and not isinstance(node[a], bool), f"attribute {a!r} must be an integer")
        for a, dtype in cls.tensors.items():
            t = node[a]
            if t is None and a in cls.optional:
                continue
            need(isinstance(t, str) and t in tensors, f"refers to missing tensor {t!r}")
            need(tensors[t].dtype.name == dtype, f"tensor {t!r} has dtype {tensors[t].dtype.name}, expected {dtype}")

    @classmethod
    def tensor(cls, node: dict, tensors: dict, attr: str):
        t = node[attr]
        return None if t is None else tensors[t]

    # -- definition
    def infer_shapes(self, node: dict, shapes: list[tuple], tensors: dict) -> list[tuple]:
        """Output shapes (batch first) from the input shapes; NodeError if the node is inconsistent."""
        raise NotImplementedError

    def bounds(self, node: dict, bounds: list[int], shapes: list[tuple], tensors: dict) -> tuple[int, list[int]]:
        """(bound of the widest intermediate, bound of each output): worst-case |value| over all inputs."""
        raise NotImplementedError

    def execute(self, node: dict, inputs: list[np.ndarray], tensors: dict,
                ctx: ExecContext | None = None) -> list[np.ndarray]:
        """Golden semantics: numpy inputs (in ``input_buffers`` order) -> outputs."""
        raise NotImplementedError


def max_abs(a: np.ndarray | None) -> int:
    return int(np.abs(a.astype(np.int64)).max()) if a is not None and a.size else 0
