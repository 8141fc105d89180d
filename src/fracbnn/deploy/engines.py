"""Inference engines for packed models, chosen by name.

Every engine takes a :class:`~fracbnn.deploy.packed.PackedModel` and must give
integer logits bit-identical to the golden engine (``fracbnn.deploy.golden``),
which defines the arithmetic. Interface:

    engine = get_engine("golden")(packed)
    engine.logits(pixels)   # pixels: uint8 numpy (N, C, H, W) -> int64 (N, classes)
    engine.predict(pixels)  # int64 (N,): index of the first maximal logit
    engine.scores(pixels)   # float64 (N, classes): logits / packed.logit_denominator

Subclasses implement only ``logits``. Registering a new engine is one line
in ``_ENGINES`` (lazy "module:Class" strings keep imports cheap).
"""

from __future__ import annotations

import importlib

import numpy as np

from ..errors import FracBNNError

_ENGINES = {
    "golden": "fracbnn.deploy.golden:GoldenEngine",
    "fast": "fracbnn.deploy.fast:FastEngine",
}


class EngineError(FracBNNError):
    """Unknown or unavailable engine, or input the engine cannot take."""


def list_engines() -> list[str]:
    return sorted(_ENGINES)


def register_engine(name: str, target: str) -> None:
    """Make ``name`` resolve to ``target`` ("package.module:ClassName")."""
    _ENGINES[name] = target


def get_engine(name: str):
    """The engine class registered under ``name`` (imported on first use)."""
    try:
        target = _ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(list_engines())}") from None
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise EngineError(f"engine {name!r} is not available ({e}); use --engine golden") from None


class Engine:
    """Base class: input checking plus predict/scores derived from ``logits``."""

    name = "base"

    def __init__(self, packed):
        self.packed = packed

    def check_pixels(self, pixels) -> np.ndarray:
        """uint8 (N, C, H, W) of exactly the exported input size, else EngineError."""
        pixels = np.asarray(pixels)
        want = tuple(self.packed.input_size)
        if pixels.dtype != np.uint8:
            raise EngineError(f"images must be uint8 pixels 0..255, got dtype {pixels.dtype}")
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want:
            raise EngineError(f"images must have shape (N, {', '.join(map(str, want))}), got {tuple(pixels.shape)}")
        return np.ascontiguousarray(pixels)

    def logits(self, pixels) -> np.ndarray:
        raise NotImplementedError

    def predict(self, pixels) -> np.ndarray:
        return np.argmax(self.logits(pixels), axis=1).astype(np.int64)

    def scores(self, pixels) -> np.ndarray:
        return self.logits(pixels).astype(np.float64) / float(self.packed.logit_denominator)
