"""Write a Vitis HLS project for a packed CIFAR FracBNN model.

Layout of the generated directory (docs/hw.md):

    src/fracbnn_kernel.cpp   the engine (copied from fracbnn/hw/templates)
    src/fracbnn_config.h     sizes, types, loop depths of this configuration
    src/fracbnn_params.h     layer table, weight words, gate thresholds, folded constants
    src/tb.cpp, src/tb_data.h  testbench with real test images and golden logits
    csim.tcl, synth.tcl      Vitis HLS: C simulation; synthesis + IP export (xczu3eg, 4 ns)
    host/fracbnn_pynq.py     PYNQ driver for the Ultra96v2
    README.md                from the project to a bitstream
    hw_project.json          configuration, layers, measured LSB densities (read by `hw report`)
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import FracBNNError
from .design import DEPTH, PART, HwConfig, proposed_ultra96, segment_plan
from .measure import calibrate, default_images, sample_images  # noqa: F401 (image helpers used via this module)
from .program import HwProgram, hw_program, weight_words

TEMPLATES = Path(__file__).resolve().parent / "templates"
BOARDS = {"ultra96v2": {"part": PART["name"], "clock_mhz": 250.0}}
#: loop ids shared by the kernel (enum order) and the report
LOOPS = ("load", "encode", "shortcut", "msb", "lsb", "epilogue", "pool", "fc")
LOOP_DEPTH_KIND = {"load": "load", "encode": "pack", "shortcut": "pool", "msb": "conv", "lsb": "conv",
                   "epilogue": "epilogue", "pool": "pool", "fc": "fc"}
PROJECT_FILE = "hw_project.json"


def _ctype(arr: np.ndarray) -> str:
    m = int(np.max(np.abs(arr.astype(np.int64)))) if arr.size else 0
    if m < 2**15:
        return "int16_t"
    if m < 2**31:
        return "int32_t"
    return "int64_t"


def _ints(arr, per_line: int = 16, suffix: str = "") -> str:
    vals = [f"{int(v)}{suffix}" for v in np.asarray(arr).reshape(-1)]
    return ",\n    ".join(", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line))


def _i64(v: int) -> str:
    v = int(v)
    return f"({v + 1}LL - 1)" if v == -(2**63) else f"{v}LL"


def _c_array(name: str, arr: np.ndarray, ctype: str | None = None) -> str:
    arr = np.asarray(arr, np.int64)
    ctype = ctype or _ctype(arr)
    suffix = "LL" if ctype == "int64_t" else ""
    return f"static const {ctype} {name}[{max(1, arr.size)}] = {{\n    {_ints(arr, 16, suffix) if arr.size else '0'}\n}};\n"


def _layer_rows(prog: HwProgram, cfg: HwConfig) -> list[dict]:
    rows, w_off, p_off = [], 0, 0
    n = len(prog.layers)
    for idx, layer in enumerate(prog.layers):
        s = layer.shape
        seg, slots, kw = segment_plan(s.cin, s.w_out, cfg)
        groups = math.ceil(s.cout / cfg.lanes)
        last = idx == n - 1
        if not last:
            nxt = prog.layers[idx + 1].shape
            nseg, _, nkw = segment_plan(nxt.cin, nxt.w_out, cfg)
            nstride, nh, nw = nxt.stride, nxt.h_out, nxt.w_out
        else:
            nseg, nkw, nstride, nh, nw = 64, 1, 1, 1, 1
        rows.append(dict(name=s.name, kind=0 if s.kind == "input" else 1, cin=s.cin, cout=s.cout, h_in=s.h_in,
                         w_in=s.w_in, stride=s.stride, h_out=s.h_out, w_out=s.w_out, seg=seg, slots=slots, kw=kw,
                         groups=groups, residual={"none": 0, "identity": 1, "downsample": 2}[s.residual],
                         gated=int(layer.gate is not None), w_off=w_off, p_off=p_off, shift=layer.shift,
                         bits=layer.bits, next_seg=nseg, next_kw=nkw, last=int(last), next_stride=nstride,
                         next_h_out=nh, next_w_out=nw))
        w_off += groups * kw
        p_off += s.cout
    return rows


def _config_h(prog: HwProgram, cfg: HwConfig, rows: list[dict], clock_mhz: float) -> str:
    cols = 2 * cfg.slots + 1
    c, h, w = prog.input_size
    frac = [r for r in rows if r["kind"] == 1]
    msb_depth = max(math.ceil(r["h_in"] / 3) * math.ceil(r["w_in"] / cols) * r["kw"] for r in rows)
    lsb_depth = max(math.ceil(r["h_in"] / 3) * math.ceil(r["w_in"] / cols) * r["kw"] for r in frac)
    u = cfg.units

    def padded(ch: int) -> int:  # channels the kernel's fm_index spans: groups of min(ch, units)
        return ch if ch < u else math.ceil(ch / u) * u

    acc_depth = max(padded(r["cout"]) * r["h_out"] * r["w_out"] for r in rows)
    sc_depth = max([padded(r["cin"]) * r["h_out"] * r["w_out"] for r in rows if r["residual"] == 2] or [1])
    tile_max = max(r["h_out"] * math.ceil(r["w_out"] / r["slots"]) for r in frac)
    ulist_max = max(r["groups"] * r["h_out"] * math.ceil(r["w_out"] / r["slots"]) for r in frac)
    acc_bound = max(9 * r["cin"] * (3 if r["kind"] == 1 else 1) for r in rows)
    acc_t = "int16_t" if acc_bound < 2**15 else "int32_t"
    res_t = "int16_t" if max(r["bits"] for r in rows) <= 16 else "int32_t"
    sc_t = "int32_t"
    row_names = ", ".join(f'"{n}"' for n in ["input"] + [r["name"] for r in rows] + ["head"])
    loop_names = ", ".join(f'"{n}"' for n in LOOPS)
    depths = ", ".join(str(DEPTH[LOOP_DEPTH_KIND[k]]) for k in LOOPS)
    loop_enum = ", ".join(f"LOOP_{k.upper()}" for k in LOOPS)
    return f"""// Generated by `fracbnn hw generate`: configuration {cfg.name}. Do not edit; regenerate.
#pragma once
#include <cstdint>

typedef uint64_t word_t;   // one XNOR-popcount word ({cfg.word_bits} bits, segments of >= {cfg.min_segment_bits})
typedef {acc_t} acc_t;     // conv accumulator A = 2 S_M + open * S_L (|A| <= {acc_bound})
typedef {res_t} res_t;     // residual stream (saturated to {max(r['bits'] for r in rows)} bits)
typedef {sc_t} sc_t;       // 2x2 shortcut sums

#define P_LANES {cfg.lanes}
#define MAX_SLOTS {cfg.slots}
#define UNITS {cfg.units}
#define AXI_BYTES {cfg.axi_bytes}
#define CLOCK_MHZ {clock_mhz:.1f}
#define IMG_C {c}
#define IMG_H {h}
#define IMG_W {w}
#define IMG_BYTES {c * h * w}
#define THERMO_RES {prog.resolution}
#define THERMO_BITS {prog.thermo_bits}
#define MAX_KW {max(r['kw'] for r in rows)}
#define FRAC_BITS {prog.frac_bits}
#define NUM_LAYERS {len(rows)}
#define NUM_CLASSES {len(prog.fc_bias)}
#define MAX_C {max(r['cout'] for r in rows)}
#define MSB_DEPTH {msb_depth}
#define LSB_DEPTH {lsb_depth}
#define ACC_DEPTH {acc_depth}
#define RES_DEPTH {acc_depth}
#define SC_DEPTH {sc_depth}
#define ACC_BANKS {u}          // cyclic partitions of acc_buf, res_buf, sc_buf (see fm_index in the kernel)
#define RES_BANKS {2 * u}
#define SC_BANKS {u}
#define TILE_MAX {tile_max}
#define LSB_LANES {int(cfg.lsb_lanes)}      // 1: per-lane LSB work lists (lsb_lanes), 0: tile work list
#define ULIST_MAX {ulist_max if cfg.lsb_lanes else 1}
#define COPY_DEPTH {max(r['h_out'] * r['w_out'] * r['kw'] for r in frac) if cfg.lsb_lanes else 1}
#define MAX_GROUPS {max(r['groups'] for r in rows)}

enum {{ KIND_INPUT = 0, KIND_FRAC = 1 }};
enum {{ RES_NONE = 0, RES_ID = 1, RES_DOWN = 2 }};
enum {{ {loop_enum}, FB_NUM_LOOPS }};
#define FB_NUM_ROWS (NUM_LAYERS + 2)
// pipeline depth per loop (cycles = iterations x II + entries x depth)
static const int LOOP_DEPTH[FB_NUM_LOOPS] = {{ {depths} }};

static const char *const ROW_NAMES[FB_NUM_ROWS] = {{ {row_names} }};
static const char *const LOOP_NAMES[FB_NUM_LOOPS] = {{ {loop_names} }};

struct LayerDesc {{
    int kind, cin, cout, h_in, w_in, stride, h_out, w_out;
    int seg, slots, kw, groups, residual, gated;
    int w_off, p_off, shift, bits, next_seg, next_kw, last, next_stride, next_h_out, next_w_out;
}};
"""


def _params_h(prog: HwProgram, cfg: HwConfig, rows: list[dict]) -> str:
    fields = ("kind", "cin", "cout", "h_in", "w_in", "stride", "h_out", "w_out", "seg", "slots", "kw", "groups",
              "residual", "gated", "w_off", "p_off", "shift", "bits", "next_seg", "next_kw", "last", "next_stride",
              "next_h_out", "next_w_out")
    out = ["// Generated by `fracbnn hw generate` from the packed model. Do not edit; regenerate.",
           "#pragma once", "#include <cstdint>", '#include "fracbnn_config.h"', ""]
    out.append("static const LayerDesc LAYERS[NUM_LAYERS] = {")
    for r in rows:
        out.append("    {" + ", ".join(str(r[f]) for f in fields) + "},  // " + r["name"])
    out.append("};")
    words = np.concatenate([weight_words(l, cfg) for l in prog.layers])
    out.append(f"// weight words: [layer offset + group * kw + word][tap][lane]; {words.shape[0]} entries")
    out.append(f"static const word_t WEIGHTS[{words.shape[0]}][9][P_LANES] = {{")
    for e in words:
        taps = ", ".join("{" + ", ".join(f"0x{int(v):x}ULL" for v in tap) + "}" for tap in e)
        out.append(f"    {{{taps}}},")
    out.append("};")
    ch_map = np.concatenate([l.channel_order() for l in prog.layers])
    out.append("// engine slot -> output channel, per layer at its p_off (channels sorted by calibration gate rate)")
    out.append(f"static const uint16_t CH_MAP[{len(ch_map)}] = {{\n    {_ints(ch_map)}\n}};")
    total = sum(l.shape.cout for l in prog.layers)
    per_ch = {k: np.zeros(total, np.int64) for k in ("GATE_THR", "SIGN", "THRESH", "POS_MUL", "POS_ADD", "NEG_MUL",
                                                     "NEG_ADD", "SC_MUL")}
    for r, layer in zip(rows, prog.layers):
        sl = slice(r["p_off"], r["p_off"] + layer.shape.cout)
        if layer.gate is not None:
            per_ch["GATE_THR"][sl] = layer.gate
        for k, v in layer.consts.items():
            per_ch["THRESH" if k == "threshold" else k.upper()][sl] = v
    for k, v in per_ch.items():
        out.append(_c_array(k, v))
    ncls, cdim = prog.fc_weight.shape
    wt = _ctype(prog.fc_weight)
    suffix = "LL" if wt == "int64_t" else ""
    out.append(f"static const {wt} FC_W[{ncls}][{cdim}] = {{")
    out += ["    {" + _ints(row, 1000, suffix) + "}," for row in prog.fc_weight]
    out.append("};")
    out.append(f"static const int64_t FC_BIAS[{ncls}] = {{" + ", ".join(_i64(v) for v in prog.fc_bias) + "};")
    return "\n".join(out) + "\n"


def _tb_data_h(images: np.ndarray, logits: np.ndarray, origin: str) -> str:
    n = len(images)
    out = ["// Generated by `fracbnn hw generate`: test images and the golden engine's logits.",
           f"// images: {origin}", "#pragma once", "#include <cstdint>", '#include "fracbnn_config.h"',
           f"#define TB_N {n}", f"static const uint8_t TB_IMAGES[{max(n, 1)}][IMG_BYTES] = {{"]
    for img in images:
        out.append("    {" + _ints(img, 10**9) + "},")
    out.append("};")
    out.append(f"static const int64_t TB_LOGITS[{max(n, 1)}][NUM_CLASSES] = {{")
    for row in logits:
        out.append("    {" + ", ".join(_i64(v) for v in row) + "},")
    out.append("};")
    return "\n".join(out) + "\n"


def _tcl(part: str, clock_mhz: float, synth: bool) -> str:
    period = 1000.0 / clock_mhz
    lines = [
        "# Generated by `fracbnn hw generate`. Run from this directory: vitis_hls -f " + ("synth.tcl" if synth else "csim.tcl"),
        "open_project -reset fracbnn_hls",
        "set_top fracbnn_top",
        'add_files src/fracbnn_kernel.cpp -cflags "-std=c++14 -Isrc"',
        'add_files -tb src/tb.cpp -cflags "-std=c++14 -Isrc -Wno-unknown-pragmas"',
        "open_solution -reset solution1 -flow_target vivado",
        f"set_part {{{part}}}",
        f"create_clock -period {period:g} -name default",
    ]
    if synth:
        lines += ["config_export -format ip_catalog -rtl verilog -version 1.0.0",
                  "csynth_design",
                  "export_design -format ip_catalog -rtl verilog"]
    else:
        lines += ["csim_design -argv {csim_result.json}"]
    lines.append("exit")
    return "\n".join(lines) + "\n"


def check_output_dir(out_dir: str | Path) -> Path:
    """Refuse, before any work, an output that is a file or lies where nothing can be written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FracBNNError(f"-o {out} is a file, not a directory; pass a new or empty directory for the project")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise FracBNNError(f"cannot create {out}: {probe} is a file, not a directory; choose another -o path")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise FracBNNError(f"cannot write to {probe} ({e.strerror or e}); choose a -o directory you can "
                           "write to") from None
    return out


def generate_project(packed, out_dir: str | Path, *, cfg: HwConfig | None = None, board: str = "ultra96v2",
                     images: np.ndarray | None = None, n_images: int = 100, image_origin: str = "",
                     model_label: str = "", calib_images: np.ndarray | None = None) -> dict:
    """Write the project; returns the project metadata (also saved as hw_project.json).

    ``calib_images`` (other images than the test images) set the order in
    which output channels are given to the engine's lanes (``measure.calibrate``):
    tile design: sorted by open-gate rate, so rarely-open channels share lane
    groups and more LSB tiles close; per-lane design: dealt so the lanes' loads
    are even. Without them the natural channel order is kept.
    """
    from ..deploy.golden import run_program

    if board not in BOARDS:
        raise FracBNNError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    cfg = cfg or proposed_ultra96()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / PROJECT_FILE).is_file():
        raise FracBNNError(f"{out} exists and is not a fracbnn hw project; choose an empty or new directory")
    prog = hw_program(packed)
    if prog.input_size[0] * prog.thermo_bits != prog.layers[0].shape.cin:
        raise FracBNNError("thermometer channels do not match the input convolution")
    if images is None:
        images, image_origin = sample_images(packed, n_images)
    images = np.ascontiguousarray(images, np.uint8)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(prog.input_size):
        raise FracBNNError(f"test images must have shape (N, {', '.join(map(str, prog.input_size))})")
    calibration = None
    if calib_images is not None and len(calib_images):
        calibration = np.ascontiguousarray(calib_images, np.uint8)
    buf = run_program(packed, images)  # one golden run: the testbench's logits and the LSB statistics
    logits = np.asarray(buf["logits"], np.int64)
    stats = calibrate(packed, prog, cfg, images, calibration, buf=buf)  # channel order + LSB work, once
    del buf
    rows = _layer_rows(prog, cfg)
    clock = BOARDS[board]["clock_mhz"]
    # a regenerated project must not keep the previous model's csim results or binary
    (out / "csim_result.json").unlink(missing_ok=True)
    shutil.rmtree(out / "build", ignore_errors=True)
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    (out / "host").mkdir(exist_ok=True)
    shutil.copyfile(TEMPLATES / "fracbnn_kernel.cpp", src / "fracbnn_kernel.cpp")
    shutil.copyfile(TEMPLATES / "tb.cpp", src / "tb.cpp")
    (src / "fracbnn_config.h").write_text(_config_h(prog, cfg, rows, clock))
    (src / "fracbnn_params.h").write_text(_params_h(prog, cfg, rows))
    (src / "tb_data.h").write_text(_tb_data_h(images, logits, image_origin or "given by the caller"))
    (out / "csim.tcl").write_text(_tcl(BOARDS[board]["part"], clock, synth=False))
    (out / "synth.tcl").write_text(_tcl(BOARDS[board]["part"], clock, synth=True))
    driver = (TEMPLATES / "fracbnn_pynq.py").read_text()
    driver = driver.replace("@IMG_SHAPE@", repr(tuple(prog.input_size))).replace(
        "@NUM_CLASSES@", str(len(prog.fc_bias))).replace("@LOGIT_DENOMINATOR@", str(prog.logit_denominator))
    (out / "host" / "fracbnn_pynq.py").write_text(driver)
    meta = {
        "format": "fracbnn.hw-project", "version": 1, "board": board, "part": BOARDS[board]["part"],
        "clock_mhz": clock, "config": cfg.to_dict(), "model": model_label,
        "layers": [l.shape.to_dict() for l in prog.layers], "layer_table": rows,
        "num_classes": len(prog.fc_bias), "logit_denominator": prog.logit_denominator,
        "test_images": {"count": int(len(images)), "origin": image_origin},
        "channel_order": {"calibration_images": 0 if calibration is None else int(len(calibration)),
                          "sorted_by_gate_rate": calibration is not None and not cfg.lsb_lanes,
                          "balanced_over_lanes": calibration is not None and cfg.lsb_lanes},
        "lsb": stats,
    }
    (out / PROJECT_FILE).write_text(json.dumps(meta, indent=1))
    readme = (TEMPLATES / "README.md.in").read_text()
    (out / "README.md").write_text(readme.replace("@MODEL@", model_label or "the packed model").replace(
        "@PART@", BOARDS[board]["part"]).replace("@CLOCK@", f"{clock:g}").replace("@N@", str(len(images))))
    return meta


def load_project(path: str | Path) -> dict:
    p = Path(path) / PROJECT_FILE
    if not p.is_file():
        raise FracBNNError(f"{path} is not a fracbnn hw project (no {PROJECT_FILE}); "
                           "create one with `fracbnn hw generate MODEL.fbnn -o DIR`")
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FracBNNError(f"{p} is damaged ({e}); regenerate the project") from None
    if meta.get("format") != "fracbnn.hw-project":
        raise FracBNNError(f"{p} is not a fracbnn hw project file; regenerate the project")
    return meta


def config_from_project(meta: dict) -> HwConfig:
    c = {k: v for k, v in meta["config"].items() if k not in ("slots", "units")}
    return HwConfig(**c)
