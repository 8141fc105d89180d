"""Write a Vitis HLS project for a packed ReActNet FracBNN (the ImageNet accelerator).

Layout of the generated directory (docs/hw.md, "ImageNet"):

    src/fracbnn_kernel.cpp   the engine (templates/rx_kernel.cpp)
    src/fracbnn_int.h        scalar integer primitives, shared with the fast CPU engine
    src/fracbnn_config.h     sizes, buffer depths, design constants and the layer table
    src/tb.cpp               testbench (templates/rx_tb.cpp): reads the .bin files below
    params.bin               the DRAM image of weights and per-channel constants, tile by tile
    tb_images.bin            test images, uint8 (N, C, H, W)
    tb_logits.bin            the golden engine's int64 logits (N, classes)
    fc.bin                   the classifier (run on the ARM): int64 weight (classes, C), then bias
    csim.tcl, synth.tcl      Vitis HLS: C simulation; synthesis + IP export
    host/fracbnn_pynq.py     PYNQ driver (IP + global-pool-to-logits on the ARM)
    README.md                from the project to a bitstream
    hw_project.json          configuration, layers, measured gates (read by the cycle model)

Weights and test data go into binary files (not C headers) so a full-width
model's project is written in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ...errors import FracBNNError
from ..generate import BOARDS, INT_HEADER, PROJECT_FILE, TEMPLATES, _tcl, check_output_dir
from . import design as D
from .measure import gate_stats
from .model import coefficient_bits
from .program import RxLayer, RxProgram, rx_program

KINDS = {"stem": 0, "conv3": 1, "conv1": 2}
SHORTCUTS = {"none": 0, "identity": 1, "pool": 2, "dup": 3}
INT64_MIN = -(2**63)
#: the LayerDesc fields, in the order of the C struct
FIELDS = ("kind", "cin", "cout", "h_in", "w_in", "stride", "h_out", "w_out", "k", "words", "steps", "c_tiles",
          "shortcut", "sc_tiles", "gated", "skip", "last", "shift", "bits", "q4_frac", "q4_bits", "q2_frac",
          "sc_bits", "pstride_in", "pstride_out", "param_off", "tile_bytes", "weight_bytes")


def check_config(cfg: D.RxConfig) -> None:
    """The generated kernel implements our design; refuse what it does not."""
    if cfg.style != "fracbnn" or not cfg.weight_cache:
        raise FracBNNError("the generator writes the proposed ImageNet design (weight cache on); the published "
                           "design is a reference for the cycle model only")
    if cfg.lanes % 16:
        raise FracBNNError(f"lanes must be a multiple of 16 (4-bit codes of a tile are whole 64-bit words), "
                           f"got {cfg.lanes}")
    if cfg.bus_bits % 64 or cfg.bus_bits < 64:
        raise FracBNNError(f"bus_bits must be a multiple of 64, got {cfg.bus_bits}")


def plane_stride(h: int, w: int) -> int:
    """Words between two input-channel words of a plane: h*w, one more when it is a multiple of 3 (the 1x1
    engine reads 9 words of one pixel per cycle from 9 cyclic banks; a stride prime to 3 keeps them apart)."""
    return h * w + (1 if (h * w) % 3 == 0 else 0)


def dup_source_tiles(l, cfg: D.RxConfig) -> int:
    """Most input code tiles one output tile reads (see shortcut_tiles)."""
    return max(len(D.shortcut_tiles(l, cfg, t)) for t in range(D.c_tiles(l, cfg)))


def layer_rows(prog: RxProgram, cfg: D.RxConfig) -> list[dict]:
    rows, off = [], 0
    prev_q4 = 4
    for layer in prog.layers:
        s = layer.shape
        tb = D.weight_bytes_per_tile(s, cfg)
        wb = tb - D.CONST_TABLES * cfg.lanes * 8
        if wb % (cfg.bus_bits // 8):
            raise FracBNNError(f"{s.name}: a tile's weights ({wb} bytes) are not whole {cfg.bus_bits}-bit bus words; "
                               "choose lanes x word_bits a multiple of 512")
        rows.append(dict(name=s.name, kind=KINDS[s.kind], cin=s.cin, cout=s.cout, h_in=s.h_in, w_in=s.w_in,
                         stride=s.stride, h_out=s.h_out, w_out=s.w_out, k=s.k, words=D.words(s, cfg),
                         steps=D.steps(s, cfg), c_tiles=D.c_tiles(s, cfg), shortcut=SHORTCUTS[s.shortcut],
                         sc_tiles=dup_source_tiles(s, cfg), gated=int(s.gated), skip=int(D.lanes_skip(s, cfg)),
                         last=int(s.last), shift=layer.shift, bits=layer.bits, q4_frac=layer.q4_frac,
                         q4_bits=layer.q4_bits, q2_frac=layer.q2_frac, sc_bits=prev_q4,
                         pstride_in=plane_stride(s.h_in, s.w_in), pstride_out=plane_stride(s.h_out, s.w_out),
                         param_off=off, tile_bytes=tb, weight_bytes=wb))
        off += tb * D.c_tiles(s, cfg)
        prev_q4 = layer.q4_bits
    return rows


def tile_params(layer: RxLayer, cfg: D.RxConfig) -> bytes:
    """One layer's block of params.bin: per channel tile, weight words [word][lane][tap] then 8 int64 tables."""
    s = layer.shape
    lanes, wbits = cfg.lanes, cfg.word_bits
    words, tiles, taps = D.words(s, cfg), D.c_tiles(s, cfg), s.k * s.k
    bits = np.ones((tiles * lanes, words * wbits, s.k, s.k), np.uint8)   # input channels >= cin: 1
    bits[:s.cout, :s.cin] = layer.weight_bits
    bits[s.cout:] = 0                                                     # padded lanes: never stored
    # (tile, lane, word, bit, ky, kx) -> (tile, word, lane, tap, bit), bit b of a word = channel 32 w + b
    b = bits.reshape(tiles, lanes, words, wbits, taps).transpose(0, 2, 1, 4, 3)
    packed = np.packbits(np.ascontiguousarray(b), axis=-1, bitorder="little")  # little-endian words
    packed = packed.reshape(tiles, -1)
    consts = np.zeros((tiles * lanes, D.CONST_TABLES), np.int64)
    if s.kind == "stem":
        names = ["mul", "add"]
    else:
        consts[:, 0] = INT64_MIN
        if layer.gate is not None:
            consts[:s.cout, 0] = layer.gate
        names = [None, "sign", "threshold", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul"]
    for j, n in enumerate(names):
        if n is not None:
            consts[:s.cout, j] = np.asarray(layer.consts[n], np.int64)
    consts[s.cout:] = 0
    tables = consts.reshape(tiles, lanes, D.CONST_TABLES).transpose(0, 2, 1).astype("<i8")
    out = np.concatenate([packed, np.ascontiguousarray(tables).view(np.uint8).reshape(tiles, -1)], axis=1)
    assert out.shape[1] == D.weight_bytes_per_tile(s, cfg)
    return out.tobytes()


def golden_logits_and_gates(packed, prog: RxProgram, cfg: D.RxConfig, images: np.ndarray,
                            chunk: int = 4) -> tuple[np.ndarray, dict]:
    """One golden run over the test images, a few at a time (a full-width 224 x 224 image keeps ~0.3 GB of
    buffers): the testbench's logits and the gate statistics (``measure.gate_stats``, means over all images)."""
    from tqdm import tqdm

    from ...deploy.golden import run_program

    logits, sums, n = [], {}, len(images)
    for i in tqdm(range(0, n, chunk), desc="golden run", unit="chunk", leave=False, disable=n <= 2 * chunk):
        part = images[i:i + chunk]
        buf = run_program(packed, part)
        logits.append(np.asarray(buf["logits"], np.int64))
        for name, row in gate_stats(packed, prog, cfg, buffers=buf).items():
            acc = sums.setdefault(name, {})
            for k, v in row.items():
                if k != "images":
                    acc[k] = acc.get(k, 0) + np.asarray(v, np.float64) * len(part)
        del buf
    gates = {name: {k: (v / n).round(6).tolist() if k == "busiest" else float(v / n) for k, v in acc.items()}
             | {"images": n} for name, acc in sums.items()}
    return np.concatenate(logits), gates


def buffer_sizes(prog: RxProgram, cfg: D.RxConfig, rows: list[dict]) -> dict:
    shapes = prog.shapes
    eb = D.code_bytes_per_pixel(cfg)
    blocks = [r for r in rows if r["kind"] != KINDS["stem"]]
    stem = shapes[0]
    sc_entries = 1
    for s, r in zip(shapes, rows):
        rt = min(cfg.tile_rows, s.h_out)
        if s.shortcut == "pool":
            sc_entries = max(sc_entries, 2 * rt * s.w_in)
        elif s.shortcut != "none":
            sc_entries = max(sc_entries, r["sc_tiles"] * rt * s.w_out)
    return dict(
        PLANE_DEPTH=max(r["pstride_in"] * r["words"] for r in blocks),
        MAX_W_IN=max(s.w_in for s in shapes), MAX_W_OUT=max(s.w_out for s in shapes),
        WCACHE_DEPTH=max(r["words"] * r["k"] ** 2 * cfg.lanes for r in rows),
        ACC_DEPTH=min(cfg.tile_rows, max(s.h_out for s in shapes)) * max(s.w_out for s in shapes),
        SC_ENTRIES=sc_entries,
        CODE_BYTES=max([D.c_tiles(s, cfg) * s.h_out * s.w_out * eb for s in shapes if not s.last] + [64]),
        IMG_ROWS_MAX=min(stem.h_in, (min(cfg.tile_rows, stem.h_out) - 1) * stem.stride + 3),
        MAX_TILES=max(r["c_tiles"] for r in rows),
    )


def config_h(prog: RxProgram, cfg: D.RxConfig, rows: list[dict], sizes: dict, params_bytes: int) -> str:
    c, h, w = prog.input_size
    ctype = {8: "uint8_t", 16: "uint16_t", 32: "uint32_t", 64: "uint64_t"}[cfg.word_bits]
    table = "\n".join("    {" + ", ".join(str(r[f]) for f in FIELDS) + "},  // " + r["name"] for r in rows)
    names = ", ".join(f'"{r["name"]}"' for r in rows)
    defs = "\n".join(f"#define {k} {v}" for k, v in sizes.items())
    return f"""// Generated by `fracbnn hw generate`: ImageNet accelerator configuration {cfg.name}. Do not edit; regenerate.
#pragma once
#include <cstdint>

// ---- design constants (fracbnn/hw/reactnet/design.py) ----
#define LANES {cfg.lanes}
#define WORD_BITS {cfg.word_bits}
typedef {ctype} word_t;
typedef {D.acc_type(prog.shapes)[0]} acc_t;   // per-lane S_M / S_L: |S| <= k*k*cin
#define TILE_ROWS {cfg.tile_rows}
#define WORDS_1X1 {cfg.words_1x1}
#define LSB_FILL_COLS {cfg.lsb_fill_cols}
#define BUS_BITS {cfg.bus_bits}
#define BUS_U64 (BUS_BITS / 64)
#define BUS_BYTES (BUS_BITS / 8)
#define CLOCK_MHZ {cfg.clock_mhz!r}
#define DRAM_LATENCY {cfg.dram_latency}
#define DRAM_BYTES_PER_CYCLE {cfg.dram_bytes_per_cycle!r}
#define WEIGHT_RELOAD_CYCLES {cfg.weight_reload_cycles}
#define RX_DEPTH_MSB {D.RX_DEPTH['msb']}
#define RX_DEPTH_LSB {D.RX_DEPTH['lsb']}
#define RX_DEPTH_EPILOGUE {D.RX_DEPTH['epilogue']}
#define CONST_TABLES {D.CONST_TABLES}
#define CODE_ENTRY_BYTES (LANES / 2)   // 4-bit codes of one pixel of one channel tile
#define CODE_ENTRY_U64 (LANES / 16)

// ---- this model ----
#define NUM_LAYERS {len(rows)}
#define IMG_C {c}
#define IMG_H {h}
#define IMG_W {w}
#define IMG_BYTES {c * h * w}
#define THERMO_RES {prog.resolution}
#define THERMO_BITS {prog.thermo_bits}
#define POOL_C {prog.layers[-1].shape.cout}
#define NUM_CLASSES {len(prog.fc_bias)}
#define PARAMS_BYTES {params_bytes}

// ---- buffer depths (maxima over the layers) ----
{defs}
#define TILE_WORDS ((LANES + WORD_BITS - 1) / WORD_BITS + 1)

struct bus_t {{ uint64_t w[BUS_U64]; }};   // one {cfg.bus_bits}-bit AXI beat

enum {{ KIND_STEM = 0, KIND_CONV3 = 1, KIND_CONV1 = 2 }};
enum {{ SC_NONE = 0, SC_IDENTITY = 1, SC_POOL = 2, SC_DUP = 3 }};

struct RxLayerDesc {{
    int {", ".join(FIELDS)};
}};

static const RxLayerDesc LAYERS[NUM_LAYERS] = {{
{table}
}};
static const char *const LAYER_NAMES[NUM_LAYERS] = {{ {names} }};

// per-layer cycle and DRAM counts of one image (C simulation only)
struct RxCount {{
    uint64_t msb, lsb, lsb_full, epilogue, compute, dram, dram_bytes, cycles;
}};
"""


def generate_rx_project(packed, out_dir: str | Path, cfg: D.RxConfig | None = None, board: str = "ultra96v2",
                        images: np.ndarray | None = None, n_images: int = 100, image_origin: str = "",
                        model_label: str = "") -> dict:
    """Write the project; returns the project metadata (also saved as hw_project.json)."""
    from ...deploy.preprocess import sample_images

    if board not in BOARDS:
        raise FracBNNError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    cfg = cfg or D.proposed_imagenet()
    check_config(cfg)
    clock = BOARDS[board]["clock_mhz"]
    if clock != cfg.clock_mhz:
        raise FracBNNError(f"the configuration's clock ({cfg.clock_mhz} MHz) differs from the board's ({clock} MHz)")
    out = check_output_dir(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / PROJECT_FILE).is_file():
        raise FracBNNError(f"{out} exists and is not a fracbnn hw project; choose an empty or new directory")
    prog = rx_program(packed)
    rows = layer_rows(prog, cfg)
    if images is None:
        images, image_origin = sample_images(packed, n_images)
    images = np.ascontiguousarray(images, np.uint8)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(prog.input_size) or len(images) < 1:
        raise FracBNNError(f"test images must have shape (N, {', '.join(map(str, prog.input_size))}), N >= 1")
    logits, gates = golden_logits_and_gates(packed, prog, cfg, images)
    params = b"".join(tile_params(layer, cfg) for layer in prog.layers)
    sizes = buffer_sizes(prog, cfg, rows)

    (out / "csim_result.json").unlink(missing_ok=True)  # never keep a previous model's results or binary
    shutil.rmtree(out / "build", ignore_errors=True)
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    (out / "host").mkdir(exist_ok=True)
    for stale in ("fracbnn_params.h", "tb_data.h"):   # a CIFAR project regenerated as ImageNet
        (src / stale).unlink(missing_ok=True)
    shutil.copyfile(TEMPLATES / "rx_kernel.cpp", src / "fracbnn_kernel.cpp")
    shutil.copyfile(INT_HEADER, src / "fracbnn_int.h")
    shutil.copyfile(TEMPLATES / "rx_tb.cpp", src / "tb.cpp")
    (src / "fracbnn_config.h").write_text(config_h(prog, cfg, rows, sizes, len(params)))
    (out / "params.bin").write_bytes(params)
    (out / "tb_images.bin").write_bytes(images.tobytes())
    (out / "tb_logits.bin").write_bytes(logits.astype("<i8").tobytes())
    fc = np.concatenate([np.asarray(prog.fc_weight, "<i8").reshape(-1), np.asarray(prog.fc_bias, "<i8")])
    (out / "fc.bin").write_bytes(fc.tobytes())
    part = BOARDS[board]["part"]
    # the testbench reads its .bin files from the project directory (its second argument)
    (out / "csim.tcl").write_text(_tcl(part, clock, synth=False, csim_argv='"[pwd]/csim_result.json [pwd]"'))
    (out / "synth.tcl").write_text(_tcl(part, clock, synth=True))
    n_classes, pool_c = len(prog.fc_bias), prog.layers[-1].shape.cout
    driver = (TEMPLATES / "rx_pynq.py").read_text()
    for k, v in {"@IMG_SHAPE@": repr(tuple(prog.input_size)), "@NUM_CLASSES@": str(n_classes),
                 "@POOL_C@": str(pool_c), "@PARAMS_BYTES@": str(len(params)),
                 "@CODE_BYTES@": str(sizes["CODE_BYTES"]), "@BUS_BYTES@": str(cfg.bus_bits // 8),
                 "@LOGIT_DENOMINATOR@": str(prog.logit_denominator)}.items():
        driver = driver.replace(k, v)
    (out / "host" / "fracbnn_pynq.py").write_text(driver)
    shutil.copyfile(TEMPLATES / "pynq_ip.py", out / "host" / "pynq_ip.py")
    meta = {
        "format": "fracbnn.hw-project", "version": 1, "family": "reactnet", "board": board, "part": part,
        "clock_mhz": clock, "config": cfg.to_dict(), "model": model_label,
        "layers": [s.to_dict() for s in prog.shapes], "layer_table": rows, "buffers": sizes,
        "params_bytes": len(params), "thermo_bits": prog.thermo_bits, "coef_bits": coefficient_bits(prog),
        "resolution": prog.resolution,
        "input_size": list(prog.input_size), "num_classes": n_classes,
        "logit_denominator": int(prog.logit_denominator),
        "test_images": {"count": int(len(images)), "origin": image_origin or "given by the caller"},
        "gates": gates,
    }
    (out / PROJECT_FILE).write_text(json.dumps(meta, indent=1))
    readme = (TEMPLATES / "rx_README.md.in").read_text()
    for k, v in {"@MODEL@": model_label or "the packed model", "@PART@": part, "@CLOCK@": f"{clock:g}",
                 "@N@": str(len(images)), "@PARAMS_BYTES@": f"{len(params):,}", "@LAYERS@": str(len(rows)),
                 "@SIZE@": "x".join(map(str, prog.input_size[1:]))}.items():
        readme = readme.replace(k, v)
    (out / "README.md").write_text(readme)
    return meta


def rx_from_project(meta: dict) -> tuple[D.RxConfig, list]:
    """The configuration and layer shapes a ReActNet project was generated with (one line if damaged)."""
    from ..generate import damaged
    from .program import RxShape

    with damaged("the configuration"):
        cfg = D.RxConfig(**{k: v for k, v in meta["config"].items() if k != "dram_bytes_per_cycle"})
    with damaged("the layer list"):
        shapes = [RxShape(**l) for l in meta["layers"]]
    with damaged("the gate statistics"):
        gates = meta.get("gates") or {}
        for name, g in gates.items():
            float(g["gate_density"])
    return cfg, shapes
