"""Training: recipes (YAML), the three-step loop, checkpoints, DDP, distillation and metrics.

``fracbnn train --config configs/cifar10-fracbnn.yaml`` runs a recipe; see
docs/training.md.
"""

from .config import DEFAULTS, ConfigError, load_recipe, write_recipe
from .trainer import NonFiniteLossError, Trainer, build_model, load_data, train

__all__ = ["DEFAULTS", "ConfigError", "NonFiniteLossError", "Trainer", "build_model", "load_data", "load_recipe",
           "train", "write_recipe"]
