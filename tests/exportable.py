"""Every model family that exports, with a reduced configuration for the fast suite (timm-style registry).

Tests of export, engines and hardware iterate over EXPORTABLE, so a new
family is exercised everywhere by adding one line here.
"""

import torch

from fracbnn.models import create_model
from fracbnn.models.calibrate import data_like, smooth_images

#: name -> (create_model kwargs, input size)
EXPORTABLE = {
    "resnet20-fracbnn": (dict(num_classes=10, width=0.5), (3, 32, 32)),
    "resnet20-bnn": (dict(num_classes=10, width=0.5), (3, 32, 32)),
    "reactnet-fracbnn": (dict(num_classes=10, width=0.0625), (3, 64, 64)),
    "reactnet-bnn": (dict(num_classes=10, width=0.0625), (3, 64, 64)),
}

_CACHE = {}


def data_like_model(name: str, seed: int = 0):
    """The family's reduced model with measured BN statistics and part-open gates (cached; do not modify)."""
    key = (name, seed)
    if key not in _CACHE:
        kwargs, size = EXPORTABLE[name]
        torch.manual_seed(seed)
        model = create_model(name, **kwargs)
        data_like(model, smooth_images(24, size[1:], size[0], seed=seed), seed=seed)
        model.input_size = size
        _CACHE[key] = model
    return _CACHE[key]


def family_images(name: str, n: int, seed: int = 1):
    """uint8 (n, C, H, W) images for the family, with the extremes 0 and 255 among them."""
    size = EXPORTABLE[name][1]
    x = smooth_images(n, size[1:], size[0], seed=seed)
    if n >= 2:
        x[0] = 0
        x[1] = 255
    return x
