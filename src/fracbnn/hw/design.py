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


def proposed_ultra96(lsb_lanes: bool = False) -> HwConfig:
    """Ours: same 16x9x64-bit binary array, segmentable to 2 x 32 bits, LSB skipping per tile (default) or
    per lane (``lsb_lanes``: each lane walks its own list of open pixels; docs/hw.md)."""
    return HwConfig(name="fracbnn-ultra96-lanes" if lsb_lanes else "fracbnn-ultra96", style="fracbnn", lanes=16,
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
