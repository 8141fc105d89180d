"""A damaged hw_project.json (either design) gets one line saying to regenerate, from `hw csim` and `hw report`,
before anything is built; the project is left as it was."""

import json
import shutil

import pytest
from exportable import data_like_model

from fracbnn.cli import main
from fracbnn.deploy import export_model
from fracbnn.hw.generate import generate_project
from fracbnn.hw.reactnet.generate import generate_rx_project
from fracbnn.models.calibrate import smooth_images

DAMAGE = {
    "unknown config key": lambda m: m["config"].update(bogus=1),
    "config value of the wrong type": lambda m: m["config"].update(lanes="x"),
    "layers missing": lambda m: m.pop("layers"),
    "a layer without its fields": lambda m: m["layers"][1].pop("cin"),
    "config not a mapping": lambda m: m.update(config=[1, 2]),
}


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    root = tmp_path_factory.mktemp("prj")
    rx = export_model(data_like_model("reactnet-fracbnn"))
    generate_rx_project(rx, root / "reactnet", images=smooth_images(2, (64, 64)).numpy(), image_origin="test")
    cifar = export_model(data_like_model("resnet20-fracbnn"))
    generate_project(cifar, root / "cifar", images=smooth_images(2, (32, 32)).numpy(), image_origin="test")
    return root


@pytest.mark.parametrize("family", ["reactnet", "cifar"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_project_file_gives_one_line(projects, tmp_path, capsys, family, damage):
    prj = tmp_path / family
    shutil.copytree(projects / family, prj)
    meta = json.loads((prj / "hw_project.json").read_text())
    DAMAGE[damage](meta)
    text = json.dumps(meta)
    (prj / "hw_project.json").write_text(text)
    for cmd in (["hw", "csim", str(prj)], ["hw", "report", str(prj)]):
        capsys.readouterr()
        assert main(cmd) == 2, (cmd, damage)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "regenerate" in err, err
    assert not (prj / "build").exists()  # failed before building anything
    assert (prj / "hw_project.json").read_text() == text
