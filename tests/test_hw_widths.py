"""The generated kernel follows the model's per-layer residual widths, declares the types hw/widths.py decides,
and the resource model charges exactly those types."""

import re
import shutil

import numpy as np
import pytest

from fracbnn.deploy import export_model
from fracbnn.deploy.export import FixedPoint
from fracbnn.hw.csim import run_csim
from fracbnn.hw.design import proposed_ultra96
from fracbnn.hw.generate import config_from_project, generate_project
from fracbnn.hw.layers import ConvLayer
from fracbnn.hw.perf_model import resource_model
from fracbnn.hw.program import hw_program
from fracbnn.hw.report import build_report
from fracbnn.hw.widths import CONST_TABLES, c_type, charged_bits, declared_widths, signed_bits
from fracbnn.ir.passes import SATURATING, measure

from conftest import needs_c
from test_hw_csim import _images, _random_model

CTYPE_BITS = {"int8_t": 8, "int16_t": 16, "int32_t": 32, "int64_t": 64}


def _declared_in_project(src) -> dict[str, int]:
    """Bits of every buffer typedef and constant table as the generated headers declare them."""
    config = (src / "fracbnn_config.h").read_text()
    params = (src / "fracbnn_params.h").read_text()
    out = {}
    for key, name in (("acc", "acc_t"), ("res", "res_t"), ("sc", "sc_t"), ("pool", "pool_t")):
        m = re.search(r"typedef (int\d+_t) " + name + ";", config)
        assert m, name
        out[key] = CTYPE_BITS[m.group(1)]
    for name in (*CONST_TABLES, "FC_W", "FC_BIAS"):
        m = re.search(r"static const (int\d+_t) " + name + r"\[", params)
        assert m, name
        out[name] = CTYPE_BITS[m.group(1)]
    return out


def test_signed_bits_and_c_types():
    assert [signed_bits(lo, hi) for lo, hi in ((0, 0), (-1, 0), (0, 1), (-2, 1), (-128, 127), (-129, 0), (0, 128))] \
        == [1, 1, 2, 2, 8, 9, 9]
    assert [c_type(b)[1] for b in (1, 8, 9, 16, 17, 33, 64)] == \
        ["int8_t", "int8_t", "int16_t", "int16_t", "int32_t", "int64_t", "int64_t"]
    with pytest.raises(ValueError):
        c_type(65)


@needs_c(shutil.which("g++") is not None, "g++ is needed to build the C testbench")
def test_per_layer_widths_are_followed_bit_exactly(tmp_path):
    """Widths 26..32 differing per layer, values that saturate, and 32-bit residuals into a down-sampling block
    (whose 2x2 sums need 34 bits: a fixed int32 sc_t overflowed there): csim still matches the golden engine."""
    model = _random_model(21)
    fx = FixedPoint(frac_bits=24, residual_bits=26, param_frac_bits=20)
    probe = export_model(model, fx)
    outs = [n["output"] for n in probe.program if n["op"] in SATURATING]
    widths = {o: 26 + (i * 3) % 7 for i, o in enumerate(outs)}
    widths.update({"stages.0.2.out": 32, "stages.1.2.out": 32})  # the inputs of the two down-sampling blocks
    packed = export_model(model, fx, residual_widths=widths)
    images = _images(2, 21)
    sat = measure(packed, images).saturation
    assert sum(c for c, _ in sat.values()) > 0  # the narrow layers clip, the 32-bit ones too: the bounds matter
    out = tmp_path / "p"
    meta = generate_project(packed, out, images=images, image_origin="test")
    # every layer saturates to its own node's width
    post_bits = [n["bits"] for n in packed.program if n["op"] in SATURATING]
    assert [r["bits"] for r in meta["layer_table"]] == post_bits
    assert len(set(post_bits)) > 3
    w = meta["widths"]
    assert w["res"]["needed"] == 32 and w["sc"]["needed"] == 34 and w["sc"]["ctype"] == "int64_t"
    res = run_csim(out)
    assert res["returncode"] == 0 and res["mismatched_images"] == 0, res["stdout"][-1500:]


@needs_c(shutil.which("g++") is not None, "g++ is needed to build the C testbench")
def test_per_layer_fraction_bits_are_followed_bit_exactly(tmp_path):
    """Fraction bits differing per layer (export --frac-bits auto): each layer's epilogue quantizes for the next
    layer with that layer's own F (LayerDesc.qfrac), and csim matches the golden engine; a narrower F also narrows
    the epilogue constants the generator declares."""
    model = _random_model(23)
    probe = export_model(model)
    outs = [n["output"] for n in probe.program if n["op"] in SATURATING]
    frac = {o: 8 + (i * 5) % 13 for i, o in enumerate(outs)}  # 8..20
    packed = export_model(model, frac_widths=frac)
    assert {n["frac_bits"] for n in packed.program if n["op"] == "quantize2"} == \
        {frac[o] for o in outs[:-1]}  # every output but the last is quantized, each at its own F
    images = _images(2, 23)
    out = tmp_path / "p"
    meta = generate_project(packed, out, images=images, image_origin="test")
    assert [r["qfrac"] for r in meta["layer_table"][:-1]] == [frac[o] for o in outs[:-1]]
    res = run_csim(out)
    assert res["returncode"] == 0 and res["mismatched_images"] == 0, res["stdout"][-1500:]
    narrow = declared_widths(hw_program(export_model(model, FixedPoint(frac_bits=8, residual_bits=14))))
    wide = declared_widths(hw_program(probe))
    assert narrow["POS_MUL"]["needed"] < wide["POS_MUL"]["needed"]


def test_declared_types_are_what_the_resource_model_charges(tmp_path):
    """One decision: the generated headers declare declared_widths(prog), hw_project.json keeps it, and the
    resource model (through `hw report`'s build_report) charges those widths and nothing else."""
    from fracbnn.hw.program import hw_program

    packed = export_model(_random_model(22))
    out = tmp_path / "p"
    meta = generate_project(packed, out, images=_images(1, 22), image_origin="test")
    widths = declared_widths(hw_program(packed))
    assert meta["widths"] == widths
    declared = _declared_in_project(out / "src")
    for k, bits in declared.items():
        assert widths[k]["bits"] == bits and widths[k]["needed"] <= bits, k
    cfg = config_from_project(meta)
    layers = [ConvLayer(**l) for l in meta["layers"]]
    rep = build_report(layers, cfg, 1.0, widths=meta["widths"])
    charged = rep["charged_bits"]
    assert charged == resource_model(layers, cfg, widths=meta["widths"])["charged_bits"]
    for k, bits in declared.items():
        if k != "FC_BIAS":  # the bias is added once per image, not a memory the model charges
            assert charged[k] == bits, k
    # the values really need what was chosen: the tables' contents fit, one type narrower would not (>= 8 bits)
    params = (out / "src" / "fracbnn_params.h").read_text()
    for name in CONST_TABLES:
        body = re.search(r"\b" + name + r"\[\d+\]\s*=\s*\{([^}]*)\}", params).group(1)
        vals = np.array([int(v.strip().rstrip("L")) for v in body.replace("\n", " ").split(",") if v.strip()])
        need = signed_bits(int(vals.min()), int(vals.max()))
        assert need == widths[name]["needed"] and c_type(max(need, 8))[0] == declared[name], name
    # 64-bit epilogue constants are charged as 64-bit: more than the nominal 16-bit ROMs of a model-free estimate
    nominal = resource_model(layers, cfg)
    assert nominal["charged_bits"] == charged_bits(cfg, None)
    rom = {r["component"]: r for r in rep["resource_components"]}["parameter ROMs"]
    nominal_rom = {r["component"]: r for r in nominal["components"]}["parameter ROMs"]
    assert rom["lut"] / nominal_rom["lut"] == sum(charged[k] for k in CONST_TABLES) / (8 * cfg.param_bits)


def test_report_reads_the_project_widths(tmp_path, capsys):
    from fracbnn.cli import main

    model_path = tmp_path / "m.fbnn"
    export_model(_random_model(23)).save(model_path)
    out = tmp_path / "p"
    assert main(["hw", "generate", str(model_path), "-o", str(out), "--images", "1", "--random-images",
                 "--calib-images", "0"]) == 0
    capsys.readouterr()
    assert main(["hw", "report", str(out), "--lsb-density", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "widths charged (declared by the generated kernel)" in text
    assert main(["hw", "report", str(model_path), "--lsb-density", "0.5", "--json"]) == 0
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["widths_from"] == "declared by the generated kernel"
    assert rep["charged_bits"] == charged_bits(proposed_ultra96(), json.loads((out / "hw_project.json").read_text())
                                               ["widths"])
