"""Recipes: the shipped YAML files, overrides, strictness and the saved resolved recipe."""

from pathlib import Path

import pytest
import yaml

from fracbnn.train import ConfigError, load_recipe, write_recipe
from fracbnn.train.config import DEFAULTS, merge

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_resolve(path):
    cfg = load_recipe(path)
    assert cfg["steps"] and all(s["epochs"] >= 1 for s in cfg["steps"])


def test_cifar10_fracbnn_recipe_is_the_papers_three_steps():
    cfg = load_recipe(CONFIGS / "cifar10-fracbnn.yaml")
    assert cfg["model"]["name"] == "resnet20-fracbnn"
    assert [s["conv_mode"] for s in cfg["steps"]] == ["float", "binary", "frac"]
    assert [s["weight_decay"] for s in cfg["steps"]] == [1e-5, 0.0, 0.0]
    assert all(s["lr"] == 1e-3 and s["epochs"] == 250 and s["init"] == "previous" for s in cfg["steps"])
    assert cfg["data"]["batch_size"] == 128 and cfg["data"]["augment"] == "cifar"
    assert cfg["optim"]["schedule"] == "linear"
    step3 = cfg["steps"][2]
    assert step3["gate_target"] == 0.0 and step3["gate_weight"] == 1e-5


def test_quickstart_yaml_equals_the_builtin_recipe():
    from fracbnn.commands.quickstart import QUICKSTART_RECIPE

    assert yaml.safe_load((CONFIGS / "digits-quickstart.yaml").read_text()) == QUICKSTART_RECIPE


def test_overrides_by_index_name_and_wildcard():
    cfg = load_recipe(CONFIGS / "cifar10-fracbnn.yaml",
                      ["steps.*.epochs=2", "steps.step3-frac.gate_target=0.2", "steps.0.lr=5e-4",
                       "optim.betas=[0.8, 0.99]", "data.train_limit=1000", "model.kwargs.width=0.5"])
    assert [s["epochs"] for s in cfg["steps"]] == [2, 2, 2]
    assert cfg["steps"][2]["gate_target"] == 0.2
    assert [s["lr"] for s in cfg["steps"]] == [5e-4, 1e-3, 1e-3]
    assert cfg["optim"]["betas"] == [0.8, 0.99]
    assert cfg["data"]["train_limit"] == 1000
    assert cfg["model"]["kwargs"] == {"width": 0.5}


@pytest.mark.parametrize("override,match", [
    ("optim.lrr=1", "unknown key 'optim.lrr'"),
    ("steps.9.epochs=1", "out of range"),
    ("steps.nope.epochs=1", "no step named"),
    ("steps.0.epochz=1", "unknown key"),
    ("data.batch_size=0", "positive integer"),
    ("steps.0.conv_mode=ternary", "conv_mode"),
    ("optim.schedule=cosine", "linear or constant"),
    ("no_equals_sign", "KEY=VALUE"),
    ("distill.alpha=2", "alpha"),
    ("data.augment=mixup", "data.augment: unknown augmentation"),
])
def test_bad_overrides_name_the_problem(override, match):
    with pytest.raises(ConfigError, match=match):
        load_recipe(CONFIGS / "cifar10-fracbnn.yaml", [override])


def test_unknown_key_in_file_is_an_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: {name: resnet20-fracbnn}\noptim: {learning_rate: 0.1}\nsteps: [{epochs: 1}]\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_recipe(p)
    p.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(p)
    p.write_text("steps: []\n")
    with pytest.raises(ConfigError, match="steps"):
        load_recipe(p)
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_resolved_recipe_round_trips(tmp_path):
    cfg = load_recipe(CONFIGS / "cifar10-fracbnn.yaml", ["steps.*.epochs=1"])
    write_recipe(cfg, tmp_path / "config.yaml")
    assert load_recipe(tmp_path / "config.yaml") == cfg


def test_merge_does_not_touch_defaults():
    merged = merge(DEFAULTS, {"optim": {"lr": 0.5}})
    assert merged["optim"]["lr"] == 0.5 and DEFAULTS["optim"]["lr"] == 1e-3
