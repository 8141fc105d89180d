"""ImageNet preprocessing (SPEC section 3) producing uint8 images.

Training: RandomResizedCrop(224, scale 0.08-1) -> horizontal flip (p = 1/2)
-> PCA lighting noise (AlexNet style, std 0.1). Validation: resize the short
side to 256, centre crop 224. Images leave as uint8 (C, H, W) tensors: the
models encode raw pixels themselves (thermometer code for the binary input
layer, mean/std normalisation for float models and the teacher).

PCA lighting works on colours in [0, 1]: it adds eigvec @ (alpha * eigval)
(alpha ~ N(0, 0.1^2) per image) to every pixel. The result is mapped back to
pixels with round(255 * clamp(x, 0, 1)) (ties to even), so the thermometer
encoder sees ordinary integer pixels, exactly as it would see a photograph
with slightly different colours. The public FracBNN code instead adds the
same increment to 0..255 PIL pixels and truncates, which makes the noise
about 255 times weaker than intended (apart from a one-level shift); we apply
it at the scale its eigenvalues were computed for.

torchvision (the ``imagenet`` extra) is needed only here and is imported
lazily, so the CIFAR path never touches it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import FracBNNError

#: Eigen decomposition of the RGB covariance of ImageNet pixels in [0, 1]
#: (the AlexNet PCA lighting constants).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

TRAIN_SIZE = 224
EVAL_RESIZE = 256
CROP_SCALE = (0.08, 1.0)
LIGHTING_STD = 0.1


def _transforms():
    try:
        import torchvision.transforms as T
    except ImportError:
        raise FracBNNError("the ImageNet pipeline needs torchvision: pip install 'fracbnn[imagenet]' "
                           "(a torchvision build matching your torch)") from None
    return T


def pca_lighting(images: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Add PCA lighting noise to uint8 images (..., 3, H, W); returns uint8.

    ``alpha`` holds the 3 coefficients (or (N, 3) for a batch), already
    scaled by the noise std.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"pca_lighting expects uint8 images, got {images.dtype}")
    if images.shape[-3] != 3:
        raise ValueError(f"pca_lighting needs RGB images, got {images.shape[-3]} channels")
    eigval = torch.tensor(PCA_EIGVAL, dtype=torch.float64)
    eigvec = torch.tensor(PCA_EIGVEC, dtype=torch.float64)
    rgb = (alpha.to(torch.float64) * eigval) @ eigvec.T  # (..., 3): eigvec @ (alpha * eigval)
    x = images.to(torch.float64) / 255.0 + rgb[..., :, None, None]
    return torch.round(x.clamp_(0.0, 1.0) * 255.0).to(torch.uint8)


class PCALighting:
    """Random PCA lighting on one uint8 (3, H, W) image (draws from torch's RNG)."""

    def __init__(self, std: float = LIGHTING_STD):
        if std < 0:
            raise ValueError(f"lighting std must be >= 0, got {std}")
        self.std = float(std)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.std == 0.0:
            return image
        return pca_lighting(image, torch.randn(3, dtype=torch.float64) * self.std)

    def __repr__(self) -> str:
        return f"PCALighting(std={self.std})"


class ImageNetTrainTransform:
    """PIL image -> augmented uint8 (3, size, size) tensor."""

    def __init__(self, size: int = TRAIN_SIZE, scale=CROP_SCALE, lighting: float = LIGHTING_STD):
        T = _transforms()
        self.size = int(size)
        self.pipeline = T.Compose([
            T.RandomResizedCrop(self.size, scale=tuple(scale), antialias=True),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
            PCALighting(lighting),
        ])

    def __call__(self, image) -> torch.Tensor:
        return self.pipeline(image)

    def __repr__(self) -> str:
        return f"ImageNetTrainTransform({self.pipeline})"


class ImageNetEvalTransform:
    """PIL image -> uint8 (3, crop, crop): short side resized to ``resize``, centre crop."""

    def __init__(self, crop: int = TRAIN_SIZE, resize: int | None = None):
        T = _transforms()
        self.crop = int(crop)
        # Keep the 256/224 ratio for other crop sizes (e.g. small test images).
        self.resize = int(resize) if resize is not None else int(round(self.crop * EVAL_RESIZE / TRAIN_SIZE))
        self.pipeline = T.Compose([T.Resize(self.resize, antialias=True), T.CenterCrop(self.crop), T.PILToTensor()])

    def __call__(self, image) -> torch.Tensor:
        return self.pipeline(image)

    def __repr__(self) -> str:
        return f"ImageNetEvalTransform({self.pipeline})"


def imagenet_transform(split: str, size: int = TRAIN_SIZE, *, scale=CROP_SCALE, lighting: float = LIGHTING_STD,
                       eval_resize: int | None = None):
    """The SPEC transform for a split: "train" augments, "val"/"test" resize and centre crop."""
    if split == "train":
        return ImageNetTrainTransform(size, scale, lighting)
    if split in ("val", "test"):
        return ImageNetEvalTransform(size, eval_resize)
    raise ValueError(f"unknown split {split!r}; choose train, val or test")


def load_imagenet(root: str | Path, split: str = "train", *, image_size: int = TRAIN_SIZE, scale=CROP_SCALE,
                  lighting: float = LIGHTING_STD, eval_resize: int | None = None):
    """An ImageFolder dataset (root/train/<class>/*, root/val/<class>/*) with the SPEC transforms.

    Images are decoded on demand in loader workers; samples are (uint8 (3, S, S), label).
    Evaluation must use a loader that keeps the last partial batch (every image counts).
    """
    from .imagefolder import ImageFolderDataset

    size = int(image_size)
    transform = imagenet_transform(split, size, scale=scale, lighting=lighting, eval_resize=eval_resize)
    return ImageFolderDataset(root, "train" if split == "train" else "test", image_size=(size, size), mode="RGB",
                              transform=transform)
