"""Open gates of a ReActNet program on images, as the ImageNet design's LSB pass sees them.

The per-lane LSB lists cost, per output row, the busiest lane's open pixels
(design.lsb_row_cycles). ``busiest_lanes`` turns one image's gate map into
those counts; ``gate_stats`` runs the golden engine once and returns them per
gated 3x3 layer (mean over images, per channel tile and row) with the gate
densities, for the generator's project file and the cycle model.
"""

from __future__ import annotations

import numpy as np

from .design import RxConfig, c_tiles, lanes_skip
from .program import RxProgram


def busiest_lanes(is_open: np.ndarray, lanes: int) -> np.ndarray:
    """(C, H, W) bool -> int (tiles, H): per channel tile of ``lanes`` channels and output row, the largest
    number of open pixels any one lane (channel) of the tile has in that row."""
    c, h, _ = is_open.shape
    tiles = -(-c // lanes)
    per_lane = np.zeros((tiles * lanes, h), np.int64)
    per_lane[:c] = is_open.sum(axis=2)
    return per_lane.reshape(tiles, lanes, h).max(axis=1)


def open_maps(packed, prog: RxProgram, buffers: dict) -> dict:
    """Layer name -> bool (N, C, H, W) gate map of each gated layer, from a golden run's buffers."""
    from ...ir import Graph
    from ...ir.arith import binary_conv2d

    g = Graph(packed.program)
    convs = {n.name: n for n in g.of_kind("frac_conv")}
    out = {}
    for layer in prog.layers:
        s = layer.shape
        if not s.gated:
            continue
        node = convs[s.name]
        s_m = binary_conv2d(buffers[node.inputs[0]], layer.weight_bits, node["stride"], node["padding"])
        out[s.name] = s_m > layer.gate.reshape(1, -1, 1, 1)
    return out


def gate_stats(packed, prog: RxProgram, cfg: RxConfig, images: np.ndarray | None = None,
               buffers: dict | None = None) -> dict:
    """Per gated layer: gate density; per gated 3x3 layer with per-lane lists also ``busiest``
    (tiles x rows, mean over the images). Pass ``buffers`` of an existing golden run to avoid a second one."""
    if buffers is None:
        from ...deploy.golden import run_program

        buffers = run_program(packed, np.ascontiguousarray(images, np.uint8))
    maps = open_maps(packed, prog, buffers)
    out = {}
    for layer in prog.layers:
        s = layer.shape
        if s.name not in maps:
            continue
        m = maps[s.name]
        row = {"gate_density": float(m.mean()), "images": int(m.shape[0])}
        if lanes_skip(s, cfg):
            b = np.stack([busiest_lanes(im, cfg.lanes) for im in m])  # (N, tiles, H)
            assert b.shape[1] == c_tiles(s, cfg)
            row["busiest"] = b.mean(axis=0).tolist()
        out[s.name] = row
    return out
