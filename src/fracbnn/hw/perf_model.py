"""Analytic cycle and resource model of the CIFAR FracBNN accelerator.

Two loop structures share one parameterisation (:class:`HwConfig`):

* ``style="published"`` mimics the published Ultra96 design loop by loop:
  one 3x3 binary engine with ``lanes`` output channels, channels packed
  ``word_bits`` per word and zero-padded, every convolution swept over a
  (H+1)x(H+1) line-buffer grid at its *input* resolution, the MSB and the LSB
  pass both as full sweeps, and separate loops for quantize+pack (over the
  whole 64-channel buffer), batch-norm/RPReLU/shortcut and the down-sampling
  shortcut.
* ``style="fracbnn"`` is the design ``fracbnn hw generate`` writes: the same
  binary engine but its ``word_bits``-wide popcount splits into segments of
  ``min_segment_bits`` so a 16-channel layer computes 4 adjacent pixels per
  cycle; convolutions run at output resolution; the LSB pass only visits
  tiles (``slots`` adjacent output pixels x ``lanes`` output channels) with at
  least one open gate; one fused epilogue loop per layer (BN, RPReLU,
  residual, BN, 2-bit quantize, pack) over ``lanes x slots`` units.

Every pipelined loop costs ``trip x II + depth`` per entry (the same rule the
generated C simulation counts). All formulas are documented in docs/hw.md;
the functions here are the single source of those numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .design import (DEPTH, PART, TAPS, HwConfig, buffer_geometry, lsb_tiles, proposed_ultra96,  # noqa: F401
                     published_ultra96, segment_plan, with_overrides)
from .layers import ConvLayer
from .widths import CONST_TABLES, charged_bits

#: Figures of the published CIFAR-10 design (SPEC section 5, as quoted).
PUBLISHED = {"fps": 2806.9, "lut": 51444, "dsp": 126, "bram18k": 212, "clock_mhz": 250.0}

# ---------------------------------------------------------------------------
# cycles


@dataclass
class Loop:
    loop: str
    trip: int          # total iterations over all entries
    ii: int = 1
    depth: int = 0
    entries: int = 1   # how many times the pipeline is entered (each adds its depth)

    @property
    def cycles(self) -> int:
        return int(round(self.trip * self.ii + (self.depth * self.entries if self.trip else 0)))

    def to_dict(self) -> dict:
        return {"loop": self.loop, "trip": self.trip, "ii": self.ii, "depth": self.depth, "entries": self.entries,
                "cycles": self.cycles}


@dataclass
class CycleReport:
    config: HwConfig
    layers: list[dict] = field(default_factory=list)  # {"name", "loops": [Loop], "cycles", ...}

    @property
    def cycles(self) -> int:
        return sum(l["cycles"] for l in self.layers)

    @property
    def latency_us(self) -> float:
        return self.cycles / self.config.clock_mhz

    @property
    def fps(self) -> float:
        return self.config.clock_mhz * 1e6 / self.cycles

    def to_dict(self) -> dict:
        return {"cycles": self.cycles, "latency_us": self.latency_us, "fps": self.fps,
                "layers": [{**{k: v for k, v in l.items() if k != "loops"},
                            "loops": [lp.to_dict() for lp in l["loops"]]} for l in self.layers]}



def cycle_model(layers: list[ConvLayer], cfg: HwConfig, lsb_density: dict | float | None = None,
                n_classes: int = 10, image_channels: int = 3, lsb_entries: dict | None = None) -> CycleReport:
    """Cycles per layer and in total for one image.

    ``lsb_density`` is the share of LSB work items that run: per layer name
    or one number (default 1.0). For the fracbnn style an item is a tile of
    ``slots`` adjacent output pixels x ``lanes`` channels with >= 1 open gate;
    the published style ignores it (it always sweeps). ``lsb_entries`` (per
    layer, optional) is the mean number of groups whose LSB loop runs at all
    (a group with no open tile skips the loop and its pipeline fill); default:
    every group.
    """
    if cfg.style == "published":
        return _published_cycles(layers, cfg, n_classes, image_channels)
    return _fracbnn_cycles(layers, cfg, lsb_density, image_channels, lsb_entries or {})


def _density(lsb_density, name: str) -> float:
    if lsb_density is None:
        return 1.0
    if isinstance(lsb_density, (int, float)):
        return float(lsb_density)
    return float(lsb_density.get(name, 1.0))


def _fracbnn_cycles(layers, cfg, lsb_density, image_channels, lsb_entries) -> CycleReport:
    # the fc loop runs over channels with all classes unrolled: its trip does not depend on the class count
    rep = CycleReport(cfg)
    first, last = layers[0], layers[-1]
    cols = 2 * cfg.slots + 1  # plane banks per row: the encoder writes this many pixels per cycle
    rep.layers.append({"name": "input", "loops": [
        Loop("load", math.ceil(image_channels * first.h_in * first.w_in / cfg.axi_bytes), 1, DEPTH["load"]),
        Loop("encode", first.h_in * math.ceil(first.w_in / cols), 1, DEPTH["pack"])]})
    for layer in layers:
        seg, slots, words = segment_plan(layer.cin, layer.w_out, cfg)
        groups = math.ceil(layer.cout / cfg.lanes)
        tiles = layer.h_out * math.ceil(layer.w_out / slots)
        loops = [Loop("msb", groups * tiles * words, 1, DEPTH["conv"], groups)]
        d = None
        if layer.kind == "frac":
            d = _density(lsb_density, layer.name) if cfg.lsb_skip else 1.0
            # d: share of the full sweep (groups x tiles x words) that runs: the open-tile density in the
            # tile design, the busiest lane's list cycles over the full sweep in the per-lane design
            entries = lsb_entries.get(layer.name, groups if not cfg.lsb_lanes else 1) if cfg.lsb_skip else groups
            loops.append(Loop("lsb", round(d * groups * tiles * words), 1, DEPTH["conv"], entries))
        if layer.residual == "downsample":
            # 2x2 average of the incoming residual, one input pixel per cycle per unit
            loops.append(Loop("shortcut", 4 * _unit_trip(layer.h_out * layer.w_out, layer.cin, cfg), 1,
                              DEPTH["pool"]))
        loops.append(Loop("epilogue", _epilogue_trip(layer, cfg), 1, DEPTH["epilogue"]))
        row = {"name": layer.name, "loops": loops, "segment_bits": seg, "slots": slots, "words": words,
               "groups": groups, "tiles_per_group": tiles}
        if d is not None:
            row["lsb_density"] = d
        rep.layers.append(row)
    rep.layers.append({"name": "head", "loops": [
        Loop("pool", last.h_out * last.w_out * math.ceil(last.cout / cfg.units), 1, DEPTH["pool"]),
        Loop("fc", last.cout, 1, DEPTH["fc"])]})
    for l in rep.layers:
        l["cycles"] = sum(lp.cycles for lp in l["loops"])
    return rep


def _unit_trip(pixels: int, channels: int, cfg: HwConfig) -> int:
    """Iterations to visit ``pixels`` x ``channels`` with ``units`` (channel, pixel) pairs per cycle."""
    ppc = max(1, cfg.units // channels)      # pixels per cycle
    passes = math.ceil(channels / cfg.units)  # channel passes per pixel
    return math.ceil(pixels / ppc) * passes


def _epilogue_trip(layer: ConvLayer, cfg: HwConfig) -> int:
    """Iterations of the fused epilogue over the layer's outputs."""
    return _unit_trip(layer.h_out * layer.w_out, layer.cout, cfg)


def _published_words(layer: ConvLayer, cfg: HwConfig, image_channels: int) -> int:
    if layer.kind == "input":  # one colour's thermometer bits per zero-padded word
        per = layer.cin // image_channels
        return image_channels * math.ceil(per / cfg.word_bits)
    return math.ceil(layer.cin / cfg.word_bits)


def _published_cycles(layers, cfg, n_classes, image_channels) -> CycleReport:
    rep = CycleReport(cfg)
    hmax = max(l.h_in for l in layers)
    cmax = max(l.cout for l in layers)
    first, last = layers[0], layers[-1]
    rep.layers.append({"name": "input", "loops": [
        Loop("init", (hmax + 1) ** 2, 1, DEPTH["init"]),
        Loop("load", image_channels * first.h_in * first.w_in, 1, DEPTH["load"])]})
    for layer in layers:
        groups = math.ceil(layer.cout / cfg.lanes)
        words = _published_words(layer, cfg, image_channels)
        # the engine sweeps the (H+1)^2 line-buffer grid at input resolution, MSB then LSB
        sweep = (layer.h_in + 1) * (layer.w_in + 1)
        calls = groups * words * 2
        loops = []
        if layer.kind == "frac":
            loops.append(Loop("pack", math.ceil(cmax / cfg.lanes) * layer.h_in * layer.w_in, 1, DEPTH["pack"]))
        if layer.residual == "downsample":
            tiles_in = math.ceil(layer.cin / cfg.lanes)
            half = (hmax + 1) // 2
            loops.append(Loop("shortcut_init", half * half, 1, DEPTH["init"]))
            loops.append(Loop("shortcut", tiles_in * layer.h_out * layer.w_out * 4, 1, DEPTH["pool"], tiles_in))
            loops.append(Loop("shortcut_copy", tiles_in * layer.h_out * layer.w_out, 1, DEPTH["copy"], tiles_in))
        loops.append(Loop("msb+lsb sweeps", calls * sweep, 1, DEPTH["conv"], calls))
        loops.append(Loop("epilogue", groups * layer.h_out * layer.w_out, 1, DEPTH["epilogue"], groups))
        rep.layers.append({"name": layer.name, "loops": loops, "groups": groups, "words": words})
    tiles = math.ceil(last.cout / cfg.lanes)
    rep.layers.append({"name": "head", "loops": [
        Loop("pool_init", tiles * cfg.lanes, 1, DEPTH["init"], tiles),
        Loop("pool", tiles * last.h_out * last.w_out, 1, DEPTH["pool"], tiles),
        Loop("pool_out", tiles * cfg.lanes, 1, DEPTH["copy"], tiles),
        Loop("fc", n_classes + last.cout + n_classes, 1, DEPTH["fc"], 3)]})
    for l in rep.layers:
        l["cycles"] = sum(lp.cycles for lp in l["loops"])
    return rep


# ---------------------------------------------------------------------------
# resources

#: Assumed unit costs (UltraScale+ fabric; see docs/hw.md for the reasoning).
UNIT = {
    "fixed_op_lut_per_bit": 3,   # ap_fixed add with round + saturate: adder, incrementer, clamp mux
    "int_op_lut_per_bit": 1,     # plain integer add/compare on the carry chain
    "axi_master_lut": 1200, "axi_master_ff": 1600,
    "axi_lite_lut": 300, "axi_lite_ff": 400,
    "control_lut_per_loop": 25, "control_ff_per_loop": 30,
    "lutram_max_depth": 64,      # shallower memories go to LUTs (ROM64/RAM64), deeper ones to BRAM18K
}

BRAM18K_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def popcount_luts(n: int) -> int:
    """LUT6 count of XNOR + popcount over ``n`` bit pairs.

    First level: one LUT6 takes 3 XNOR pairs and gives one bit of their
    2-bit count (2 LUTs per 3 pairs); then a binary adder tree where adding
    two b-bit values costs b LUTs (the carry runs in CARRY8).
    """
    vals, bits = math.ceil(n / 3), 2
    luts = 2 * vals
    while vals > 1:
        pairs = vals // 2
        luts += pairs * bits
        vals = vals - pairs
        bits += 1
    return luts


def adder_tree_luts(n: int, bits: int) -> int:
    """LUTs to add ``n`` values of ``bits`` bits with a binary tree (b LUTs per b-bit add)."""
    luts = 0
    while n > 1:
        pairs = n // 2
        luts += pairs * bits
        n -= pairs
        bits += 1
    return luts


def bram18k(depth: int, width: int) -> int:
    """BRAM18K blocks for one memory of ``depth`` x ``width`` bits (best aspect ratio)."""
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in BRAM18K_SHAPES)


def bram18k_dual_read(depth: int, width: int) -> int:
    """BRAM18K blocks for a depth x width memory read at two addresses per cycle (true dual port: ports of
    at most 1K x 18, so a 32-bit word needs two blocks side by side)."""
    return math.ceil(width / 18) * math.ceil(depth / 1024)


def memory(depth: int, width: int, partitions: int = 1) -> tuple[int, int]:
    """(LUT, BRAM18K) of ``partitions`` independent memories of depth x width."""
    if depth <= 0 or width <= 0 or partitions <= 0:
        return 0, 0
    if depth <= UNIT["lutram_max_depth"]:
        return partitions * width * math.ceil(depth / 64), 0
    return 0, partitions * bram18k(depth, width)


def memory_rw(depth: int, width: int, partitions: int = 1) -> tuple[int, int]:
    """(LUT, BRAM18K) of ``partitions`` memories of depth x width that are written and read in the same cycle
    (simple dual port). Depth <= 64 goes to distributed RAM: a RAM32M (4 LUTs) holds 32 x 6 bits with a
    separate write address, a RAM64M (4 LUTs) 64 x 3 bits; deeper ones to BRAM18K as :func:`memory`."""
    if depth <= 0 or width <= 0 or partitions <= 0:
        return 0, 0
    if depth <= 32:
        return partitions * 4 * math.ceil(width / 6), 0
    if depth <= UNIT["lutram_max_depth"]:
        return partitions * 4 * math.ceil(width / 3), 0
    return 0, partitions * bram18k(depth, width)


def _row(name, lut=0, ff=0, bram=0, dsp=0, formula=""):
    return {"component": name, "lut": int(lut), "ff": int(ff), "bram18k": int(bram), "dsp": int(dsp),
            "formula": formula}


def resource_model(layers: list[ConvLayer], cfg: HwConfig, n_classes: int = 10, image_channels: int = 3,
                   widths: dict | None = None) -> dict:
    """Estimated LUT / FF / BRAM18K / DSP with a per-component breakdown.

    ``widths``: the integer widths the generated kernel declares (``widths.declared_widths`` of the model,
    saved in hw_project.json); the fracbnn design is then charged exactly those (``charged_bits``, returned
    too). Without them it is charged the configuration's nominal widths.
    """
    if cfg.style == "published":
        rows, charged = _published_resources(layers, cfg, n_classes, image_channels), None
    else:
        charged = charged_bits(cfg, widths)
        rows = _fracbnn_resources(layers, cfg, n_classes, image_channels, charged)
    totals = {k: sum(r[k] for r in rows) for k in ("lut", "ff", "bram18k", "dsp")}
    util = {k: totals[k] / PART[k] for k in totals}
    return {"components": rows, "totals": totals, "utilisation": util,
            "fits": all(v <= 1.0 for v in util.values()), "part": PART["name"], "charged_bits": charged,
            "widths_from": "declared by the generated kernel" if widths is not None else "configuration defaults"}


def _common_tail(rows, cfg, layers, n_classes, loops, axi_masters, fc_bits=None):
    last = layers[-1]
    lb = math.ceil(math.log2(max(2, last.h_out * last.w_out))) + cfg.acc_bits
    fc_lut, fc_bram = memory(last.cout, fc_bits or cfg.param_bits, n_classes)
    rows.append(_row("fc", n_classes * 2 * lb + fc_lut, n_classes * 2 * lb, fc_bram, n_classes,
                     "n_classes x (1 DSP MAC + 2 x accumulator-width LUT) + weight ROM"))
    rows.append(_row("axi + control",
                     axi_masters * UNIT["axi_master_lut"] + UNIT["axi_lite_lut"] + loops * UNIT["control_lut_per_loop"],
                     axi_masters * UNIT["axi_master_ff"] + UNIT["axi_lite_ff"] + loops * UNIT["control_ff_per_loop"],
                     0, 0, f"{axi_masters} m_axi + 1 s_axilite adapters + {loops} loop controllers"))


def _published_resources(layers, cfg, n_classes, image_channels):
    P, W = cfg.lanes, cfg.word_bits
    pc_bits = math.ceil(math.log2(W)) + 1
    hmax = max(l.h_in for l in layers) + 1        # line-buffer grid side (33)
    cmax = max(l.cout for l in layers)
    frac = [l for l in layers if l.kind == "frac"]
    rows = []
    rows.append(_row("binary MAC array", P * TAPS * popcount_luts(W), P * TAPS * pc_bits, 0, 0,
                     f"lanes x 9 x popcount_luts({W})"))
    per_lane = adder_tree_luts(TAPS, pc_bits + 1) + TAPS * pc_bits + 2 * cfg.acc_bits
    rows.append(_row("tap accumulate + gate", P * per_lane, P * 2 * cfg.acc_bits, 0, P,
                     "lanes x (9-input adder tree + tap masks + accumulate + compare); 1 DSP/lane scales the gate"))
    weight_depth = sum(math.ceil(l.cout / P) * _published_words(l, cfg, image_channels) for l in layers)
    lut, bram = memory(weight_depth, W, P * TAPS)
    rows.append(_row("weight ROM", lut, 0, bram, 0, f"lanes x 9 partitions of {weight_depth} x {W} bits"))
    rows.append(_row("line buffer + window", 2 * W * math.ceil(hmax / 4), 2 * hmax * W + TAPS * W, 0, 0,
                     "2 rows x word registers; column select mux"))
    msb_words = _published_words(layers[0], cfg, image_channels)
    l1, b1 = memory(hmax * hmax, W, msb_words)
    l2, b2 = memory(hmax * hmax, cfg.residual_bits, cmax)
    l3, b3 = memory(hmax * hmax, cfg.acc_bits, 2 * P)
    l4, b4 = memory(((hmax // 2) ** 2), cfg.residual_bits, P)
    mux = 3 * P * cfg.residual_bits * math.ceil(math.ceil(cmax / P) / 4)
    rows.append(_row("feature buffers", l1 + l2 + l3 + l4 + mux, 0, b1 + b2 + b3 + b4, 0,
                     "packed fmap words + residual (cmax channels) + 2 x lanes conv outputs + pool temp, "
                     "each partition (H+1)^2 deep; bank muxes"))
    op = UNIT["fixed_op_lut_per_bit"] * cfg.residual_bits
    rows.append(_row("epilogue (BN/RPReLU/shortcut)", P * 7 * op, P * 7 * cfg.residual_bits, 0,
                     P * cfg.epilogue_mults, "lanes x (7 rounded+saturated fixed-point ops; 5 multipliers)"))
    rows.append(_row("stem BN", P * op, P * cfg.residual_bits, 0, P, "lanes x (1 op, 1 multiplier)"))
    rows.append(_row("quantize + pack", P * op + 2 * W, 2 * W, 0, 0, "lanes x 1 op + 2 planes x word bit select"))
    rows.append(_row("shortcut pool", P * op, P * cfg.residual_bits, 0, 0, "lanes x 1 op"))
    rows.append(_row("final pool", P * 2 * cfg.residual_bits, P * 2 * cfg.residual_bits, 0, 0,
                     "lanes x 32-bit accumulate"))
    entries = sum(math.ceil(l.cout / P) for l in frac)
    n_params = 8  # bn_a w/b, bn_c w/b, rprelu in/out/slope, gate threshold
    rows.append(_row("parameter ROMs", P * n_params * cfg.param_bits * math.ceil(entries / 64), 0, 0, 0,
                     f"lanes x {n_params} params x {cfg.param_bits} bits x ceil({entries}/64)"))
    loops = 5 * len(layers) + 6
    _common_tail(rows, cfg, layers, n_classes, loops, axi_masters=2)
    return rows


def _fracbnn_resources(layers, cfg, n_classes, image_channels, cw):
    P, W, S, U = cfg.lanes, cfg.word_bits, cfg.slots, cfg.units
    pc_bits = math.ceil(math.log2(W)) + 1
    seg_bits = math.ceil(math.log2(cfg.min_segment_bits)) + 1
    rows = []
    seg_over = (S - 1) * seg_bits
    rows.append(_row("binary MAC array", P * TAPS * (popcount_luts(W) + seg_over), P * TAPS * (pc_bits + seg_over), 0,
                     0, f"lanes x 9 x (popcount_luts({W}) + segment split {seg_over})"))
    per_slot = adder_tree_luts(TAPS, pc_bits + 1) + TAPS * pc_bits + 2 * cfg.acc_bits
    rows.append(_row("tap accumulate + gate", P * S * per_slot, P * S * 2 * cfg.acc_bits, 0, 0,
                     "lanes x slots x (9-input adder tree + tap masks + accumulate + integer gate compare)"))
    plans = {l.name: segment_plan(l.cin, l.w_out, cfg) for l in layers}
    weight_depth = sum(math.ceil(l.cout / P) * plans[l.name][2] for l in layers)
    lut, bram = memory(weight_depth, W, P * TAPS)
    rows.append(_row("weight ROM", lut, 0, bram, 0, f"lanes x 9 partitions of {weight_depth} x {W} bits"))
    # Feature planes: banked by (row mod 3, col mod 2S+1) so one cycle reads the 3 x (2S+1) window.
    # The MSB plane also holds the thermometer-encoded image (stem words), the LSB plane one word.
    cols = 2 * S + 1
    banks = 3 * cols
    body = [l for l in layers if l.kind == "frac"]
    geo = buffer_geometry(layers, cfg)
    words = max(plans[l.name][2] for l in layers)
    l1, b1 = memory(geo["msb_depth"], W, banks)
    # per-lane design: the LSB pass reads the lanes' own copies (below), not a shared banked LSB plane
    l2, b2 = memory(geo["lsb_depth"], W, banks) if not cfg.lsb_lanes else (0, 0)
    img_px = layers[0].h_in * layers[0].w_in
    l2b, b2b = memory(math.ceil(img_px / cols), 8, image_channels * cols)  # image staging for the encoder
    l2, b2 = l2 + l2b, b2 + b2b
    xbar = banks * W * (math.ceil(cols / 4) + 1)
    thermo = cols * layers[0].cin  # the encoder writes `cols` pixels per cycle
    rows.append(_row("feature planes + window", l1 + l2 + xbar + thermo, banks * W, b1 + b2, 0,
                     f"MSB plane ({words} words/pixel)" + ("" if cfg.lsb_lanes else " and LSB plane") +
                     f" in {banks} banks each; (3:1 row, {cols}:1 col) window rotation; image staging + "
                     "thermometer encode"))
    if cfg.lsb_lanes and body:
        # Each lane keeps its own copy of the LSB plane as 9 tap memories addressed by output pixel (tap (u, v)
        # of pixel (i, j) holds input word (i s + u - 1, j s + v - 1)): one address per slot reads the whole
        # 3x3 window, no rotation; two read ports serve the two slots (a 64-bit word is two halves).
        seg = cfg.min_segment_bits
        depth = geo["copy_depth_segments"]
        copies = P * TAPS * bram18k_dual_read(depth, seg)
        rows.append(_row("LSB plane copies (per lane)", 0, 0, copies, 0,
                         f"lanes x 9 tap memories of {depth} x {seg} bits, two read ports each"))
        ulist = geo["ulist_max"]
        lut_l, bram_l = memory(ulist, 16 + cw["acc"], P * S)  # pixel index + the entry's 2 S_M
        ctrl = P * 4 * 16 * UNIT["int_op_lut_per_bit"]
        rows.append(_row("LSB work lists + lane cursors", lut_l + ctrl, P * 4 * 16 + P * S * 16, bram_l, 0,
                         f"lanes x slots lists of {ulist} (pixel, 2 S_M) entries; per lane group/entry/word counters "
                         "and list compares"))
    # acc/res/sc buffers as the kernel lays them out (fm_index): channels padded to a multiple of U when
    # wider than U, in the cyclic banks buffer_geometry gives (acc, res: U; sc: 2U, written and read per cycle)
    fm, sc = geo["acc_depth"], geo["sc_depth"]
    ab, rb, sb = geo["acc_banks"], geo["res_banks"], geo["sc_banks"]
    l3, b3 = memory(math.ceil(fm / ab), cw["acc"], ab)
    l4, b4 = memory(math.ceil(fm / rb), cw["res"], rb)
    l4s, b4s = memory_rw(math.ceil(sc / sb), cw["sc"], sb)
    l4, b4 = l4 + l4s, b4 + b4s
    tiles = geo["tile_max"] if body and not cfg.lsb_lanes else 0
    l5, b5 = memory(tiles, max(1, math.ceil(math.log2(max(2, tiles)))), 1)
    rows.append(_row("accumulator + residual + tile list", l3 + l4 + l5, 0, b3 + b4 + b5, 0,
                     f"accumulators {ab} banks x {math.ceil(fm / ab)} x {cw['acc']} bits, residual {rb} x "
                     f"{math.ceil(fm / rb)} x {cw['res']} bits, shortcut sums {sb} x {math.ceil(sc / sb)} x "
                     f"{cw['sc']} bits ({'BRAM' if b4s else 'LUTRAM'}); LSB tile list"))
    op = UNIT["int_op_lut_per_bit"] * cw["epilogue"]
    rows.append(_row("epilogue units", U * 8 * op, U * 6 * cw["epilogue"], 0, U * cw["epilogue_dsp"],
                     f"units x (8 integer add/compare/shift ops of {cw['epilogue']} bits, {cw['epilogue_dsp']} DSP48 "
                     "for the multipliers)"))
    rows.append(_row("shortcut pool", U * UNIT["int_op_lut_per_bit"] * cw["sc"], U * cw["sc"], 0, 0,
                     "units x 1 accumulate"))
    entries = sum(math.ceil(l.cout / U) * min(U, l.cout) for l in layers) // U
    rom_bits = sum(cw[k] for k in CONST_TABLES)  # the 8 per-channel tables at their widths
    rows.append(_row("parameter ROMs", U * rom_bits * max(1, math.ceil(entries / 64)), 0, 0, 0,
                     f"units x {len(CONST_TABLES)} tables of {rom_bits} bits together"))
    rows.append(_row("final pool", layers[-1].cout * cw["pool"], layers[-1].cout * cw["pool"], 0, 0,
                     f"one {cw['pool']}-bit accumulator per channel of the last layer"))
    loops = 4 * len(layers) + 4
    _common_tail(rows, cfg, layers, n_classes, loops, axi_masters=2, fc_bits=cw["FC_W"])
    return rows


# ---------------------------------------------------------------------------
# calibration


def calibration(layers: list[ConvLayer] | None = None) -> dict:
    """The published configuration on the published network (ResNet-20, width 1) through the model, next to
    the published figures. Always that network: the figures are for it, so other layers would not compare.
    ``layers``: that network's shapes as read from a trained model's program (the authors' ResNet-20);
    refused if they are not ResNet-20's. Default: the shapes built without a model."""
    from .layers import cifar_resnet_layers

    if layers is None:
        layers = cifar_resnet_layers(20)
    elif list(layers) != cifar_resnet_layers(20):
        raise ValueError("the published figures are for CIFAR ResNet-20 (width 1); these layers are another network")
    cfg = published_ultra96()
    cyc = cycle_model(layers, cfg)
    res = resource_model(layers, cfg)["totals"]
    model = {"fps": cyc.fps, "cycles": cyc.cycles, "lut": res["lut"], "dsp": res["dsp"], "bram18k": res["bram18k"],
             "ff": res["ff"]}
    rel = {k: model[k] / PUBLISHED[k] - 1.0 for k in ("fps", "lut", "dsp", "bram18k")}
    limits = {"fps": 0.15, "lut": 0.25, "dsp": 0.25, "bram18k": 0.25}
    return {"model": model, "published": {k: PUBLISHED[k] for k in ("fps", "lut", "dsp", "bram18k")},
            "relative_error": rel, "limits": limits, "within": all(abs(rel[k]) <= limits[k] for k in rel)}


