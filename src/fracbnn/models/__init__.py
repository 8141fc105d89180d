"""Models by name: ``create_model("resnet20-fracbnn")``, ``list_models()``."""

from . import resnet_cifar  # noqa: F401  (registers the CIFAR ResNets)
from . import reactnet  # noqa: F401  (registers the ImageNet ReActNets)
from .registry import create_model, list_models, model_options, register_model

__all__ = ["create_model", "list_models", "model_options", "register_model"]
