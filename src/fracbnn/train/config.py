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
import math
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
        "train_limit": None,  # use only N training images, the same number from every class (short runs)
        "test_limit": None,
        "image_size": None,  # imagefolder: [H, W] (or one number for square) to resize to; null keeps the size
        "mode": None,  # imagefolder: RGB (3 channels) | L or grayscale (1 channel); null: RGB
        "check_files": "auto",  # decode every image file before epoch 1: auto (imagefolder only) | true | false
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
        "threads": "auto",  # torch CPU threads: auto (cores minus the current load, see docs) | N
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
    """Validate every value (type and range) and fill each step with the values it inherits.

    All checks live here, so a bad value is a one-line ConfigError at load time,
    before anything is written, never a TypeError deep inside training.
    """
    cfg = copy.deepcopy(cfg)
    _check_str(cfg["name"], "name")
    _check_int(cfg["seed"], "seed", lo=0)
    _check_bool(cfg["deterministic"], "deterministic")
    _check_device(cfg["device"])
    m = cfg["model"]
    _check_str(m["name"], "model.name")
    if not isinstance(m["kwargs"], dict):
        raise ConfigError("model.kwargs must be a mapping")

    d = cfg["data"]
    _check_str(d["name"], "data.name")
    if d["root"] is not None and not isinstance(d["root"], str):
        raise ConfigError(f"data.root must be null or a path, got {d['root']!r}")
    _check_bool(d["download"], "data.download")
    for key in ("batch_size", "eval_batch_size"):
        _check_int(d[key], f"data.{key}", lo=1)
    _check_int(d["num_workers"], "data.num_workers", lo=0)
    for key in ("train_limit", "test_limit"):
        _check_int(d[key], f"data.{key}", lo=1, null=True)
    if d["check_files"] not in ("auto", True, False):
        raise ConfigError(f"data.check_files must be auto, true or false, got {d['check_files']!r}")
    d["mode"] = _normalize_mode(d["mode"])
    d["image_size"] = _normalize_image_size(d["image_size"])
    if (d["mode"] is not None or d["image_size"] is not None) and str(d["name"]).lower() != "imagefolder":
        raise ConfigError(f"data.mode and data.image_size apply to imagefolder data only, not {d['name']!r}; "
                          "remove them")
    try:
        d["augment"] = normalize_augment(d["augment"])
    except ValueError as e:
        raise ConfigError(f"data.augment: {e}") from None

    o = cfg["optim"]
    if o["schedule"] not in ("linear", "constant"):
        raise ConfigError(f"optim.schedule must be linear or constant, got {o['schedule']!r}")
    for key in ("lr", "weight_decay", "eps"):
        _check_number(o[key], f"optim.{key}", lo=0.0)
    betas = o["betas"]
    if (not isinstance(betas, (list, tuple)) or len(betas) != 2
            or not all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)):
        raise ConfigError(f"optim.betas must be a list of two numbers in [0, 1), e.g. [0.9, 0.999], got {betas!r}")
    o["betas"] = [float(b) for b in betas]

    g = cfg["gate"]
    _check_number(g["target"], "gate.target", null=True)
    _check_number(g["weight"], "gate.weight", lo=0.0)

    dist = cfg["distill"]
    _check_number(dist["alpha"], "distill.alpha", lo=0.0, hi=1.0)
    _check_number(dist["temperature"], "distill.temperature", lo=0.0, lo_open=True)
    t = dist["teacher"]
    if t is not None and (not isinstance(t, dict) or not ({"checkpoint", "torchvision"} & set(t))):
        raise ConfigError("distill.teacher must be null, {checkpoint: PATH} or {torchvision: NAME, weights: ...}")

    rt = cfg["runtime"]
    for key in ("amp", "channels_last", "keep_freed_memory"):
        if rt[key] not in ("auto", None, True, False):
            raise ConfigError(f"runtime.{key} must be auto, true or false, got {rt[key]!r}")
    if rt["threads"] is None:
        rt["threads"] = "auto"
    if rt["threads"] != "auto":
        _check_int(rt["threads"], "runtime.threads", lo=1, hint="or auto")
    _check_int(rt["checkpoint_every"], "runtime.checkpoint_every", lo=0)
    for key in ("keep_epoch_checkpoints", "progress", "tensorboard"):
        _check_bool(rt[key], f"runtime.{key}")

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
        _check_int(s["epochs"], f"steps[{i}].epochs", lo=0)
        for key, inherit, lo in (("lr", o["lr"], 0.0), ("weight_decay", o["weight_decay"], 0.0),
                                 ("gate_target", g["target"], None), ("gate_weight", g["weight"], 0.0)):
            if s[key] is None:
                s[key] = inherit
            _check_number(s[key], f"steps[{i}].{key}", lo=lo, null=True)
            if s[key] is not None:
                s[key] = float(s[key])
        if not isinstance(s["init"], str):
            raise ConfigError(f"steps[{i}].init must be 'previous', 'none' or a checkpoint path")
        resolved.append(s)
    cfg["steps"] = resolved
    return cfg


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_number(v, key: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                  null: bool = False) -> None:
    if v is None and null:
        return
    ok = _is_number(v) and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or v <= hi)
    if not ok:
        rng = [f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else ""]
        rng_text = " and ".join(r for r in rng if r)
        raise ConfigError(f"{key} must be {'null or ' if null else ''}a number{' ' + rng_text if rng_text else ''}, "
                          f"got {v!r}")


def _check_int(v, key: str, lo: int | None = None, null: bool = False, hint: str = "") -> None:
    if v is None and null:
        return
    if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo):
        kind = "a positive integer" if lo == 1 else f"an integer{f' >= {lo}' if lo is not None else ''}"
        raise ConfigError(f"{key} must be {'null or ' if null else ''}{kind}{' ' + hint if hint else ''}, got {v!r}")


def _check_bool(v, key: str) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")


def _check_str(v, key: str) -> None:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{key} must be a non-empty string, got {v!r}")


def _check_device(v) -> None:
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")


#: accepted spellings of data.mode -> Pillow mode
_MODE_ALIASES = {"rgb": "RGB", "color": "RGB", "colour": "RGB", "l": "L", "gray": "L", "grey": "L",
                 "grayscale": "L", "greyscale": "L"}


def _normalize_mode(v):
    if v is None:
        return None
    mode = _MODE_ALIASES.get(str(v).lower()) if isinstance(v, str) else None
    if mode is None:
        raise ConfigError(f"data.mode must be RGB (3 channels) or L / grayscale (1 channel), got {v!r}")
    return mode


def _normalize_image_size(v):
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
        raise ConfigError(f"data.image_size must be null, a positive integer or [H, W], got {v!r}")
    return [int(v[0]), int(v[1])]


def dump_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def write_recipe(cfg: dict, path: str | os.PathLike) -> Path:
    """Write the resolved recipe atomically."""
    from ..checkpoint import atomic_write

    text = dump_yaml(cfg).encode()
    return atomic_write(path, lambda f: f.write(text))
