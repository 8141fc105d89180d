"""Model family -> integer IR converters, registered by model class.

A converter is ``convert(model, builder) -> str``: it appends the nodes of
everything up to the residual stream that enters the head (global pool and
classifier, which :func:`fracbnn.deploy.export.export_model` adds for every
family) and returns that buffer's name. A new model family is a new module
here with ``@register_converter(ItsModelClass)``; nothing central changes.
"""

from __future__ import annotations

_CONVERTERS: dict[type, object] = {}


def register_converter(model_cls: type):
    def deco(fn):
        _CONVERTERS[model_cls] = fn
        return fn
    return deco


def converter_for(model):
    """The converter registered for ``model``'s class (or a base class), else None."""
    from . import cifar, reactnet  # noqa: F401  (registers the built-in families)

    for cls in type(model).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    return None


def supported_families() -> list[str]:
    from . import cifar, reactnet  # noqa: F401

    return sorted(c.__name__ for c in _CONVERTERS)
