"""Calibration and measurement: gate rates, the channel -> lane order and the LSB work densities.

Computed once per model and design (:func:`calibrate`), from the golden
engine's MSB sums: ``fracbnn hw generate`` stores the result in
hw_project.json and ``fracbnn hw report MODEL.fbnn`` uses the same function,
so nothing here is repeated elsewhere. The images both draw on come from
:func:`fracbnn.deploy.preprocess.sample_images`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import FracBNNError
from .design import HwConfig, segment_plan
from .program import HwProgram


def open_gates(packed, prog: HwProgram, buf: dict) -> dict:
    """{layer name: bool (N, Cout, Ho, Wo) open gates} from golden ``run_program`` buffers (all open if ungated)."""
    from ..deploy.golden import binary_conv2d

    out = {}
    for layer in prog.layers[1:]:
        s = layer.shape
        s_m = binary_conv2d(buf[layer.msb], layer.weight_bits, s.stride, 1)
        out[s.name] = np.ones_like(s_m, bool) if layer.gate is None else s_m > layer.gate.reshape(1, -1, 1, 1)
    return out


def gate_open_rates(packed, prog: HwProgram, pixels: np.ndarray) -> dict:
    """Per layer, the share of open gates of every output channel (golden engine MSB sums)."""
    from ..deploy.golden import run_program

    return {k: v.mean(axis=(0, 2, 3)) for k, v in open_gates(packed, prog, run_program(packed, pixels)).items()}


def order_channels_by_gate_rate(prog: HwProgram, rates: dict) -> None:
    """Tile design: give each layer's engine slots the output channels sorted by open-gate rate (stable).

    Channels that are rarely open then share lane groups, so whole LSB tiles
    close more often. Only the conv engine's slot -> channel map changes; the
    data layout (planes, residual, epilogue) keeps the true channel order.
    """
    for layer in prog.layers[1:]:
        r = rates.get(layer.shape.name)
        if r is not None:
            layer.order = np.argsort(r, kind="stable").astype(np.int64)


def balance_channels_by_gate_rate(prog: HwProgram, rates: dict, lanes: int, units: int) -> None:
    """Per-lane design: spread the channels over the lanes so the lanes' open-gate loads are even.

    A lane holds the channels of its slot in every group (slot g*lanes + p)
    and the LSB pass lasts as long as the busiest lane, so channels are
    dealt, most-open first, to the lane with the least load that still has
    room (longest-processing-time rule). Channels that share an ``acc_buf``
    bank (c mod ``units`` in a layer wider than ``units``, see the kernel's
    fm_index) go to the same lane as one item, so no two lanes ever write one
    bank in a cycle. If the greedy deal cannot place them, the natural order
    (which has that property) is kept.
    """
    for layer in prog.layers[1:]:
        r = rates.get(layer.shape.name)
        if r is None:
            continue
        cout = layer.shape.cout
        groups = math.ceil(cout / lanes)
        room = [sum(1 for g in range(groups) if g * lanes + p < cout) for p in range(lanes)]
        step = units if cout > units else cout
        items = [list(range(c, cout, step)) for c in range(step)]       # bank classes
        items.sort(key=lambda it: (-len(it), -float(np.sum(np.asarray(r)[it]))))
        load, held = np.zeros(lanes), [[] for _ in range(lanes)]
        for it in items:
            fits = [q for q in range(lanes) if room[q] >= len(it)]
            if not fits:
                held = None
                break
            p = min(fits, key=lambda q: (load[q], q))
            held[p] += it
            room[p] -= len(it)
            load[p] += float(np.sum(np.asarray(r)[it]))
        if held is None:
            layer.order = None
            continue
        order = np.zeros(cout, np.int64)
        for p, chans in enumerate(held):
            for g, c in enumerate(chans):
                order[g * lanes + p] = c
        layer.order = order


def lsb_stats(prog: HwProgram, cfg: HwConfig, gates: dict) -> dict:
    """Measured gate density and the LSB work of both designs per layer (means over the images).

    Tile design: a tile is ``slots`` adjacent output pixels x ``lanes``
    output channels, open when any gate in it is (``tile_density``,
    ``lsb_entries`` = groups with an open tile). Per-lane design: lane p's
    slot s lists the open pixels (of column parity s) of its channels; the
    lane needs sum over groups of the longer slot list x words cycles, the
    pass the busiest lane's (``lane_cycles``; ``lane_share`` of the full
    sweep; ``lane_entries`` = passes that run at all).
    """
    stats = {}
    for layer in prog.layers[1:]:
        s = layer.shape
        is_open = gates[s.name]
        _, slots, kw = segment_plan(s.cin, s.w_out, cfg)
        groups, tpr = math.ceil(s.cout / cfg.lanes), math.ceil(s.w_out / slots)
        n = is_open.shape[0]
        pad = np.zeros((n, groups * cfg.lanes, s.h_out, tpr * slots), bool)
        pad[:, :s.cout, :, :s.w_out] = is_open[:, layer.channel_order()]
        per = pad.reshape(n, groups, cfg.lanes, s.h_out, tpr, slots)
        tiles = per.any(axis=(2, 5))
        counts = per.sum(axis=(3, 4))                        # (N, groups, lanes, slots)
        lane = counts.max(axis=3).sum(axis=1) * kw           # (N, lanes)
        busiest = lane.max(axis=1)                           # (N,)
        full = groups * s.h_out * tpr * kw
        stats[s.name] = {"gate_density": float(is_open.mean()), "tile_density": float(tiles.mean()),
                         "open_tiles": int(tiles.sum()), "tiles": int(tiles.size),
                         "lsb_entries": float(tiles.any(axis=(2, 3)).sum(axis=1).mean()),
                         "lane_cycles": float(busiest.mean()), "lane_share": float(busiest.mean() / full),
                         "lane_entries": float((busiest > 0).mean()), "full_sweep_cycles": int(full)}
    return stats


def calibrate(packed, prog: HwProgram, cfg: HwConfig, images: np.ndarray, calib_images: np.ndarray | None = None,
              buf: dict | None = None) -> dict:
    """Order each layer's channels for ``cfg`` from ``calib_images`` (if any), then measure on ``images``.

    The one place the channel order and the LSB densities are computed:
    sets ``layer.order`` in ``prog`` and returns the :func:`lsb_stats`.
    ``buf``: the golden ``run_program(packed, images)`` buffers when the
    caller has them already.
    """
    from ..deploy.golden import run_program

    if calib_images is not None and len(calib_images):
        rates = gate_open_rates(packed, prog, calib_images)
        if cfg.lsb_lanes:
            balance_channels_by_gate_rate(prog, rates, cfg.lanes, cfg.units)
        else:
            order_channels_by_gate_rate(prog, rates)
    if buf is None:
        buf = run_program(packed, images)
    return lsb_stats(prog, cfg, open_gates(packed, prog, buf))


def measured(stats: dict, cfg: HwConfig | None = None) -> tuple[dict, dict]:
    """(share of the full LSB sweep that runs, mean LSB loop entries) per layer, for the design ``cfg``."""
    lanes = cfg is not None and cfg.lsb_lanes
    share, entries = ("lane_share", "lane_entries") if lanes else ("tile_density", "lsb_entries")
    return ({k: v[share] for k, v in stats.items() if share in v},
            {k: v[entries] for k, v in stats.items() if entries in v})


def default_images(n: int, seed: int = 0, datasets: str | Path | None = None, split: str = "test"
                   ) -> tuple[np.ndarray, str]:
    """The first ``n`` CIFAR-10 images of ``split`` when the data set is available, else seeded random images.

    ``datasets`` is anything ``fracbnn.data.load_dataset`` takes as ``root`` (the CIFAR-10 folder, a folder
    holding it or its archive, the archive); None looks in $FRACBNN_DATA, then the data cache. Nothing is
    downloaded: without the data set the images are random.
    """
    from ..data import load_dataset

    try:
        ds = load_dataset("cifar10", root=datasets, split=split, download=False)
    except FracBNNError as e:
        rng = np.random.default_rng(seed + (0 if split == "test" else 1))
        return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8), \
            f"random uint8 images (seed {seed}); CIFAR-10 not available ({e})"
    where = f" from {datasets}" if datasets is not None else ""
    n = min(n, len(ds.images))
    return ds.images[:n].numpy().astype(np.uint8), f"CIFAR-10 {split} images 0..{n - 1}{where}"
