"""The ImageNet accelerator's design: configuration, geometry and the per-tile cycle and DRAM rules.

One source for what the generated kernel counts and what the model charges.
The kernel executes these loops and adds, per loop, trip count x II + depth
(``msb_cycles``, ``lsb_row_cycles``, ``epilogue_cycles``) and, per DRAM
transfer, ``dram_cycles(bytes)``; the model (``model.py``) adds the same terms
from the layer shapes and the measured open gates. docs/hw.md, "ImageNet".

Work is organised per layer, per output-channel tile (``lanes`` channels),
per row tile (``tile_rows`` output rows):

* MSB pass: for each input-channel word (3x3) or group of ``words_1x1`` words
  (1x1), one sweep of the tile; the 9 x ``word_bits`` popcount units of each
  lane are the 9 taps of a 3x3 window or 9 words of one pixel.
* LSB pass (gated layers): 3x3 layers with ``lsb_skip`` walk, per output row,
  each lane's own list of open pixels over a private copy of the three input
  rows of one word (LUTRAM, written ``lsb_fill_cols`` columns per cycle,
  double-buffered): per row and word max(fill, busiest lane) cycles, rows
  without an open gate cost nothing. 1x1 layers sweep fully (9 words per cycle
  beat any list a lane could walk one word at a time).
* Epilogue: one output pixel per cycle for all lanes; quantizes into the next
  layer's planes and 4-bit codes.

DRAM: weights and per-channel constants of the next tile are fetched while
the current tile computes (``weight_cache``: once per image); shortcut codes
are read and output codes written per row tile; a tile takes
max(compute, DRAM) cycles. The published design instead re-reads each word's
weights for every row tile and waits for every transfer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from .program import RxShape

#: pipeline depth (cycles from first issue to last result) of each loop kind, as the kernel counts them
RX_DEPTH = {"msb": 8, "lsb": 8, "epilogue": 12}
#: int64 per-channel tables fetched with each tile's weights: gate, sign, threshold, pos/neg mul/add, sc_mul
CONST_TABLES = 8


@dataclass(frozen=True)
class RxConfig:
    """Parallelism, buffering and memory system of one ImageNet accelerator configuration."""

    name: str = "fracbnn-imagenet-ultra96"
    style: str = "fracbnn"          # "fracbnn" | "published"
    lanes: int = 32                 # output channels in parallel
    word_bits: int = 32             # input channels per popcount word
    tile_rows: int = 7              # output rows per feature-map tile
    words_1x1: int = 9              # input words per cycle in the 1x1 engine (published: 1)
    lsb_skip: bool = True           # 3x3 LSB pass over each lane's open pixels only
    lsb_fill_cols: int = 4          # columns per cycle written into the lanes' LSB row copies
    weight_cache: bool = True       # next tile's weights prefetched on chip (else re-read per row tile, waited for)
    bus_bits: int = 512             # AXI data width
    clock_mhz: float = 250.0
    dram_gbytes_s: float = 3.2      # effective LPDDR4 bandwidth through one 128-bit HP port (docs/hw.md)
    dram_latency: int = 64          # cycles from request to first beat, paid once per transfer

    def __post_init__(self):
        if self.style not in ("fracbnn", "published"):
            raise ValueError(f"unknown style {self.style!r}")
        if self.lanes < 1 or self.word_bits not in (8, 16, 32, 64) or self.tile_rows < 1 or not 1 <= self.words_1x1 <= 9:
            raise ValueError("bad lanes, word_bits, tile_rows or words_1x1")
        if self.lsb_fill_cols < 3:
            raise ValueError("lsb_fill_cols must be >= 3 (a 3x3 window reads three distinct column banks)")

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram_gbytes_s * 1e9 / (self.clock_mhz * 1e6)

    @property
    def weight_reload_cycles(self) -> int:
        """Cycles to load one word's weight registers (lanes x 9 x word_bits) over the bus from the cache."""
        return math.ceil(self.lanes * 9 * self.word_bits / self.bus_bits)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dram_bytes_per_cycle"] = self.dram_bytes_per_cycle
        return d


def proposed_imagenet() -> RxConfig:
    return RxConfig()


def published_imagenet() -> RxConfig:
    """The published ImageNet design (SPEC section 5, cornell-zhang/FracBNN xcel-imagenet): 32 lanes of 32-bit
    words, 7-row tiles, a 512-bit bus, weights re-read per row tile, full MSB and LSB sweeps, 1x1 one word per
    cycle."""
    return RxConfig(name="published-imagenet-ultra96", style="published", words_1x1=1, lsb_skip=False,
                    weight_cache=False)


def with_overrides(cfg: RxConfig, **kw) -> RxConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})


# ---- geometry ---------------------------------------------------------------------------------------------

def words(l: RxShape, cfg: RxConfig) -> int:
    """Input-channel words per pixel."""
    return math.ceil(l.cin / cfg.word_bits)


def c_tiles(l: RxShape, cfg: RxConfig) -> int:
    return math.ceil(l.cout / cfg.lanes)


def row_tiles(l: RxShape, cfg: RxConfig) -> list[tuple[int, int]]:
    """(first output row, rows) of each row tile."""
    return [(y, min(cfg.tile_rows, l.h_out - y)) for y in range(0, l.h_out, cfg.tile_rows)]


def steps(l: RxShape, cfg: RxConfig) -> int:
    """Weight-register loads per sweep: words (3x3, stem) or groups of ``words_1x1`` words (1x1)."""
    w = words(l, cfg)
    return math.ceil(w / cfg.words_1x1) if l.k == 1 else w


def sweep_cycles(l: RxShape, rows: int) -> int:
    """One sweep over a row tile for one step: 3x3 streams its input rows with a 1-column halo each side."""
    if l.k == 1:
        return rows * l.w_out
    return ((rows - 1) * l.stride + 3) * (l.w_in + 2)


def lsb_fill_cycles(l: RxShape, cfg: RxConfig) -> int:
    """Cycles to copy one word of the three input rows of an output row into every lane's LSB copy."""
    return math.ceil((l.w_in + 2) / cfg.lsb_fill_cols)


def lanes_skip(l: RxShape, cfg: RxConfig) -> bool:
    """Does this layer's LSB pass walk per-lane open lists (else a full sweep, or none for the stem)?

    Only gated 3x3 layers, and only where the lists cost no more than a full sweep even with every gate open
    (on small maps the per-row fill and pipeline depth outweigh the halo rows a sweep streams): a static
    choice from the geometry, so the generator writes it into the layer table."""
    if not (cfg.lsb_skip and l.kind == "conv3" and l.gated):
        return False
    worst = sum(r * lsb_row_cycles(l, l.w_out, cfg) for _, r in row_tiles(l, cfg))
    full = sum(msb_cycles(l, r, cfg) for _, r in row_tiles(l, cfg))
    return worst <= full


# ---- cycles (the kernel counts the same terms) ---------------------------------------------------------

def msb_cycles(l: RxShape, rows: int, cfg: RxConfig) -> int:
    """The MSB pass of one (channel tile, row tile); the stem's only pass. Registers of the next step load
    while the current one sweeps (double-buffered), so a step takes max(sweep, reload)."""
    per = sweep_cycles(l, rows)
    if cfg.weight_cache:
        per = max(per, cfg.weight_reload_cycles)
    return steps(l, cfg) * per + RX_DEPTH["msb"]


def lsb_full_cycles(l: RxShape, rows: int, cfg: RxConfig) -> int:
    """A full LSB sweep of one (channel tile, row tile); 0 for the stem (1-bit thermometer input)."""
    return 0 if l.kind == "stem" else msb_cycles(l, rows, cfg)


def lsb_row_cycles(l: RxShape, busiest, cfg: RxConfig):
    """Per-lane lists, one output row whose busiest lane has ``busiest`` open pixels (0: the row is skipped).
    The kernel counts integers; the model may pass a mean over images (the formula is linear above the fill)."""
    if busiest == 0:
        return 0
    fill = lsb_fill_cycles(l, cfg)
    return fill + words(l, cfg) * max(fill, busiest) + RX_DEPTH["lsb"]


def epilogue_cycles(l: RxShape, rows: int) -> int:
    return rows * l.w_out + RX_DEPTH["epilogue"]


# ---- DRAM (bytes the kernel moves; cycles at the effective bandwidth) -------------------------------------

def dram_cycles(nbytes: int, cfg: RxConfig, transfers: int = 1) -> int:
    if nbytes <= 0:
        return 0
    return math.ceil(nbytes / cfg.dram_bytes_per_cycle) + transfers * cfg.dram_latency


def weight_bytes_per_tile(l: RxShape, cfg: RxConfig) -> int:
    """One channel tile's weights (lanes x words x k*k words of word_bits) and constants (int64 tables)."""
    return cfg.lanes * words(l, cfg) * l.k * l.k * cfg.word_bits // 8 + CONST_TABLES * cfg.lanes * 8


def code_bytes_per_pixel(cfg: RxConfig) -> int:
    """4-bit shortcut codes of one pixel of one channel tile (lanes nibbles)."""
    return cfg.lanes // 2


def shortcut_bytes(l: RxShape, rows: int, cfg: RxConfig) -> int:
    """Shortcut codes one (channel tile, row tile) reads: its input's codes (2x2 sources when pooled)."""
    if l.shortcut == "none":
        return 0
    src_rows = rows * 2 if l.shortcut == "pool" else rows
    src_cols = l.w_in if l.shortcut == "pool" else l.w_out
    return src_rows * src_cols * code_bytes_per_pixel(cfg)


def shortcut_tiles(l: RxShape, cfg: RxConfig, t: int) -> list[int]:
    """The input code tiles output tile ``t`` reads its shortcut from, one transfer each per row tile.

    One (tile t) unless the layer duplicates channels (c reads c mod cin) and cin is above ``lanes`` and
    not a multiple of it: then a tile's channels come from two or three input tiles. design.shortcut_bytes
    counts one tile's codes per row tile; multiply by len() of this for such layers.
    """
    if l.shortcut != "dup":
        return [t]
    out = []
    for i in range(cfg.lanes):
        c = t * cfg.lanes + i
        if c < l.cout and (c % l.cin) // cfg.lanes not in out:
            out.append((c % l.cin) // cfg.lanes)
    return out


def code_write_bytes(l: RxShape, rows: int, cfg: RxConfig) -> int:
    """Codes of the output a (channel tile, row tile) writes for the next layer's shortcut (none for the last)."""
    return 0 if l.last else rows * l.w_out * code_bytes_per_pixel(cfg)


def image_bytes(l: RxShape, rows: int, thermo_bits: int) -> int:
    """Image rows (uint8, all colours) the stem reads for one row tile."""
    colours = l.cin // thermo_bits
    return colours * min(l.h_in, (rows - 1) * l.stride + 3) * l.w_in


def acc_type(shapes: list[RxShape]) -> tuple[str, int]:
    """(C type, bits) of the per-lane accumulators S_M and S_L: |S| <= k*k*cin over the layers. The generator
    declares it, the resource model charges it."""
    need = max(l.k * l.k * l.cin for l in shapes).bit_length() + 1
    return ("int16_t", 16) if need <= 16 else ("int32_t", 32)
