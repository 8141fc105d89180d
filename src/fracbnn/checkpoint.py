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
    dataset     {"name": ..., "image_size": [H, W], "mode": "L"|"RGB"} (the latter two
                only where the recipe set them): the data the model was trained
                on (training and import-reference write it)
    checksum    {"algorithm": "sha256-v1", "digest": hex}: SHA-256 over every
                other value (tensor bytes included) in a fixed order, written
                at save time and verified on load, so flipped bytes inside a
                tensor are an error, not silently different weights.
                Checkpoints written before it existed have no checksum and
                still load (unverified).
    ...         anything else the writer adds (optimizer, scheduler, rng,
                epoch, step, config, metrics, dataset)
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .fileio import atomic_write, stray_temp_files  # noqa: F401  (callers import them from here)
from .models import create_model
from .nn import FracConv2d

FORMAT = "fracbnn.checkpoint"
VERSION = 1
CHECKSUM_ALGORITHM = "sha256-v1"
_ZIP_MAGIC = b"PK\x03\x04"
_FBNN_MAGIC = b"FBNN"


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
    payload.pop("checksum", None)
    payload["checksum"] = {"algorithm": CHECKSUM_ALGORITHM, "digest": payload_digest(payload)}
    return atomic_torch_save(payload, path)


def payload_digest(payload: dict) -> str:
    """SHA-256 over every value of a checkpoint except its ``checksum``, in a fixed order.

    Dict keys are visited sorted, lists in order; a tensor contributes its
    dtype, shape and raw bytes, a plain value its type and repr. The same
    content therefore always gives the same digest, whatever the pickling.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "checksum"})
    return h.hexdigest()


def _feed(h, value) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        h.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=repr):
            h.update(f"K{key!r}:".encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}:".encode())
        for item in value:
            _feed(h, item)
    else:
        h.update(f"V{type(value).__name__}:{value!r};".encode())


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
    kind = sniff_file(path)
    if kind != "torch":
        hint = ("give the .pt checkpoint it was exported from (eval, infer, bench and hw take .fbnn files)"
                if kind.endswith("(.fbnn)") else corrupt_hint)
        raise error(f"{path} is {kind}, not a {what} file; {hint}")
    try:
        with warnings.catch_warnings():  # torch's own advice (weights_only=False) is not ours to give
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        name = _unsupported_global(str(e))
        raise error(f"{path} holds objects other than tensors and plain values{name}, refused as unsafe to "
                    f"load; {unsafe_hint}") from None
    except Exception:  # torch raises several types (RuntimeError, UnicodeDecodeError, EOFError...) for damage
        raise error(f"{path} is truncated or corrupt (PyTorch cannot read it); {corrupt_hint}") from None


def sniff_file(path: Path) -> str:
    """"torch" for a file that starts like a torch.save file, else a short description of what it is."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:  # legacy (non-zip) torch.save format
        return "torch"
    if head.startswith(_FBNN_MAGIC):
        return "an exported packed model (.fbnn)"
    if not head:
        return "empty"
    return "damaged or of another format (it does not start like a PyTorch file)"


def _unsupported_global(message: str) -> str:
    """' (e.g. GLOBAL x.y)' from torch's refusal text, where it names the offending object."""
    import re

    m = re.search(r"GLOBAL ([\w.]+)", message)
    return f" (e.g. {m.group(1)})" if m else ""


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
    verify_checksum(ckpt, path)
    return ckpt


def verify_checksum(ckpt: dict, path) -> bool:
    """Check the recorded checksum; False for an old checkpoint without one, an error on a mismatch."""
    recorded = ckpt.get("checksum")
    if recorded is None:
        return False
    if not isinstance(recorded, dict) or recorded.get("algorithm") != CHECKSUM_ALGORITHM:
        raise CheckpointError(f"{path} has a checksum of an unknown kind ({recorded!r:.60}); upgrade fracbnn")
    if payload_digest(ckpt) != recorded.get("digest"):
        raise CheckpointError(f"{path} is damaged: its contents do not match the checksum written when it was "
                              "saved; use another checkpoint (the step's final.pt, an epoch_XXX.pt, or see "
                              "docs/training.md#recovering-a-damaged-checkpoint)")
    return True


def check_state_dict(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """A one-line error naming the missing, unexpected or wrongly shaped keys, if ``state_dict`` does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state_dict)
                       if not isinstance(state_dict[k], torch.Tensor) or own[k].shape != state_dict[k].shape)
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if keys:
                parts.append(f"{label} keys: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
        raise CheckpointError(f"{source} does not match the model ({'; '.join(parts)})")


def load_state_dict_strict(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """load_state_dict(strict=True) with a one-line error naming the bad keys."""
    check_state_dict(model, state_dict, source)
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
