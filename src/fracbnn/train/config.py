"""Training recipes: YAML files merged over defaults, with command-line overrides.

A recipe is a plain dict (see ``DEFAULTS`` and docs/training.md). Loading is
strict: an unknown key is an error, so a typo never silently trains with a
default. The fully resolved recipe is written into every run folder and into
every checkpoint, so a run can be repeated or resumed from its folder alone.

Overrides are ``KEY=VALUE`` with dotted keys; list items are addressed by
index or by step name, and ``*`` addresses every step::

    optim.lr=5e-4   data.batch_size=64   steps.2.epochs=3   steps.*.epochs=1
    steps.step3-frac.gate_target=0.2

VALUE is parsed as YAML (``null``, ``1e-3``, ``[0.9, 0.99]``, ``true``).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml

from ..data.augment import normalize_augment
from ..errors import FracBNNError

CONV_MODES = ("float", "binary", "frac")

#: Every recipe key and its default. Dicts marked FREE accept any keys.
DEFAULTS: dict = {
    "name": "run",
    "seed": 0,
    "deterministic": False,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "model": {
        "name": "resnet20-fracbnn",
        "kwargs": {},  # FREE: builder options (num_classes/in_channels default to the dataset's)
    },
    "data": {
        "name": "cifar10",
        "root": None,
        "download": True,
        "augment": "cifar",  # cifar (random crop + flip) | none
        "batch_size": 128,  # global batch, split over DDP processes
        "eval_batch_size": 256,
        "num_workers": 0,
        "train_limit": None,  # use only the first N training images (short runs)
        "test_limit": None,
    },
    "optim": {
        "lr": 1.0e-3,
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "weight_decay": 1.0e-5,
        "schedule": "linear",  # linear decay to 0 over each step | constant
    },
    "gate": {
        "target": None,  # gating target g; null: no threshold regulariser
        "weight": 1.0e-5,
    },
    "distill": {
        "teacher": None,  # {checkpoint: PATH} | {torchvision: NAME, weights: PATH|null}
        "alpha": 0.0,  # weight of cross-entropy; 1 - alpha goes to the KL term
        "temperature": 1.0,
    },
    "runtime": {
        "amp": "auto",  # auto (CUDA only) | true | false
        "channels_last": "auto",  # auto (CUDA only) | true | false
        "threads": None,  # torch CPU threads; null leaves torch's default
        "keep_freed_memory": "auto",  # auto (CPU only) | true | false: see fracbnn.train.allocator
        "checkpoint_every": 200,  # batches between mid-epoch checkpoints; 0: epoch ends only
        "keep_epoch_checkpoints": False,  # also keep epoch_XXX.pt besides last.pt
        "progress": True,
        "tensorboard": True,
    },
    "steps": [],
}

#: Keys a step may set; missing ones inherit from optim / gate.
STEP_KEYS = {
    "name": None,
    "conv_mode": None,  # float | binary | frac | null (models without fractional convs)
    "epochs": 1,
    "lr": None,
    "weight_decay": None,
    "gate_target": None,
    "gate_weight": None,
    "init": "previous",  # previous | none | PATH of a checkpoint
}

FREE_DICTS = {("model", "kwargs"), ("distill", "teacher")}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; recipes mean the number (as YAML 1.2 does)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


class ConfigError(FracBNNError):
    """A recipe file or override is malformed; the message names the key."""


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults <- YAML file <- overrides, validated and with every step filled in."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        cfg = merge(cfg, read_yaml(path), where=str(path))
    for item in overrides:
        apply_override(cfg, item)
    return resolve(cfg)


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} not found; see configs/ for examples")
    try:
        data = yaml_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of recipe keys, got {type(data).__name__}")
    return data


def merge(base: dict, new: dict, where: str = "recipe", _prefix: tuple = ()) -> dict:
    """Recursively merge ``new`` into ``base``; unknown keys are an error."""
    out = copy.deepcopy(base)
    for key, value in new.items():
        path = _prefix + (key,)
        if _prefix + (key,) in FREE_DICTS or _prefix in FREE_DICTS:
            out[key] = copy.deepcopy(value)
            continue
        if key not in out:
            raise ConfigError(f"{where}: unknown key {'.'.join(map(str, path))!r}; "
                              f"known keys here: {', '.join(sorted(map(str, out)))}")
        if isinstance(out[key], dict) and key != "steps":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {'.'.join(map(str, path))} must be a mapping")
            out[key] = merge(out[key], value, where, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(cfg: dict, item: str) -> None:
    """Apply one ``dotted.key=value`` override in place."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like KEY=VALUE, e.g. optim.lr=5e-4")
    key, raw = item.split("=", 1)
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    if not parts or not all(parts):
        raise ConfigError(f"override {item!r} has an empty key part")
    if parts[0] == "steps" and len(parts) >= 2:
        targets = _select_steps(cfg["steps"], parts[1], item)
        if len(parts) == 2:
            raise ConfigError(f"override {item!r}: set one step key, e.g. steps.{parts[1]}.epochs=3")
        for step in targets:
            _set_path(step, parts[2:], value, item, allow_new=parts[2] in STEP_KEYS)
        return
    _set_path(cfg, parts, value, item)


def _select_steps(steps: list, selector: str, item: str) -> list:
    if not isinstance(steps, list) or not steps:
        raise ConfigError(f"override {item!r}: the recipe has no steps")
    if selector == "*":
        return steps
    if selector.lstrip("-").isdigit():
        i = int(selector)
        if not -len(steps) <= i < len(steps):
            raise ConfigError(f"override {item!r}: step index {i} out of range (0..{len(steps) - 1})")
        return [steps[i]]
    named = [s for s in steps if isinstance(s, dict) and s.get("name") == selector]
    if not named:
        names = [s.get("name") for s in steps if isinstance(s, dict)]
        raise ConfigError(f"override {item!r}: no step named {selector!r}; steps are {names}")
    return named


def _set_path(node: dict, parts: list[str], value, item: str, allow_new: bool = False) -> None:
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            if node.get(part) is None and (tuple(parts[:depth + 1]) in FREE_DICTS):
                node[part] = {}
            else:
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth + 1])} is not a mapping")
        free = tuple(parts[:depth + 1]) in FREE_DICTS
        node = node[part]
        allow_new = allow_new or free
    last = parts[-1]
    if last not in node and not allow_new:
        raise ConfigError(f"override {item!r}: unknown key {'.'.join(parts)!r}; "
                          f"known keys here: {', '.join(sorted(map(str, node)))}")
    node[last] = value


def resolve(cfg: dict) -> dict:
    """Validate types and fill each step with the values it inherits."""
    cfg = copy.deepcopy(cfg)
    _check_type(cfg, "name", str)
    _check_type(cfg, "seed", int)
    if cfg["seed"] < 0:
        raise ConfigError("seed must be >= 0")
    _check_type(cfg, "deterministic", bool)
    d = cfg["data"]
    for key in ("batch_size", "eval_batch_size"):
        if not isinstance(d[key], int) or d[key] < 1:
            raise ConfigError(f"data.{key} must be a positive integer, got {d[key]!r}")
    for key in ("train_limit", "test_limit"):
        if d[key] is not None and (not isinstance(d[key], int) or d[key] < 1):
            raise ConfigError(f"data.{key} must be null or a positive integer, got {d[key]!r}")
    try:
        d["augment"] = normalize_augment(d["augment"])
    except ValueError as e:
        raise ConfigError(f"data.augment: {e}") from None
    o = cfg["optim"]
    if o["schedule"] not in ("linear", "constant"):
        raise ConfigError(f"optim.schedule must be linear or constant, got {o['schedule']!r}")
    for key in ("lr", "weight_decay", "eps"):
        if not isinstance(o[key], (int, float)) or o[key] < 0:
            raise ConfigError(f"optim.{key} must be a non-negative number, got {o[key]!r}")
    dist = cfg["distill"]
    if not 0.0 <= float(dist["alpha"]) <= 1.0:
        raise ConfigError(f"distill.alpha must be in [0, 1], got {dist['alpha']!r}")
    if float(dist["temperature"]) <= 0:
        raise ConfigError(f"distill.temperature must be > 0, got {dist['temperature']!r}")
    t = dist["teacher"]
    if t is not None and (not isinstance(t, dict) or not ({"checkpoint", "torchvision"} & set(t))):
        raise ConfigError("distill.teacher must be null, {checkpoint: PATH} or {torchvision: NAME, weights: ...}")
    if not isinstance(cfg["model"]["kwargs"], dict):
        raise ConfigError("model.kwargs must be a mapping")
    every = cfg["runtime"]["checkpoint_every"]
    if not isinstance(every, int) or every < 0:
        raise ConfigError(f"runtime.checkpoint_every must be an integer >= 0, got {every!r}")

    steps = cfg["steps"]
    if not isinstance(steps, list) or not steps:
        raise ConfigError("the recipe needs a non-empty 'steps' list (one entry per training step)")
    resolved, names = [], set()
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ConfigError(f"steps[{i}] must be a mapping")
        unknown = sorted(set(step) - set(STEP_KEYS))
        if unknown:
            raise ConfigError(f"steps[{i}]: unknown key(s) {unknown}; known: {', '.join(STEP_KEYS)}")
        s = {**STEP_KEYS, **step}
        s["name"] = str(s["name"] or f"step{i + 1}")
        if s["name"] in names or "/" in s["name"] or s["name"] in (".", ".."):
            raise ConfigError(f"steps[{i}]: step name {s['name']!r} is duplicated or not a valid folder name")
        names.add(s["name"])
        if s["conv_mode"] is not None and s["conv_mode"] not in CONV_MODES:
            raise ConfigError(f"steps[{i}].conv_mode must be one of {CONV_MODES} or null, got {s['conv_mode']!r}")
        if not isinstance(s["epochs"], int) or s["epochs"] < 0:
            raise ConfigError(f"steps[{i}].epochs must be an integer >= 0, got {s['epochs']!r}")
        for key, inherit in (("lr", o["lr"]), ("weight_decay", o["weight_decay"]),
                             ("gate_target", cfg["gate"]["target"]), ("gate_weight", cfg["gate"]["weight"])):
            if s[key] is None:
                s[key] = inherit
            if s[key] is not None and not isinstance(s[key], (int, float)):
                raise ConfigError(f"steps[{i}].{key} must be a number, got {s[key]!r}")
            if s[key] is not None:
                s[key] = float(s[key])
        if not isinstance(s["init"], str):
            raise ConfigError(f"steps[{i}].init must be 'previous', 'none' or a checkpoint path")
        resolved.append(s)
    cfg["steps"] = resolved
    return cfg


def _check_type(cfg: dict, key: str, typ) -> None:
    if not isinstance(cfg[key], typ) or (typ is int and isinstance(cfg[key], bool)):
        raise ConfigError(f"{key} must be a {typ.__name__}, got {cfg[key]!r}")


def dump_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def write_recipe(cfg: dict, path: str | os.PathLike) -> Path:
    """Write the resolved recipe atomically."""
    from ..checkpoint import atomic_write

    text = dump_yaml(cfg).encode()
    return atomic_write(path, lambda f: f.write(text))
