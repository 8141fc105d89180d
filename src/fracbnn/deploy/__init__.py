"""Deployment: packed integer models (.fbnn), the engines and the exporter.

    packed = export_model(model)            # fold a trained model (export.py; needs torch)
    packed.save("m.fbnn"); PackedModel.load("m.fbnn")
    get_engine("golden")(packed).predict(uint8_images)

Everything except the exporter works without torch: the names that need it
are imported on first use.
"""

from ..ir.container import FORMAT_VERSION, PackedFormatError
from ..ir.model import PackedModel
from .engines import Engine, EngineError, get_engine, list_engines, register_engine

_TORCH_SIDE = {"FixedPoint", "UnsupportedModelError", "export_model"}


def __getattr__(name):
    if name in _TORCH_SIDE:
        from . import export
        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FORMAT_VERSION", "Engine", "EngineError", "FixedPoint", "PackedFormatError", "PackedModel",
           "UnsupportedModelError", "export_model", "get_engine", "list_engines", "register_engine"]
