"""Cycle, DRAM and resource model of the ImageNet (ReActNet) accelerator, and the published design in it.

Cycles follow design.py term by term, per (layer, channel tile, row tile), the
same terms the generated kernel counts in C simulation; the only data-dependent
term, the busiest lane of each row in the LSB pass, comes from measured gates
(``measure.gate_stats``) or, without images, from the expected maximum of
``lanes`` independent binomial counts at a gate density. docs/hw.md,
"ImageNet accelerator".
"""

from __future__ import annotations

import math

import numpy as np

from ..design import PART
from ..perf_model import UNIT, _row, adder_tree_luts, bram18k, memory_rw, popcount_luts
from .design import (CONST_TABLES, RxConfig, acc_type, c_tiles, code_write_bytes, dram_cycles, epilogue_cycles,
                     image_bytes, lanes_skip, shortcut_tiles, lsb_full_cycles, lsb_row_cycles, msb_cycles,
                     published_imagenet, row_tiles, shortcut_bytes, steps, sweep_cycles, weight_bytes_per_tile,
                     words)
from .program import RxShape


# ---------------------------------------------------------------------------
# the LSB pass without measured gates


def expected_busiest(pixels: int, density: float, lanes: int) -> float:
    """E[max over ``lanes`` lanes of Binomial(pixels, density)]: the busiest lane of a row when gates open
    independently (real gates are correlated, which the measured counts capture)."""
    if pixels <= 0 or density <= 0.0:
        return 0.0
    if density >= 1.0:
        return float(pixels)
    from math import comb

    k = np.arange(pixels + 1)
    pmf = np.array([comb(pixels, int(i)) for i in k], float) * density ** k * (1 - density) ** (pixels - k)
    cdf = np.clip(np.cumsum(pmf), 0.0, 1.0)
    return float(np.sum(1.0 - cdf[:-1] ** lanes))  # E[max] = sum_{k>=1} P(max >= k)


# ---------------------------------------------------------------------------
# cycles


def cycle_model(shapes: list[RxShape], cfg: RxConfig, gates: dict | None = None,
                densities: dict | float | None = None, thermo_bits: int = 32) -> dict:
    """Cycles per layer and per image. ``gates``: ``measure.gate_stats`` (busiest lanes per tile and row);
    ``densities``: gate density per layer name or one number, used where no measured counts exist
    (default 1.0: every gate open)."""
    if cfg.style == "published":
        return _published_cycles(shapes, cfg, thermo_bits)
    gates = gates or {}
    # the weights fetched during each tile are the next tile's, in global order (the next layer's first)
    order = [l for l in shapes for _ in range(c_tiles(l, cfg))]
    rows_out = []
    k = -1  # the tile's index in that order
    for l in shapes:
        d = densities.get(l.name) if isinstance(densities, dict) else densities
        if l.name in gates and d is None:
            d = gates[l.name].get("gate_density")
        busiest = gates.get(l.name, {}).get("busiest")
        if busiest is None and lanes_skip(l, cfg):  # one estimate for every row of the layer
            est = expected_busiest(l.w_out, 1.0 if d is None else d, cfg.lanes)
            busiest = [[est] * l.h_out] * c_tiles(l, cfg)
        acc = dict(msb=0.0, lsb=0.0, lsb_full=0.0, epilogue=0.0, compute=0.0, dram=0.0, dram_bytes=0, cycles=0.0)
        for t in range(c_tiles(l, cfg)):
            k += 1
            compute = 0.0
            dram = 0
            nbytes = 0
            for y0, r in row_tiles(l, cfg):
                m = msb_cycles(l, r, cfg)
                full = lsb_full_cycles(l, r, cfg)
                if lanes_skip(l, cfg):
                    lsb = sum(lsb_row_cycles(l, b, cfg) for b in busiest[t][y0:y0 + r])
                else:
                    lsb = full
                e = epilogue_cycles(l, r)
                acc["msb"] += m
                acc["lsb"] += lsb
                acc["lsb_full"] += full
                acc["epilogue"] += e
                compute += m + lsb + e
                for b in [shortcut_bytes(l, r, cfg)] * len(shortcut_tiles(l, cfg, t)) + [code_write_bytes(l, r, cfg)]:
                    dram += dram_cycles(b, cfg, 1)
                    nbytes += b
                if l.kind == "stem":
                    b = image_bytes(l, r, thermo_bits)
                    colours = l.cin // thermo_bits
                    for _ in range(colours):
                        dram += dram_cycles(b // colours, cfg, 1)
                    nbytes += b
            if k + 1 < len(order):  # the next tile's weights arrive while this one computes
                wb = weight_bytes_per_tile(order[k + 1], cfg)
                dram += dram_cycles(wb, cfg, 1)
                nbytes += wb
            if k == 0:  # the first tile's weights are fetched before anything can start
                wb = weight_bytes_per_tile(l, cfg)
                wc = dram_cycles(wb, cfg, 1)
                acc["cycles"] += wc
                acc["dram"] += wc
                nbytes += wb
            acc["compute"] += compute
            acc["dram"] += dram
            acc["dram_bytes"] += nbytes
            acc["cycles"] += max(compute, dram)
        if l.last:  # the pooled sums, int64 per channel
            pc = dram_cycles(l.cout * 8, cfg, 1)
            acc["cycles"] += pc
            acc["dram"] += pc
            acc["dram_bytes"] += l.cout * 8
        rows_out.append({"name": l.name, "kind": l.kind, **acc, "gate_density": d if l.gated else None,
                         "dram_bound": acc["dram"] > acc["compute"]})
    return _totals(rows_out, cfg)


def _totals(rows: list[dict], cfg: RxConfig) -> dict:
    cycles = sum(r["cycles"] for r in rows)
    fps = cfg.clock_mhz * 1e6 / cycles
    dram_bytes = sum(r["dram_bytes"] for r in rows)
    lsb, full = sum(r["lsb"] for r in rows), sum(r["lsb_full"] for r in rows)
    return {"layers": rows,
            "totals": {"cycles": cycles, "fps": fps, "latency_ms": cycles / cfg.clock_mhz / 1e3,
                       "dram_bytes": dram_bytes, "dram_gbytes_s": dram_bytes * fps / 1e9,
                       "dram_bandwidth_share": dram_bytes * fps / 1e9 / cfg.dram_gbytes_s,
                       "compute_cycles": sum(r["compute"] for r in rows),
                       "dram_bound_layers": [r["name"] for r in rows if r["dram_bound"]]},
            "lsb": {"cycles": lsb, "cycles_without_skipping": full, "cycles_saved": full - lsb,
                    "share_of_full_sweep": lsb / full if full else None}}


def _published_cycles(shapes: list[RxShape], cfg: RxConfig, thermo_bits: int) -> dict:
    """The published loop nest (bnn.cc): per channel tile, row tile and input word it reads that word's
    weights from DRAM and waits, then sweeps the MSB and the LSB plane; then it loads the tile's shortcut
    codes and runs the epilogue, which streams the output codes out as it goes."""
    rows_out = []
    for l in shapes:
        acc = dict(msb=0.0, lsb=0.0, lsb_full=0.0, epilogue=0.0, compute=0.0, dram=0.0, dram_bytes=0, cycles=0.0)
        step_bytes = cfg.lanes * l.k * l.k * cfg.word_bits // 8 * (cfg.words_1x1 if l.k == 1 else 1)
        consts = CONST_TABLES * cfg.lanes * 8
        for _t in range(c_tiles(l, cfg)):
            acc["cycles"] += dram_cycles(consts, cfg, 1)
            acc["dram"] += dram_cycles(consts, cfg, 1)
            acc["dram_bytes"] += consts
            for y0, r in row_tiles(l, cfg):
                n = steps(l, cfg)
                m = n * sweep_cycles(l, r)
                lsb = 0 if l.kind == "stem" else m  # the LSB plane swept like the MSB plane
                w_dram = n * dram_cycles(step_bytes, cfg, 1)  # each step's weights, fetched and waited for
                sc_bytes = shortcut_bytes(l, r, cfg) + (image_bytes(l, r, thermo_bits) if l.kind == "stem" else 0)
                sc = (dram_cycles(shortcut_bytes(l, r, cfg), cfg, 1) +
                      (dram_cycles(image_bytes(l, r, thermo_bits), cfg, l.cin // thermo_bits) if l.kind == "stem" else 0))
                e = epilogue_cycles(l, r)
                out_bytes = code_write_bytes(l, r, cfg)
                acc["msb"] += m
                acc["lsb"] += lsb
                acc["lsb_full"] += lsb
                acc["epilogue"] += e
                acc["compute"] += m + lsb + e
                acc["dram"] += w_dram + sc
                acc["dram_bytes"] += n * step_bytes + sc_bytes + out_bytes
                acc["cycles"] += w_dram + m + lsb + sc + max(e, dram_cycles(out_bytes, cfg, 1))
        if l.last:
            acc["cycles"] += dram_cycles(l.cout * 8, cfg, 1)
            acc["dram_bytes"] += l.cout * 8
        rows_out.append({"name": l.name, "kind": l.kind, **acc, "gate_density": None, "dram_bound": False})
    return _totals(rows_out, cfg)


# ---------------------------------------------------------------------------
# resources


def plane_words(shapes: list[RxShape], cfg: RxConfig) -> tuple[int, int]:
    """Words per bit plane of the two ping-pong feature-map buffers: layer i reads buffer i % 2 (the stem
    reads the image from DRAM and writes buffer 1)."""
    depth = [0, 0]
    for i, l in enumerate(shapes):
        out_words = math.ceil(l.cout / cfg.word_bits) * l.h_out * l.w_out
        if l.kind != "stem":
            depth[i % 2] = max(depth[i % 2], words(l, cfg) * l.h_in * l.w_in)
        if not l.last:
            depth[(i + 1) % 2] = max(depth[(i + 1) % 2], out_words)
    return depth[0], depth[1]


def resource_model(shapes: list[RxShape], cfg: RxConfig, n_classes: int = 1000, coef_bits: int | None = None,
                   thermo_bits: int = 32) -> dict:
    """LUT / FF / BRAM18K / DSP estimate with a per-component breakdown (unit costs as the CIFAR model).

    ``coef_bits``: widest epilogue multiplier coefficient of the model (from its tables); default 27."""
    P, W = cfg.lanes, cfg.word_bits
    pc_bits = math.ceil(math.log2(W)) + 1
    ours = cfg.style == "fracbnn"
    coef_bits = coef_bits or 27
    rows = []
    rows.append(_row("binary MAC array", P * 9 * popcount_luts(W), P * 9 * pc_bits, 0, 0,
                     f"lanes x 9 x popcount_luts({W})"))
    acc_bits = acc_type(shapes)[1]
    per_lane = adder_tree_luts(9, pc_bits + 1) + 9 * pc_bits + 2 * acc_bits
    rows.append(_row("tap/word accumulate + gate", P * per_lane, P * 2 * acc_bits, 0, 0,
                     "lanes x (9-input adder tree + valid-tap masks + accumulate + gate compare)"))
    if ours:
        rows.append(_row("1x1 word select", 9 * W, 0, 0, 0, "9 popcount inputs: window tap or pixel word"))
    regs = (2 if ours else 1) * P * 9 * W
    rows.append(_row("weight registers", 0, regs, 0, 0, f"{'2 x ' if ours else ''}lanes x 9 x {W} bits"))
    if ours and cfg.weight_cache:
        beats = max(math.ceil(weight_bytes_per_tile(l, cfg) * 8 / cfg.bus_bits) for l in shapes)
        b = 2 * bram18k(beats, cfg.bus_bits)
        rows.append(_row("weight cache (2 tiles)", 0, 0, b, 0,
                         f"2 x {beats} x {cfg.bus_bits} bits: the next channel tile's weights and constants"))
    d0, d1 = plane_words(shapes, cfg)
    # ours: both planes in 9 cyclic banks (the kernel's ARRAY_PARTITION: the 1x1 engine reads 9 words of a pixel
    # per cycle); the published design's line-buffer sweeps read one word per cycle
    banks = 9 if ours else 1
    bram_planes = 0
    for d in (d0, d1):
        bram_planes += 2 * banks * bram18k(math.ceil(d / banks), W)   # MSB and LSB plane
    lb = 2 * (max(l.w_in for l in shapes) + 2)
    rows.append(_row("feature planes (2 buffers x MSB/LSB) + line buffers", 2 * W * 4, lb * W + 9 * W,
                     bram_planes + 2 * bram18k(lb // 2, W), 0,
                     f"ping-pong planes of {d0:,} / {d1:,} words in {banks} cyclic banks each"))
    stem = shapes[0]
    img_rows = (cfg.tile_rows - 1) * stem.stride + 3
    colours = stem.cin // thermo_bits
    rows.append(_row("image rows + thermometer encode", 2 * stem.cin, stem.cin, bram18k(img_rows * stem.w_in, 8 * colours),
                     0, f"{img_rows} rows x {stem.w_in} x {colours} colours; {stem.cin} level compares"))
    gated3 = [l for l in shapes if lanes_skip(l, cfg)]
    if gated3:
        wmax = max(l.w_in for l in gated3)
        depth = math.ceil((wmax + 2) / cfg.lsb_fill_cols)
        lut, _ = memory_rw(depth, W, 2 * 3 * cfg.lsb_fill_cols)
        lists = 2 * math.ceil(math.log2(max(l.w_out for l in gated3) + 1)) * 2  # RAM128X1D per bit, 2 lists
        ctrl = 4 * 16 * UNIT["int_op_lut_per_bit"]
        rows.append(_row("LSB row copies + lists (per lane)", P * (lut + lists + ctrl), P * (4 * 16 + W * 3), 0, 0,
                         f"lanes x (2 x {3 * cfg.lsb_fill_cols} LUTRAM banks of {depth} x {W} bits, "
                         "2 open-pixel lists, cursors)"))
    tile_px = cfg.tile_rows * max(l.w_out for l in shapes)
    acc_mems = 2 if ours else 2  # S_M and the LSB sum (ours); MSB and LSB partial sums (published)
    rows.append(_row("accumulators (per lane)", 0, 0, P * acc_mems * bram18k(tile_px, acc_bits), 0,
                     f"lanes x {acc_mems} x {tile_px} x {acc_bits} bits"))
    sc_px = 2 * cfg.tile_rows * max(l.w_in for l in shapes if l.shortcut != "none")
    rows.append(_row("shortcut codes (2 row tiles) + output codes", 0, 0,
                     2 * bram18k(sc_px, 4 * P) + bram18k(max(l.w_out for l in shapes), 4 * P), 0,
                     f"2 x {sc_px} x {4 * P} bits in, one row of {4 * P} bits out"))
    ep_bits = 48
    dsp_unit = 1 + (coef_bits > 27)  # a x coefficient: one DSP48E2 (27 x 18) while the coefficient fits 27 bits
    op = UNIT["int_op_lut_per_bit"] * ep_bits
    rows.append(_row("epilogue + quantizers", P * (8 * op + 2 * 40), P * 6 * ep_bits, 0, P * (dsp_unit + 1),
                     f"lanes x (8 integer ops of {ep_bits} bits; {dsp_unit} DSP for a x coefficient, 1 for the "
                     "shortcut product; 2-bit and 4-bit quantizer compares)"))
    rows.append(_row("epilogue constants", 0, (2 if ours else 1) * P * CONST_TABLES * 64 if ours else P * 12 * 12,
                     0, 0, "registers of the current (and next) tile's per-channel tables"))
    last = shapes[-1]
    pl, _ = memory_rw(math.ceil(last.cout / P), 40, P)
    rows.append(_row("global pool", pl + P * 40, P * 40, 0, 0, f"lanes x {math.ceil(last.cout / P)} x 40-bit sums"))
    masters = 3  # the kernel's m_axi bundles: params; image + pooled sums; the two code buffers
    axi_lut = UNIT["axi_master_lut"] * cfg.bus_bits // 256
    axi_ff = UNIT["axi_master_ff"] * cfg.bus_bits // 256
    loops = 12
    rows.append(_row("axi + control", masters * axi_lut + UNIT["axi_lite_lut"] + loops * UNIT["control_lut_per_loop"],
                     masters * axi_ff + UNIT["axi_lite_ff"] + loops * UNIT["control_ff_per_loop"], 0, 0,
                     f"{masters} m_axi {cfg.bus_bits}-bit + s_axilite + {loops} loop controllers"))
    totals = {k: sum(r[k] for r in rows) for k in ("lut", "ff", "bram18k", "dsp")}
    util = {k: totals[k] / PART[k] for k in totals}
    return {"components": rows, "totals": totals, "utilisation": util, "fits": all(v <= 1 for v in util.values()),
            "part": PART["name"]}


def coefficient_bits(prog) -> int:
    """Widest signed epilogue multiplier coefficient (pos_mul, neg_mul, mul) of a program, in bits."""
    m = 1
    for l in prog.layers:
        for k in ("pos_mul", "neg_mul", "mul"):
            if k in l.consts and len(l.consts[k]):
                m = max(m, int(np.abs(np.asarray(l.consts[k], np.int64)).max()))
    return m.bit_length() + 1


# ---------------------------------------------------------------------------
# the published configuration


def published_comparison(shapes: list[RxShape], ours: RxConfig, gates=None, densities=None,
                         thermo_bits: int = 32, coef_bits: int | None = None) -> dict:
    """Both designs on the same layers at the same clock: images/s and the speed-up."""
    pub_cfg = published_imagenet()
    pub = cycle_model(shapes, pub_cfg, thermo_bits=thermo_bits)
    me = cycle_model(shapes, ours, gates, densities, thermo_bits)
    res = resource_model(shapes, pub_cfg, coef_bits=coef_bits, thermo_bits=thermo_bits)
    return {"config": pub_cfg.to_dict(), "fps": pub["totals"]["fps"], "cycles": pub["totals"]["cycles"],
            "dram_bytes": pub["totals"]["dram_bytes"], "resources": res["totals"],
            "layers": [{k: r[k] for k in ("name", "cycles", "msb", "lsb", "epilogue", "dram")} for r in pub["layers"]],
            "ours_fps": me["totals"]["fps"], "speedup_vs_published_fps": me["totals"]["fps"] / pub["totals"]["fps"]}
