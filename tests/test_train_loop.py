"""The training loop on tiny digits runs: step chaining, schedule, regulariser, distillation, errors, CLI."""

import json
from pathlib import Path

import pytest
import torch

from fracbnn.checkpoint import load_checkpoint, model_from_checkpoint
from fracbnn.cli import main
from fracbnn.nn import FracConv2d
from fracbnn.train import NonFiniteLossError, load_recipe, train
from fracbnn.train.config import DEFAULTS, merge, resolve
from fracbnn.train.distill import FrozenModel, TrainingLoss, distillation_loss

pytest.importorskip("sklearn")


def recipe(steps, **top):
    base = {
        "name": "tiny", "seed": 0, "device": "cpu",
        "model": {"name": "resnet20-fracbnn", "kwargs": {"width": 0.25}},
        "data": {"name": "digits", "augment": "none", "batch_size": 32, "eval_batch_size": 64,
                 "train_limit": 96, "test_limit": 70},
        "runtime": {"threads": 1, "checkpoint_every": 0, "tensorboard": False, "progress": False},
        "steps": steps,
    }
    for k, v in top.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and k in base else v
    return resolve(merge(DEFAULTS, base))


pytestmark = pytest.mark.usefixtures("restore_threads")  # every test here lets the trainer set the threads


def thresholds(sd):
    return {k: v for k, v in sd.items() if k.endswith("threshold")}


def test_three_steps_chain_schedule_and_regulariser(tmp_path):
    cfg = recipe([
        {"name": "s1", "conv_mode": "float", "epochs": 2, "weight_decay": 1e-5},
        {"name": "s2", "conv_mode": "binary", "epochs": 0},
        {"name": "s3", "conv_mode": "frac", "epochs": 1, "gate_target": 0.5, "gate_weight": 10.0, "lr": 0.05},
    ], runtime={"keep_epoch_checkpoints": True})
    res = train(cfg, tmp_path)
    assert load_checkpoint(tmp_path / "s1" / "epoch_001.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "s1" / "epoch_002.pt")["epoch"] == 2
    s1 = load_checkpoint(tmp_path / "s1" / "final.pt")
    s2 = load_checkpoint(tmp_path / "s2" / "final.pt")
    s3 = load_checkpoint(tmp_path / "s3" / "final.pt")
    # a zero-epoch step starts from (and so equals) the previous step's final weights
    for k, v in s1["state_dict"].items():
        assert torch.equal(v, s2["state_dict"][k]), k
    # thresholds do not train outside "frac" mode; in frac mode the regulariser pulls them towards g = 0.5
    init = -1.0
    assert all(torch.all(t == init) for t in thresholds(s2["state_dict"]).values())
    moved = [t.mean().item() for t in thresholds(s3["state_dict"]).values()]
    assert all(m > init + 0.05 for m in moved)
    # linear decay to 0 over each step; each step restarts at the base lr
    last1 = load_checkpoint(tmp_path / "s1" / "last.pt")
    assert last1["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"]) for r in records] == [("s1", 1), ("s1", 2), ("s3", 1)]
    assert records[0]["lr"] == pytest.approx(1e-3) and records[1]["lr"] == pytest.approx(5e-4)
    assert records[2]["lr"] == pytest.approx(0.05)
    # metrics: per-layer sparsity (18 gated layers), effective bits in [1, 2], all test images counted
    r3 = records[2]
    assert len(r3["sparsity"]) == 18 and all(0 <= s <= 1 for s in r3["sparsity"].values())
    assert 1.0 <= r3["effective_activation_bits"] <= 2.0
    assert r3["effective_activation_bits"] == pytest.approx(
        1 + 1 - r3["mean_sparsity"], abs=0.2)  # not exact: layers differ in size
    assert r3["val_count"] == 70 and r3["images_per_sec"] > 0
    assert records[0]["effective_activation_bits"] == 32.0  # float step: no binary layers after the input
    # the saved model carries its conv mode; results match the returned ones
    assert s3["model"]["kwargs"]["frac_mode"] == "frac"
    assert res["s3"]["top1"] == s3["results"]["top1"]
    assert (tmp_path / "final.pt").is_file() and json.loads((tmp_path / "results.json").read_text()).keys() == {
        "s1", "s2", "s3"}
    assert load_recipe(tmp_path / "config.yaml") == cfg


def test_single_step_from_a_given_checkpoint(tmp_path):
    first = recipe([{"name": "a", "conv_mode": "binary", "epochs": 1}])
    train(first, tmp_path / "one")
    cfg = recipe([{"name": "a", "conv_mode": "binary", "epochs": 1}, {"name": "b", "conv_mode": "frac", "epochs": 0}])
    from fracbnn.errors import FracBNNError

    with pytest.raises(FracBNNError, match="--init"):
        train(cfg, tmp_path / "missing", only_steps=[1])
    train(cfg, tmp_path / "two", only_steps=[1], init=str(tmp_path / "one" / "a" / "final.pt"))
    a = load_checkpoint(tmp_path / "one" / "a" / "final.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "two" / "b" / "final.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "two" / "a").exists()


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    cfg = recipe([{"name": "a", "conv_mode": "frac", "epochs": 3, "lr": 1e30}],
                 runtime={"checkpoint_every": 1})
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        train(cfg, tmp_path)
    assert not (tmp_path / "a" / "final.pt").exists()
    if (tmp_path / "a" / "last.pt").exists():  # whatever was kept still loads
        load_checkpoint(tmp_path / "a" / "last.pt")


def test_distillation_loss_and_frozen_teacher():
    s = torch.randn(6, 10)
    assert distillation_loss(s, s.clone()).abs() < 1e-6
    t = torch.randn(6, 10)
    p = torch.softmax(t, 1)
    expected = (p * (torch.log_softmax(t, 1) - torch.log_softmax(s, 1))).sum(1).mean()
    torch.testing.assert_close(distillation_loss(s, t), expected)
    torch.testing.assert_close(distillation_loss(s, t, 2.0), 4 * distillation_loss(s / 2, t / 2))

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.BatchNorm1d(10))
    teacher = FrozenModel(net)
    teacher.train()
    assert not teacher.training and not net.training
    before = net[2].running_mean.clone()
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8).float()
    student_logits = torch.randn(8, 10, requires_grad=True)
    loss = TrainingLoss(teacher, alpha=0.0)(student_logits, torch.zeros(8, dtype=torch.long), images)
    loss.backward()
    assert torch.equal(net[2].running_mean, before)  # BN statistics untouched
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert student_logits.grad.abs().sum() > 0


def test_training_with_a_checkpoint_teacher(tmp_path):
    train(recipe([{"name": "t", "conv_mode": "float", "epochs": 1}]), tmp_path / "teacher")
    cfg = recipe([{"name": "s", "conv_mode": "frac", "epochs": 1}],
                 distill={"teacher": {"checkpoint": str(tmp_path / "teacher" / "final.pt")}, "alpha": 0.5,
                          "temperature": 2.0})
    res = train(cfg, tmp_path / "student")
    assert 0.0 <= res["s"]["top1"] <= 1.0


def test_eval_counts_every_image_for_any_batch_size(tmp_path, capsys):
    train(recipe([{"name": "a", "conv_mode": "frac", "epochs": 1}]), tmp_path)
    outs = []
    for bs in (7, 360, 1000):
        assert main(["eval", str(tmp_path / "final.pt"), "--batch-size", str(bs), "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert {o["images"] for o in outs} == {360}  # the whole digits test split, not the training limit
    assert len({o["top1"] for o in outs}) == 1 and len({round(o["loss"], 5) for o in outs}) == 1
    assert len(outs[0]["sparsity"]) == 18
    # a .fbnn path is routed to the packed-model evaluator, not loaded as a checkpoint
    assert main(["eval", str(tmp_path / "missing.fbnn"), "--json"]) == 2
    assert "missing.fbnn" in capsys.readouterr().err


def test_eval_rejects_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_quickstart_prints_one_json_object(tmp_path, capsys, monkeypatch):
    from fracbnn.commands import quickstart

    small = json.loads(json.dumps(quickstart.QUICKSTART_RECIPE))
    small["model"]["kwargs"]["width"] = 0.25
    for s in small["steps"]:
        s["epochs"] = 1
    monkeypatch.setattr(quickstart, "QUICKSTART_RECIPE", small)
    assert main(["quickstart", "--json", "--threads", "1", "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    obj = json.loads(out)  # exactly one JSON object on stdout, nothing else
    assert 0.0 <= obj["test_top1"] <= 1.0 and obj["test_images"] == 360
    assert obj["test_top1"] == pytest.approx(obj["recipe_test_top1"])
    assert obj["summary"]["totals"]["binary_weight_bits"] > 0 and obj["summary"]["input_size"] == [1, 8, 8]
    assert set(obj["steps"]) == {"step1-float", "step2-binary", "step3-frac"}


def test_plot_writes_pngs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    train(recipe([{"name": "a", "conv_mode": "binary", "epochs": 1},
                  {"name": "b", "conv_mode": "frac", "epochs": 2}]), tmp_path)
    assert main(["plot", str(tmp_path), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["plots"]
    names = {Path(f).name for f in files}
    assert names == {"accuracy.png", "loss.png", "lr.png", "sparsity.png"}
    for f in files:
        assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path / "nothing")]) == 2


def test_model_from_final_checkpoint_is_in_frac_mode(tmp_path):
    train(recipe([{"name": "a", "conv_mode": "frac", "epochs": 0}]), tmp_path)
    model = model_from_checkpoint(tmp_path / "final.pt")
    assert {m.mode for m in model.modules() if isinstance(m, FracConv2d)} == {"frac"}
