"""Which data a packed model was trained on, and how an image becomes its input pixels.

Export records two keys in the .fbnn metadata so that ``eval``, ``infer`` and
``hw generate`` treat images exactly as training did:

    dataset     "cifar10", "imagefolder", "imagenet", ... (None: not known)
    preprocess  {"mode": "RGB"|"L", "resize": None | [H, W] | S, "crop": None | C}

``resize`` None: images are used at their own size, which must be the
model's (CIFAR, digits, an image folder of same-size images). [H, W]: every
image is resized bilinearly to H x W (an image folder with ``image_size``).
An integer S with ``crop`` C: the short side is resized to S and the centre
C x C is cropped (ImageNet validation: resize 256, crop 224).

Files written before these keys existed are read as CIFAR-10 with no
resizing, which is what every model of that time was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import FracBNNError

MODES = {1: "L", 3: "RGB"}
LEGACY_DATASET = "cifar10"
IMAGENET_RESIZE, IMAGENET_CROP = 256, 224


def _data_config(ckpt: dict) -> dict:
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    data = cfg.get("data") if isinstance(cfg, dict) else None
    return data if isinstance(data, dict) else {}


def attach_data_facts(model, ckpt: dict):
    """Copy the checkpoint's dataset name and image options onto ``model`` (for :func:`data_meta`).

    Read from the checkpoint's ``dataset`` record (trainer and importer write
    it), else from its recipe's ``data`` section.
    """
    data = dict(_data_config(ckpt))
    recorded = ckpt.get("dataset") if isinstance(ckpt, dict) else None
    if isinstance(recorded, dict):
        data.update({k: v for k, v in recorded.items() if v is not None})
    if data.get("name"):
        model.dataset = str(data["name"]).lower()
    model.data_options = {k: data[k] for k in ("image_size", "mode", "eval_resize") if data.get(k) is not None}
    return model


def data_meta(model, input_size) -> dict:
    """``{"dataset", "preprocess"}`` for the metadata of a model exported with input size (C, H, W)."""
    c, h, w = (int(v) for v in input_size)
    # the recipe's dataset; else the family's own (ReActNet is the ImageNet architecture)
    name = getattr(model, "dataset", None) or getattr(type(model), "default_dataset", None)
    opts = dict(getattr(model, "data_options", None) or {})
    mode = opts.get("mode") or MODES.get(c, "RGB")
    resize, crop = None, None
    if name == "imagenet":
        crop = h
        resize = int(opts.get("eval_resize") or round(h * IMAGENET_RESIZE / IMAGENET_CROP))
    elif opts.get("image_size") is not None:
        size = opts["image_size"]
        size = [int(size), int(size)] if isinstance(size, (int, float)) else [int(v) for v in size]
        resize = size
    return {"dataset": name, "preprocess": {"mode": mode, "resize": resize, "crop": crop}}


def recorded_dataset(meta: dict) -> tuple[str, str | None]:
    """(dataset name to use by default, a note to print when it was guessed)."""
    if "dataset" not in meta:
        return LEGACY_DATASET, ("this .fbnn was exported before models recorded their dataset; evaluating on "
                                f"{LEGACY_DATASET} (pass --dataset NAME for another)")
    if not meta["dataset"]:
        return LEGACY_DATASET, (f"this .fbnn records no dataset; evaluating on {LEGACY_DATASET} "
                                "(pass --dataset NAME for another)")
    return str(meta["dataset"]), None


def recorded_preprocess(meta: dict) -> dict:
    """The preprocessing of a packed model's metadata (legacy files: images used as they are)."""
    c = int(meta["input_size"][0])
    pre = meta.get("preprocess") or {}
    return {"mode": pre.get("mode") or MODES.get(c, "RGB"), "resize": pre.get("resize"), "crop": pre.get("crop")}


def dataset_options(name: str, meta: dict) -> dict:
    """Keyword options of ``fracbnn.data.load_dataset(name, ...)`` that reproduce the recorded preprocessing."""
    pre = recorded_preprocess(meta)
    c, h, w = (int(v) for v in meta["input_size"])
    if name == "imagefolder":
        opts = {"mode": pre["mode"]}
        if isinstance(pre["resize"], list):
            opts["image_size"] = tuple(pre["resize"])
        elif pre["resize"] is not None:
            raise FracBNNError("this model was trained with resize + centre crop (ImageNet style); evaluate it "
                               "with --dataset imagenet")
        return opts
    if name == "imagenet":
        return {"image_size": h, "eval_resize": pre["resize"] if isinstance(pre["resize"], int) else None}
    return {}


def describe(pre: dict) -> str:
    """One phrase for messages, e.g. "grey (L), resized to 28x28"."""
    if pre["resize"] is None:
        how = "used at their own size"
    elif isinstance(pre["resize"], list):
        how = f"resized to {pre['resize'][0]}x{pre['resize'][1]}"
    else:
        how = f"short side resized to {pre['resize']}, centre crop {pre['crop']}"
    return f"{pre['mode']}, {how}"


def image_transform(meta: dict) -> Callable:
    """PIL image -> uint8 (C, H, W) array, applying the recorded preprocessing (used by ``infer``).

    Raises :class:`FracBNNError` for an image whose size the preprocessing cannot make the model's.
    """
    pre = recorded_preprocess(meta)
    c, h, w = (int(v) for v in meta["input_size"])
    crop_resize = None
    if pre["resize"] is not None and not isinstance(pre["resize"], list):
        from ..data.imagenet import ImageNetEvalTransform  # needs torchvision: fails here, before any file

        crop_resize = ImageNetEvalTransform(crop=pre["crop"] or h, resize=int(pre["resize"]))

    def convert(im) -> np.ndarray:
        from PIL import Image

        im = im.convert(pre["mode"])
        if isinstance(pre["resize"], list):
            if (im.height, im.width) != tuple(pre["resize"]):
                im = im.resize((pre["resize"][1], pre["resize"][0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
        elif crop_resize is not None:
            arr = crop_resize(im).numpy().transpose(1, 2, 0)
        else:
            arr = np.asarray(im, dtype=np.uint8)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        if arr.shape[:2] != (h, w):
            raise FracBNNError(f"is {arr.shape[1]}x{arr.shape[0]} pixels; the model takes {w}x{h} images "
                               "(resize or crop it first)")
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    return convert


def check_dataset_fits(ds, packed, name: str) -> None:
    """One-line errors when a data set's images or labels do not fit the packed model."""
    shape = (int(ds.in_channels), *map(int, ds.image_size))
    if shape != tuple(packed.input_size):
        raise FracBNNError(f"the {name} images are {shape} (C, H, W), the model takes {tuple(packed.input_size)}; "
                           "pass the --dataset/--data the model was trained on")
    if int(ds.num_classes) > packed.num_classes:
        raise FracBNNError(f"the {name} data has {ds.num_classes} classes, the model only {packed.num_classes}; "
                           "pass the --dataset/--data the model was trained on")


def sample_images(packed, n: int, *, data: str | Path | None = None, dataset: str | None = None,
                  split: str = "test", seed: int = 0, random: bool = False, missing_hint: str = ""
                  ) -> tuple[np.ndarray, str]:
    """(uint8 (n', C, H, W) images, where they came from) for a testbench or a density measurement.

    The images come from the data set the model records (or ``dataset``),
    preprocessed as in training, in the model's input shape: the first ``n``
    of an in-memory split (CIFAR), ``n`` spread evenly over a file-backed one
    (an image folder sorted by class). Random images only when ``random``:
    a missing or wrong ``data`` is an error, never a silent fallback; the
    caller's ``missing_hint`` ends that error's message.
    """
    from ..data import load_dataset

    shape = tuple(int(v) for v in packed.input_size)
    if random:
        rng = np.random.default_rng(seed + (0 if split == "test" else 1))
        return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), f"random uint8 images (seed {seed})"
    name = str(dataset).lower() if dataset else recorded_dataset(packed.meta)[0]
    try:
        ds = load_dataset(name, data, split, download=False, **dataset_options(name, packed.meta))
    except FracBNNError as e:
        raise FracBNNError(f"cannot read the {name} {split} images the model needs here: {e}{missing_hint}") from None
    check_dataset_fits(ds, packed, name)
    n = min(n, len(ds))
    where = f" from {data}" if data is not None else ""
    if getattr(ds, "in_memory", False):
        return ds.images[:n].numpy().astype(np.uint8), f"{name} {split} images 0..{n - 1}{where}"
    from tqdm import tqdm

    picks = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(int))
    images = np.stack([ds[int(i)][0].numpy() for i in tqdm(picks, desc=f"{name} {split} images", unit="image",
                                                            leave=False, disable=len(picks) < 200)])
    return images.astype(np.uint8), f"{name} {split} images spread evenly over all {len(ds)}{where}"


