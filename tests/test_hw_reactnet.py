"""The generated ImageNet (ReActNet FracBNN) accelerator vs the golden engine: bit-exact logits, and per-layer
cycle and DRAM counts equal to design.py's rules evaluated on the same images' gates."""

import json
import shutil
import time

import numpy as np
import pytest
import torch

from fracbnn.cli import main as cli_main
from fracbnn.deploy import export_model
from fracbnn.deploy.golden import run_program
from fracbnn.errors import FracBNNError
from fracbnn.hw.csim import run_csim
from fracbnn.hw.generate import INT_HEADER
from fracbnn.hw.reactnet import design as D
from fracbnn.hw.reactnet.design import shortcut_tiles
from fracbnn.hw.reactnet.generate import generate_rx_project
from fracbnn.hw.reactnet.measure import busiest_lanes, open_maps
from fracbnn.hw.reactnet.program import rx_program
from fracbnn.models import create_model
from fracbnn.models.calibrate import data_like, smooth_images

from conftest import needs_c
from exportable import data_like_model, family_images

pytestmark = needs_c(shutil.which("g++") is not None, "g++ is needed to build the C testbench")

FIELDS = ("msb", "lsb", "lsb_full", "epilogue", "dram", "dram_bytes", "cycles")


def _model(width, seed, open_range=(0.2, 0.8), size=64):
    torch.manual_seed(seed)
    m = create_model("reactnet-fracbnn", width=width, num_classes=10)
    return data_like(m, smooth_images(16, (size, size), seed=seed), seed=seed, open_range=open_range)


def _expected(packed, cfg, images):
    """Per layer, design.py's cycle and DRAM terms summed the way the kernel runs its tiles (means over images)."""
    prog = rx_program(packed)
    shapes = prog.shapes
    maps = open_maps(packed, prog, run_program(packed, images))
    order = [(i, t) for i, s in enumerate(shapes) for t in range(D.c_tiles(s, cfg))]
    total = {s.name: dict.fromkeys(FIELDS, 0) for s in shapes}
    for n in range(len(images)):
        busiest = {k: busiest_lanes(v[n], cfg.lanes) for k, v in maps.items()}
        res = {s.name: dict.fromkeys(FIELDS, 0) for s in shapes}
        first = D.weight_bytes_per_tile(shapes[0], cfg)
        stem = res[shapes[0].name]
        stem["dram"] += D.dram_cycles(first, cfg)
        stem["cycles"] += D.dram_cycles(first, cfg)
        stem["dram_bytes"] += first
        for g, (i, t) in enumerate(order):
            s, r = shapes[i], res[shapes[i].name]
            compute = dram = 0
            if g + 1 < len(order):
                nb = D.weight_bytes_per_tile(shapes[order[g + 1][0]], cfg)
                dram += D.dram_cycles(nb, cfg)
                r["dram_bytes"] += nb
            for y0, rows in D.row_tiles(s, cfg):
                msb = D.msb_cycles(s, rows, cfg)
                if s.kind == "stem":
                    lsb = 0
                    colours = s.cin // prog.thermo_bits
                    per = D.image_bytes(s, rows, prog.thermo_bits) // colours
                    dram += colours * D.dram_cycles(per, cfg)
                    r["dram_bytes"] += colours * per
                else:
                    r["lsb_full"] += D.lsb_full_cycles(s, rows, cfg)
                    if D.lanes_skip(s, cfg):
                        lsb = sum(D.lsb_row_cycles(s, int(busiest[s.name][t, y]), cfg) for y in range(y0, y0 + rows))
                    else:
                        lsb = D.lsb_full_cycles(s, rows, cfg)
                    for _ in shortcut_tiles(s, cfg, t):
                        sb = D.shortcut_bytes(s, rows, cfg)
                        dram += D.dram_cycles(sb, cfg)
                        r["dram_bytes"] += sb
                cw = D.code_write_bytes(s, rows, cfg)
                dram += D.dram_cycles(cw, cfg)
                r["dram_bytes"] += cw
                epi = D.epilogue_cycles(s, rows)
                r["msb"] += msb
                r["lsb"] += lsb
                r["epilogue"] += epi
                compute += msb + lsb + epi
            r["dram"] += dram
            r["cycles"] += max(compute, dram)
        last = res[shapes[-1].name]
        pool = D.dram_cycles(shapes[-1].cout * 8, cfg)
        last["dram"] += pool
        last["cycles"] += pool
        last["dram_bytes"] += shapes[-1].cout * 8
        for name, r in res.items():
            for k in FIELDS:
                total[name][k] += r[k]
    return {name: {k: v / len(images) for k, v in r.items()} for name, r in total.items()}


def _check(tmp_path, packed, images, cfg=None, name="proj"):
    cfg = cfg or D.proposed_imagenet()
    out = tmp_path / name
    meta = generate_rx_project(packed, out, cfg=cfg, images=images, image_origin="test")
    assert (out / "src" / "fracbnn_int.h").read_bytes() == INT_HEADER.read_bytes()
    res = run_csim(out)
    assert res["returncode"] == 0, res["stdout"]
    assert res["images"] == len(images) and res["mismatched_images"] == 0
    return meta, res, out


@pytest.mark.parametrize("cfg", [D.proposed_imagenet(),
                                 D.RxConfig(lanes=16, tile_rows=5, words_1x1=4, lsb_fill_cols=5),
                                 D.RxConfig(lsb_skip=False, tile_rows=3)],
                         ids=["proposed", "lanes16", "no-skip"])
def test_bit_exact_and_cycles_follow_design(tmp_path, cfg):
    """Reduced model, 8 images with the all-0 and all-255 ones: identical logits; every per-layer count equals
    design.py's rules on the same images' gates (lanes 16: two tiles share a 32-bit plane word)."""
    packed = export_model(data_like_model("reactnet-fracbnn"))
    x = np.asarray(family_images("reactnet-fracbnn", 8))
    assert (x[0] == 0).all() and (x[1] == 255).all()
    meta, res, _ = _check(tmp_path, packed, x, cfg)
    want = _expected(packed, cfg, x)
    assert [l["name"] for l in res["layers"]] == list(want)
    for layer in res["layers"]:
        for k in FIELDS:
            assert layer[k] == pytest.approx(want[layer["name"]][k], rel=1e-9, abs=1e-3), (layer["name"], k)
    assert res["cycles_per_image"] == pytest.approx(sum(w["cycles"] for w in want.values()), rel=1e-9)
    assert res["dram_bytes"] == pytest.approx(sum(w["dram_bytes"] for w in want.values()), rel=1e-9)
    # the project file carries the busiest-lane means the cycle model reads, one list per gated 3x3 layer
    gated3 = [s for s in rx_program(packed).shapes if D.lanes_skip(s, cfg)]
    if cfg.lsb_skip:
        assert {s.name for s in gated3} <= {k for k, v in meta["gates"].items() if "busiest" in v}
        for s in gated3:
            assert np.asarray(meta["gates"][s.name]["busiest"]).shape == (D.c_tiles(s, cfg), s.h_out)
    # params.bin holds exactly the tiles design.py charges
    total = sum(D.weight_bytes_per_tile(s, cfg) * D.c_tiles(s, cfg) for s in rx_program(packed).shapes)
    assert meta["params_bytes"] == total


def test_open_gates_partial_words_and_split_dup_shortcuts_bit_exact(tmp_path):
    """Width 0.1875 (6..192 channels: partial 32-bit words, 48 -> 96 duplicated shortcuts whose tiles read two
    input tiles), mostly open gates, another seed: identical logits, counts still follow the rules."""
    packed = export_model(_model(0.1875, 1, open_range=(0.6, 0.95)), input_size=(3, 64, 64))
    cfg = D.proposed_imagenet()
    shapes = rx_program(packed).shapes
    assert any(s.cin % 32 for s in shapes[1:]) and any(len(shortcut_tiles(s, cfg, 1)) == 2 for s in shapes
                                                       if s.shortcut == "dup" and D.c_tiles(s, cfg) > 1)
    x = smooth_images(6, (64, 64), seed=7).numpy()
    x[0, :, :32] = 0
    x[1, :, 32:] = 255
    gates = {}
    run_program(packed, x, collect_gates=gates)
    opened = sum(v[0] for v in gates.values()) / sum(v[1] for v in gates.values())
    assert opened > 0.5
    _, res, _ = _check(tmp_path, packed, x, cfg)
    want = _expected(packed, cfg, x)
    for layer in res["layers"]:
        for k in ("cycles", "lsb", "dram_bytes"):  # the csim means are printed with 3 decimals
            assert layer[k] == pytest.approx(want[layer["name"]][k], rel=1e-9, abs=1e-3), (layer["name"], k)


def test_a_wrong_golden_logit_fails_csim(tmp_path, capsys):
    packed = export_model(data_like_model("reactnet-fracbnn"))
    x = np.asarray(family_images("reactnet-fracbnn", 3))
    out = tmp_path / "p"
    generate_rx_project(packed, out, images=x, image_origin="test")
    assert cli_main(["hw", "csim", str(out)]) == 0
    logits = np.fromfile(out / "tb_logits.bin", dtype="<i8")
    logits[12] += 1  # image 1, class 2
    logits.tofile(out / "tb_logits.bin")
    capsys.readouterr()
    assert cli_main(["hw", "csim", str(out)]) == 1
    text = capsys.readouterr().out
    assert "MISMATCH image 1 class 2" in text and "3 images, 1 mismatched" in text
    assert json.loads((out / "csim_result.json").read_text())["mismatched_images"] == 1


def test_lsb_lists_save_cycles_over_full_sweeps(tmp_path):
    packed = export_model(data_like_model("reactnet-fracbnn"))
    _, res, _ = _check(tmp_path, packed, np.asarray(family_images("reactnet-fracbnn", 4)))
    gated3 = {s.name for s in rx_program(packed).shapes if s.kind == "conv3" and s.gated}
    rows = [l for l in res["layers"] if l["name"] in gated3]
    assert len(rows) == 13
    assert sum(l["lsb"] for l in rows) < 0.8 * sum(l["lsb_full"] for l in rows)


@pytest.mark.parametrize("kind", ["reactnet-bnn", "shortcut-8-bit"])
def test_unsupported_reactnets_are_refused_with_one_line(tmp_path, capsys, kind):
    if kind == "reactnet-bnn":
        packed = export_model(data_like_model("reactnet-bnn"))
    else:
        torch.manual_seed(0)
        model = create_model("reactnet-fracbnn", width=0.0625, num_classes=10, shortcut_bits=8).eval()
        packed = export_model(model, input_size=(3, 32, 32))
    path = tmp_path / "m.fbnn"
    packed.save(path)
    out = tmp_path / "proj"
    assert cli_main(["hw", "generate", str(path), "-o", str(out), "--random-images", "--images", "2"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("binary" in err if kind == "reactnet-bnn" else "8-bit shortcut" in err)
    assert not out.exists()


def test_configurations_the_kernel_does_not_implement_are_refused(tmp_path):
    packed = export_model(data_like_model("reactnet-fracbnn"))
    x = np.asarray(family_images("reactnet-fracbnn", 2))
    for cfg, msg in ((D.published_imagenet(), "published"), (D.RxConfig(lanes=24), "multiple of 16")):
        with pytest.raises(FracBNNError, match=msg):
            generate_rx_project(packed, tmp_path / "p", cfg=cfg, images=x)
    with pytest.raises(FracBNNError, match="shape"):
        generate_rx_project(packed, tmp_path / "p", images=x[:, :, :32])


def test_cli_generate_and_csim(tmp_path, capsys):
    packed = export_model(data_like_model("reactnet-fracbnn"))
    path = tmp_path / "m.fbnn"
    packed.save(path)
    out = tmp_path / "proj"
    assert cli_main(["hw", "generate", str(path), "-o", str(out), "--random-images", "--images", "2"]) == 0
    assert "ImageNet accelerator" in capsys.readouterr().out
    meta = json.loads((out / "hw_project.json").read_text())
    assert meta["family"] == "reactnet" and meta["config"]["lanes"] == 32 and len(meta["layers"]) == 27
    assert cli_main(["hw", "csim", str(out)]) == 0
    assert "2 images, 0 mismatched" in capsys.readouterr().out


@pytest.mark.slow
def test_full_width_224_bit_exact(tmp_path):
    """The real geometry (32..1024 channels, 112..7 pixels, 1000 classes), data-like random weights, 2 images.
    About 20 s on 2 cores: model 5 s, golden run 9 s, csim build + run 4 s."""
    t0 = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = data_like(create_model("reactnet-fracbnn", width=1.0, num_classes=1000),
                          smooth_images(8, (64, 64), seed=0), seed=0)  # statistics at 64 x 64: faster
    finally:
        torch.set_num_threads(threads)
    packed = export_model(model, input_size=(3, 224, 224))
    x = smooth_images(2, (224, 224), seed=5).numpy()
    x[0] = 0
    meta, res, _ = _check(tmp_path, packed, x)
    assert meta["layers"][-1]["cout"] == 1024 and meta["num_classes"] == 1000
    assert res["layers"][0]["name"] == "stem" and len(res["layers"]) == 27
    assert time.time() - t0 < 180


def test_briefly_trained_model_bit_exact(tmp_path):
    """A reduced reactnet-fracbnn after 25 training steps (BN statistics and gate thresholds learned, not set):
    identical logits in csim and cycles that follow design.py."""
    torch.manual_seed(3)
    model = create_model("reactnet-fracbnn", num_classes=4, width=0.0625)
    x = smooth_images(64, (64, 64), 3, seed=3)
    y = (x.float().mean(dim=(1, 2, 3)) > x.float().mean()).long() + 2 * (x[:, 0].float().mean(dim=(1, 2)) >
                                                                         x[:, 2].float().mean(dim=(1, 2))).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(25):
        idx = torch.arange(16) + 16 * (step % 4)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.input_size = (3, 64, 64)
    packed = export_model(model)
    imgs = np.asarray(family_images("reactnet-fracbnn", 6))
    cfg = D.proposed_imagenet()
    meta, res, _ = _check(tmp_path, packed, imgs, cfg)
    want = _expected(packed, cfg, imgs)
    for layer in res["layers"]:
        assert layer["cycles"] == pytest.approx(want[layer["name"]]["cycles"], rel=1e-9), layer["name"]
    dens = [g["gate_density"] for g in meta["gates"].values()]
    assert 0.0 < min(dens) and max(dens) < 1.0  # part-open gates after training
