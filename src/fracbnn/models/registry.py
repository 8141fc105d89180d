"""Model registry: build any model by name, and rebuild it from a checkpoint.

Each registered builder receives keyword options; the model it returns
carries ``model.spec = {"name": ..., "kwargs": {...}}`` so a checkpoint can
record exactly how to rebuild it.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_options(name: str) -> dict:
    """Default keyword options of a registered model."""
    builder = _get(name)
    return {
        k: p.default
        for k, p in inspect.signature(builder).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _get(name: str):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names or options raise ValueError."""
    builder = _get(name)
    known = model_options(name)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}"
        )
    model = builder(**kwargs)
    model.spec = {"name": name, "kwargs": {**known, **kwargs}}
    return model
