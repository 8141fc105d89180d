"""Checkpoint files: atomic saving, safe loading, rebuilding the model.

A checkpoint is a ``torch.save`` dict holding only tensors and plain Python
values, loaded with ``weights_only=True`` so a malicious file cannot run
code. Keys:

    format      "fracbnn.checkpoint"
    version     1
    model       {"name": registry name, "kwargs": builder options}
    state_dict  model weights (strictly matched on load)
    input_size  [C, H, W] of the images the model takes, when the model has
                an ``input_size`` attribute (the trainer sets it)
    classes     class names, when the model has a ``classes`` attribute
    ...         anything else the writer adds (optimizer, scheduler, rng,
                epoch, step, config, metrics)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .fileio import atomic_write  # noqa: F401  (re-exported: callers import it from here)
from .models import create_model
from .nn import FracConv2d

FORMAT = "fracbnn.checkpoint"
VERSION = 1


def model_spec(model: nn.Module) -> dict:
    """How to rebuild ``model``: its registry spec with the current conv mode."""
    model = getattr(model, "module", model)  # unwrap DataParallel / DDP
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("model was not built by fracbnn.models.create_model; it has no spec to save")
    kwargs = dict(spec["kwargs"])
    modes = {m.mode for m in model.modules() if isinstance(m, FracConv2d)}
    if len(modes) == 1 and "frac_mode" in kwargs:
        kwargs["frac_mode"] = modes.pop()
    return {"name": spec["name"], "kwargs": kwargs}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra) -> Path:
    """Write a checkpoint atomically: a crash never leaves a broken file at ``path``."""
    model_ = getattr(model, "module", model)
    payload = {"format": FORMAT, "version": VERSION, "model": model_spec(model_),
               "state_dict": model_.state_dict()}
    payload.update(_data_facts(model_))
    payload.update(extra)
    return atomic_torch_save(payload, path)


def _data_facts(model: nn.Module) -> dict:
    """``input_size`` and ``classes`` of the model, as plain lists, where it has them."""
    out = {}
    size = getattr(model, "input_size", None)
    if size is not None:
        out["input_size"] = [int(v) for v in size]
    classes = getattr(model, "classes", None)
    if classes is not None:
        out["classes"] = [str(c) for c in classes]
    return out


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def safe_torch_load(path: str | os.PathLike, what: str, missing_hint: str, unsafe_hint: str, corrupt_hint: str,
                    error: type[CheckpointError] = CheckpointError, map_location="cpu"):
    """torch.load(weights_only=True) with one-line errors: missing, unsafe (pickled code) or damaged file.

    Every reader of .pt/.pth files (checkpoints, teacher weights, reference
    state dicts) goes through here, so none of them can run pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} not found; {missing_hint}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise error(f"{path} holds objects other than tensors and plain values, refused as unsafe to load "
                    f"({first[:120]}); {unsafe_hint}") from None
    except Exception as e:  # torch raises several types for damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise error(f"{path} is truncated or corrupt ({first[:100]}); {corrupt_hint}") from None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and validate a checkpoint without executing any pickled code."""
    ckpt = safe_torch_load(path, "checkpoint", "check the path (training writes RUN_DIR/last.pt)",
                           "only load checkpoints written by fracbnn",
                           "use another checkpoint, e.g. the run's last.pt or an epoch file", map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fracbnn checkpoint (no '{FORMAT}' marker); "
                              "to convert the reference implementation's files use `fracbnn import-reference`")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}, this fracbnn reads "
                              f"version {VERSION}; upgrade fracbnn")
    for key in ("model", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks '{key}'; the file is incomplete, use another checkpoint")
    return ckpt


def load_state_dict_strict(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """load_state_dict(strict=True) with a one-line error naming the bad keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if keys:
                parts.append(f"{label} keys: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
        raise CheckpointError(f"{source} does not match the model ({'; '.join(parts)})")
    model.load_state_dict(state_dict, strict=True)


def model_from_checkpoint(ckpt: dict | str | os.PathLike, map_location="cpu", source: str | None = None
                          ) -> nn.Module:
    """Rebuild the model recorded in a checkpoint, load its weights strictly, restore input_size / classes.

    ``source`` names the checkpoint in error messages (default: its path, or "checkpoint" for a dict).
    """
    source = source or (str(ckpt) if not isinstance(ckpt, dict) else "checkpoint")
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt, map_location)
    spec = ckpt["model"]
    try:
        model = create_model(spec["name"], **spec.get("kwargs", {}))
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    load_state_dict_strict(model, ckpt["state_dict"], source)
    # what the images look like and what the outputs mean, where the writer recorded it
    if ckpt.get("input_size") is not None:
        model.input_size = tuple(int(v) for v in ckpt["input_size"])
    if ckpt.get("classes") is not None:
        model.classes = [str(c) for c in ckpt["classes"]]
    return model
