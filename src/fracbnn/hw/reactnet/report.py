"""`fracbnn hw report` for the ImageNet design: model, DRAM, resources, the published design, csim."""

from __future__ import annotations

from .design import RxConfig, published_imagenet
from .model import cycle_model, published_comparison, resource_model
from .program import RxShape, reactnet_shapes

CSIM_TOLERANCE = 0.05


def build_rx_report(shapes: list[RxShape], cfg: RxConfig, *, gates: dict | None = None,
                    densities: dict | float | None = None, csim: dict | None = None, source: str = "",
                    n_classes: int = 1000, coef_bits: int | None = None, thermo_bits: int = 32) -> dict:
    """Everything the report prints as one JSON-able dict.

    ``gates``: measured busiest-lane counts (``measure.gate_stats``); ``densities``: gate density per layer or
    one number where no counts are measured. The published comparison is made twice: on these layers, and on
    the published network at 224 x 224 (``published.speedup_vs_published_fps``) with this model's measured
    gate densities per layer (busiest lanes estimated from them).
    """
    cyc = cycle_model(shapes, cfg, gates, densities, thermo_bits)
    res = resource_model(shapes, cfg, n_classes, coef_bits, thermo_bits)
    dens = {n: g["gate_density"] for n, g in (gates or {}).items()}
    if isinstance(densities, dict):
        dens.update(densities)
    one = densities if isinstance(densities, (int, float)) else None
    same = published_comparison(shapes, cfg, gates, densities, thermo_bits, coef_bits)
    full = reactnet_shapes(1.0, 224, thermo_bits)  # the published network, with this model's thermometer
    if shapes == full:
        at224 = same
    else:
        at224 = published_comparison(full, cfg, None, one if one is not None else (dens or None), thermo_bits,
                                     coef_bits)
    t = cyc["totals"]
    rep = {
        "source": source, "family": "reactnet", "config": cfg.to_dict(), "part": res["part"],
        "totals": {**t, **res["totals"]}, "utilisation": res["utilisation"], "fits": res["fits"],
        "layers": cyc["layers"], "resource_components": res["components"], "lsb": cyc["lsb"],
        "published": {
            "config": published_imagenet().to_dict(),
            "fps": at224["fps"], "ours_fps": at224["ours_fps"],
            "speedup_vs_published_fps": at224["speedup_vs_published_fps"],
            "network": "reactnet-fracbnn width 1 at 224x224" + ("" if shapes == full else
                                                                 " (gate densities of this model per layer)"),
            "dram_bytes": at224["dram_bytes"], "resources": at224["resources"], "layers_224": at224["layers"],
            "same_layers": {"fps": same["fps"], "speedup_vs_published_fps": same["speedup_vs_published_fps"]},
        },
    }
    if csim is not None:
        rep["csim"] = compare_with_csim(cyc, csim)
    return rep


def compare_with_csim(cyc: dict, csim: dict) -> dict:
    by_name = {r["name"]: r for r in csim.get("layers", [])}
    layers = []
    for l in cyc["layers"]:
        c = by_name.get(l["name"])
        if c is None:
            continue
        layers.append({"name": l["name"], "model": l["cycles"], "csim": c["cycles"],
                       "relative_error": l["cycles"] / c["cycles"] - 1.0 if c["cycles"] else 0.0})
    model, counted = cyc["totals"]["cycles"], csim["cycles_per_image"]
    rel = model / counted - 1.0 if counted else 0.0
    return {"images": csim["images"], "mismatched_images": csim["mismatched_images"], "csim_cycles": counted,
            "model_cycles": model, "relative_error": rel, "within_tolerance": abs(rel) <= CSIM_TOLERANCE,
            "tolerance": CSIM_TOLERANCE,
            "max_layer_relative_error": max((abs(x["relative_error"]) for x in layers), default=0.0),
            "layers": layers}


def format_rx_report(rep: dict) -> str:
    t, cfg, u = rep["totals"], rep["config"], rep["utilisation"]
    out = [f"{rep['source']}  [{cfg['name']}: {cfg['lanes']} lanes x {cfg['word_bits']}-bit words, "
           f"{cfg['tile_rows']}-row tiles, 1x1 {cfg['words_1x1']} words/cycle, LSB lists "
           f"{'on' if cfg['lsb_skip'] else 'off'}, {cfg['clock_mhz']:g} MHz, DRAM {cfg['dram_gbytes_s']:g} GB/s]", ""]
    csim_layers = {x["name"]: x for x in rep.get("csim", {}).get("layers", [])}
    head = (f"{'layer':<17} {'msb':>8} {'lsb':>8} {'lsb-full':>8} {'epilog':>7} {'dram':>8} {'cycles':>9} "
            f"{'gate-d':>6}")
    if csim_layers:
        head += f" {'csim':>10} {'diff':>7}"
    out += [head, "-" * len(head)]
    for r in rep["layers"]:
        gd = "" if r.get("gate_density") is None else f"{r['gate_density']:.3f}"
        line = (f"{r['name']:<17} {r['msb']:>8,.0f} {r['lsb']:>8,.0f} {r['lsb_full']:>8,.0f} {r['epilogue']:>7,.0f} "
                f"{r['dram']:>8,.0f}{'*' if r['dram_bound'] else ' '}{r['cycles']:>9,.0f} {gd:>6}")
        c = csim_layers.get(r["name"])
        if c:
            line += f" {c['csim']:>10,.1f} {100 * c['relative_error']:>6.2f}%"
        out.append(line)
    l = rep["lsb"]
    share = "" if l["share_of_full_sweep"] is None else f" = {100 * l['share_of_full_sweep']:.1f}% of full sweeps"
    out += ["(* DRAM-bound: the layer's transfers take longer than its compute)", "",
            f"cycles/image {t['cycles']:,.0f}   latency {t['latency_ms']:.2f} ms   {t['fps']:,.1f} images/s",
            f"DRAM {t['dram_bytes'] / 1e6:,.2f} MB/image = {t['dram_gbytes_s']:.2f} GB/s "
            f"({100 * t['dram_bandwidth_share']:.0f}% of the {cfg['dram_gbytes_s']:g} GB/s assumed)",
            f"LSB pass: {l['cycles']:,.0f} cycles{share} ({l['cycles_without_skipping']:,.0f}; saved "
            f"{l['cycles_saved']:,.0f}/image)",
            f"resources (model): LUT {t['lut']:,} ({100 * u['lut']:.0f}%)  FF {t['ff']:,} ({100 * u['ff']:.0f}%)  "
            f"BRAM18K {t['bram18k']} ({100 * u['bram18k']:.0f}%)  DSP {t['dsp']} ({100 * u['dsp']:.0f}%)  on "
            f"{rep['part']}: {'fits' if rep['fits'] else 'DOES NOT FIT'}"]
    p = rep["published"]
    out += ["", f"published design modelled ({p['network']}): {p['fps']:,.1f} images/s; this design "
            f"{p['ours_fps']:,.1f} images/s = {p['speedup_vs_published_fps']:.2f}x; on this report's layers "
            f"{p['same_layers']['speedup_vs_published_fps']:.2f}x"]
    if "csim" in rep:
        from ..report import csim_line

        out += ["", csim_line(rep["csim"])]
    return "\n".join(out)
