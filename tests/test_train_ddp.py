"""Two DDP processes (gloo, CPU) train to the same weights as one process with the same global batch.

Every tensor is compared within float tolerance, except the few whose true
gradient is exactly zero (see _absorbed_by_batchnorm): for those Adam's
normalisation turns different rounding noise into different steps, so the
test bounds them and checks instead that the two networks compute the same
function.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fracbnn.checkpoint import load_checkpoint, model_from_checkpoint
from fracbnn.models import create_model
from fracbnn.train import load_recipe, train

pytest.importorskip("sklearn")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

#: Tolerance for the comparison: sums are split differently over processes, so
#: results agree up to float32 rounding. Adam divides each update by the root
#: of its squared-gradient average, which magnifies rounding noise for weights
#: whose gradient is nearly zero; 1e-4 is a tenth of one update (lr 1e-3).
ATOL, RTOL = 1e-4, 1e-4


def _absorbed_by_batchnorm(key: str) -> bool:
    """RPReLU output shifts feed straight into a BatchNorm that subtracts the batch mean, so their
    gradient is exactly 0 in theory and pure rounding noise in practice; the BN running mean follows them."""
    return ".shift_out" in key or (".bn_res" in key and key.endswith("running_mean"))


def _fresh(ckpt):
    torch.manual_seed(1)
    return create_model(ckpt["model"]["name"], **ckpt["model"]["kwargs"]).state_dict()


def _recipe(tmp_path: Path, model: str) -> Path:
    recipe = {
        "name": f"tiny-ddp-{model}",
        "seed": 1,
        "device": "cpu",
        "model": {"name": model, "kwargs": {"width": 0.25}},
        "data": {"name": "digits", "augment": "cifar", "batch_size": 32, "eval_batch_size": 50,
                 "train_limit": 256, "test_limit": 90},
        "gate": {"target": 0.1},
        "runtime": {"threads": 1, "checkpoint_every": 3, "tensorboard": False, "progress": False},
        "steps": [{"name": "only", "conv_mode": "frac" if "fracbnn" in model else None, "epochs": 1}],
    }
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("model", ["resnet20-fracbnn"])
def test_two_processes_match_one(tmp_path, model, restore_threads):
    recipe = _recipe(tmp_path, model)
    one = tmp_path / "one"
    res_one = train(load_recipe(recipe), one)

    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "fracbnn.cli", "train", "--config", str(recipe), "--out", str(two), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a = load_checkpoint(one / "final.pt")["state_dict"]
    b = load_checkpoint(two / "final.pt")["state_dict"]
    assert set(a) == set(b)
    for k in a:
        if _absorbed_by_batchnorm(k):
            # zero true gradient: Adam turns float noise into steps of at most ~lr each (8 steps, lr 1e-3)
            assert (a[k] - b[k]).abs().max() <= 8 * 1e-3 * 1.01, k
        elif a[k].is_floating_point():
            diff = (a[k].double() - b[k].double()).abs().max().item()
            assert torch.allclose(a[k], b[k], atol=ATOL, rtol=RTOL), f"{k} differs by {diff}"
        else:
            assert torch.equal(a[k], b[k]), k
    # the weights moved: the comparison is not between two untouched initialisations
    assert load_checkpoint(one / "only" / "last.pt")["global_step"] == 8
    first = load_checkpoint(one / "only" / "final.pt")
    assert any(not torch.equal(first["state_dict"][k], v) for k, v in _fresh(first).items())
    # the BN-absorbed shifts do not change what the network computes (train-mode BN, same batch)
    ma, mb = model_from_checkpoint(one / "final.pt"), model_from_checkpoint(two / "final.pt")
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        ya, yb = ma.train()(images), mb.train()(images)
    assert torch.allclose(ya, yb, atol=1e-3, rtol=1e-3), (ya - yb).abs().max()
    # both evaluated all 90 test images, with the same result
    import json

    res_two = json.loads(proc.stdout.strip().splitlines()[-1])["steps"]["only"]
    assert res_two["count"] == res_one["only"]["count"] == 90
    assert abs(res_two["top1"] - res_one["only"]["top1"]) <= 1 / 90 + 1e-9
    if "fracbnn" in model:
        assert res_two["sparsity"].keys() == res_one["only"]["sparsity"].keys()
