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


@pytest.mark.parametrize("override, match", [
    ("optim.betas=0.9", r"optim\.betas must be a list of two numbers in \[0, 1\)"),
    ("optim.betas=[0.9, 1.5]", r"optim\.betas"),
    ("optim.lr=fast", r"optim\.lr must be a number >= 0"),
    ("optim.eps=-1", r"optim\.eps"),
    ("data.num_workers=-1", r"data\.num_workers must be an integer >= 0, got -1"),
    ("data.num_workers=2.5", r"data\.num_workers"),
    ("data.batch_size=true", r"data\.batch_size must be a positive integer"),
    ("data.train_limit=0", r"data\.train_limit must be null or a positive integer"),
    ("data.download=maybe", r"data\.download must be true or false"),
    ("data.root=[1]", r"data\.root must be null or a path"),
    ("runtime.threads=0", r"runtime\.threads must be a positive integer or auto, got 0"),
    ("runtime.threads=two", r"runtime\.threads"),
    ("runtime.amp=yes please", r"runtime\.amp must be auto, true or false"),
    ("runtime.progress=2", r"runtime\.progress must be true or false"),
    ("runtime.checkpoint_every=-5", r"runtime\.checkpoint_every"),
    ("gate.weight=-1", r"gate\.weight must be a number >= 0"),
    ("gate.target=high", r"gate\.target must be null or a number"),
    ("distill.temperature=warm", r"distill\.temperature must be a number > 0"),
    ("distill.alpha=.nan", r"distill\.alpha"),
    ("seed=-1", r"seed must be an integer >= 0"),
    ("seed=1.5", r"seed must be an integer"),
    ("deterministic=1", r"deterministic must be true or false"),
    ("device=gpu", r"device must be auto, cpu, cuda or cuda:N"),
    ("name=", r"name must be a non-empty string"),
    ("steps.0.lr=-1", r"steps\[0\]\.lr must be null or a number >= 0"),
    ("steps.0.epochs=1.5", r"steps\[0\]\.epochs must be an integer >= 0"),
])
def test_every_bad_recipe_value_is_a_one_line_config_error(override, match):
    """The whole class: a value of the wrong type or range stops at load time, never deep inside training."""
    with pytest.raises(ConfigError, match=match) as e:
        load_recipe(CONFIGS / "digits-quickstart.yaml", [override])
    assert "\n" not in str(e.value)


def test_threads_auto_leaves_busy_cores_free():
    from fracbnn.train.threads import auto_threads, choose_threads

    assert auto_threads(default=2, cores=2, load=0.1) == 2
    assert auto_threads(default=2, cores=2, load=1.2) == 1  # one core busy elsewhere: one thread
    assert auto_threads(default=2, cores=2, load=5.0) == 1  # never below 1
    assert auto_threads(default=4, cores=16, load=2.0) == 4  # never above torch's default
    assert auto_threads(default=2, cores=2, load=None) == 2  # no load average (Windows): torch's default
    assert choose_threads(3) == (3, "set by runtime.threads")
    n, why = choose_threads("auto")
    assert n >= 1 and why.startswith("auto: ")
    assert load_recipe(CONFIGS / "digits-quickstart.yaml")["runtime"]["threads"] == "auto"
