"""Deployment: packed integer models (.fbnn), the golden engine and engine registry.

    packed = export_model(model)            # fold a trained model (export.py)
    packed.save("m.fbnn"); PackedModel.load("m.fbnn")
    get_engine("golden")(packed).predict(uint8_images)
"""

from .container import FORMAT_VERSION, PackedFormatError
from .engines import Engine, EngineError, get_engine, list_engines, register_engine
from .export import FixedPoint, UnsupportedModelError, export_model
from .packed import PackedModel

__all__ = ["FORMAT_VERSION", "Engine", "EngineError", "FixedPoint", "PackedFormatError", "PackedModel",
           "UnsupportedModelError", "export_model", "get_engine", "list_engines", "register_engine"]
