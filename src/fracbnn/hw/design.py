"""Design and geometry of the accelerator: its configuration and the per-layer plan derived from it.

One source for the parameters the generator writes into the kernel and the
cycle/resource model charges: :class:`HwConfig` (lanes, word width,
segmenting, epilogue units, LSB work-list style), the pipeline depths, the
target part, and the per-layer geometry rules (``segment_plan``,
``lsb_tiles``). Layer shapes come from the IR (``program.hw_program``) or,
without a model, from ``layers.cifar_resnet_layers``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from .layers import ConvLayer

#: xczu3eg-sbva484-1-e (Ultra96v2) resources.
PART = {"name": "xczu3eg-sbva484-1-e", "lut": 70560, "ff": 141120, "bram18k": 432, "dsp": 360}

TAPS = 9
#: Pipeline depths (cycles from first issue to last result) assumed per loop kind.
#: The generated kernel's cycle counters use the same table (trip x II + depth).
DEPTH = {"load": 4, "init": 2, "conv": 6, "epilogue": 10, "pack": 4, "pool": 4, "copy": 2, "fc": 6}


@dataclass(frozen=True)
class HwConfig:
    """Parallelism and structure of one accelerator configuration."""

    name: str = "fracbnn"
    style: str = "fracbnn"          # "fracbnn" | "published"
    lanes: int = 16                 # output channels computed in parallel
    word_bits: int = 64             # bits of one XNOR-popcount word
    min_segment_bits: int = 16      # narrowest popcount segment (== word_bits: no segmenting)
    epilogue_units: int | None = None  # channel x pixel units of the fused epilogue (default lanes x slots)
    lsb_skip: bool = True           # LSB pass only over work with an open gate
    lsb_lanes: bool = False         # LSB work lists per lane (open pixel x channel) instead of per tile
    clock_mhz: float = 250.0
    axi_bytes: int = 8              # image bytes per AXI beat
    acc_bits: int = 16              # conv accumulator width
    residual_bits: int = 32         # residual (full-precision path) word width in the fracbnn design
    param_bits: int = 16            # width of per-channel epilogue constants
    epilogue_mults: int = 3         # multipliers per epilogue unit (BN_a, PReLU slope, BN_c)

    def __post_init__(self):
        if self.style not in ("fracbnn", "published"):
            raise ValueError(f"unknown style {self.style!r}")
        for k in ("lanes", "word_bits", "min_segment_bits"):
            v = getattr(self, k)
            if v < 1 or v & (v - 1):
                raise ValueError(f"{k} must be a power of two, got {v}")
        if self.min_segment_bits > self.word_bits:
            raise ValueError("min_segment_bits cannot exceed word_bits")
        if self.lsb_lanes and (self.style != "fracbnn" or not self.lsb_skip):
            raise ValueError("per-lane LSB work lists need the fracbnn design with LSB skipping on")

    @property
    def slots(self) -> int:
        """Pixels the engine can compute per cycle (narrowest segmentation)."""
        return self.word_bits // self.min_segment_bits

    @property
    def units(self) -> int:
        return self.epilogue_units or self.lanes * self.slots

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(slots=self.slots, units=self.units)
        return d


def published_ultra96() -> HwConfig:
    """The published design: 16 lanes, 64-bit zero-padded words, full LSB sweeps."""
    return HwConfig(name="published-ultra96", style="published", lanes=16, word_bits=64, min_segment_bits=64,
                    lsb_skip=False, residual_bits=16, param_bits=12, epilogue_mults=5)


def proposed_ultra96(lsb_lanes: bool = True) -> HwConfig:
    """Ours: same 16x9x64-bit binary array, segmentable to 2 x 32 bits, LSB skipping per lane (default: each
    lane walks its own list of open pixels) or per tile (``lsb_lanes=False``: fewer BRAM, saves ~nothing on a
    trained network); docs/hw.md."""
    return HwConfig(name="fracbnn-ultra96" if lsb_lanes else "fracbnn-ultra96-tiles", style="fracbnn", lanes=16,
                    word_bits=64, min_segment_bits=32, epilogue_units=32, lsb_skip=True, lsb_lanes=lsb_lanes)




def segment_plan(cin: int, pixels_per_row: int, cfg: HwConfig) -> tuple[int, int, int]:
    """(segment bits, pixels per cycle, words per pixel) for a layer with ``cin`` input channels.

    The fracbnn engine picks the segment width (a power of two between
    ``min_segment_bits`` and ``word_bits``) that minimises cycles per row,
    ceil(row / slots) * words; ties go to the wider segment (fewer words).
    """
    best = None
    seg = cfg.word_bits
    while seg >= cfg.min_segment_bits:
        slots = min(cfg.word_bits // seg, pixels_per_row)
        words = math.ceil(cin / seg)
        cost = math.ceil(pixels_per_row / slots) * words
        if best is None or cost < best[0]:
            best = (cost, seg, slots, words)
        seg //= 2
    return best[1], best[2], best[3]


def lsb_tiles(layer: ConvLayer, cfg: HwConfig) -> tuple[int, int]:
    """(output-channel groups, tiles per group) of the LSB pass of ``layer``."""
    _, slots, _ = segment_plan(layer.cin, layer.w_out, cfg)
    return math.ceil(layer.cout / cfg.lanes), layer.h_out * math.ceil(layer.w_out / slots)


def with_overrides(cfg: HwConfig, **kw) -> HwConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})


def buffer_geometry(layers: list[ConvLayer], cfg: HwConfig) -> dict:
    """Depths of the kernel's on-chip buffers for these layers: the generator declares them, the resource
    model charges them (one source for both).

    Planes are banked by (row mod 3, column mod 2S+1), depths per bank in words of ``word_bits``;
    acc/res/sc hold C-channel maps in the kernel's ``fm_index`` layout (channels padded to a multiple of
    ``units`` when wider), in elements; the tile list and the per-lane lists in entries; the per-lane
    LSB plane copies (``lsb_lanes``) per tap memory, in ``word_bits`` words and in ``min_segment_bits``
    words (how the resource model stores them).
    """
    cols = 2 * cfg.slots + 1
    u = cfg.units
    plans = {l.name: segment_plan(l.cin, l.w_out, cfg) for l in layers}
    frac = [l for l in layers if l.kind == "frac"] or list(layers)

    def bank_depth(l):
        return math.ceil(l.h_in / 3) * math.ceil(l.w_in / cols) * plans[l.name][2]

    def padded(ch):  # channels fm_index spans: groups of min(ch, units)
        return ch if ch < u else math.ceil(ch / u) * u

    def tiles(l):
        return l.h_out * math.ceil(l.w_out / plans[l.name][1])

    return {
        # cyclic banks of acc/res/sc_buf: one per epilogue unit (the kernel's shortcut loop swaps the 2x2 source
        # order of half the pixels so its stride-2 residual reads need no more); sc_buf gets twice as many,
        # which makes each bank shallow enough for distributed RAM (LUTRAM) on the CIFAR shapes
        "acc_banks": u, "res_banks": u, "sc_banks": 2 * u,
        "msb_depth": max(bank_depth(l) for l in layers),
        "lsb_depth": max(bank_depth(l) for l in frac),
        "acc_depth": max(padded(l.cout) * l.h_out * l.w_out for l in layers),
        "sc_depth": max([padded(l.cin) * l.h_out * l.w_out for l in layers if l.residual == "downsample"] or [0]),
        "tile_max": max(tiles(l) for l in frac),
        "ulist_max": max(math.ceil(l.cout / cfg.lanes) * tiles(l) for l in frac),
        "copy_depth": max(l.h_out * l.w_out * plans[l.name][2] for l in frac),
        "copy_depth_segments": max(l.h_out * l.w_out * math.ceil(l.cin / cfg.min_segment_bits) for l in frac),
    }
