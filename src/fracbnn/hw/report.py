"""`fracbnn hw report`: cycles, images/s and resources of a design, next to csim and the published design."""

from __future__ import annotations

import json
from pathlib import Path

from .design import PART, HwConfig, published_ultra96
from .layers import ConvLayer
from .measure import measured  # noqa: F401 (part of this module's interface)
from .perf_model import PUBLISHED, calibration, cycle_model, resource_model

CSIM_TOLERANCE = 0.05


def build_report(layers: list[ConvLayer], cfg: HwConfig, densities: dict | float | None, *,
                 lsb_stats: dict | None = None, csim: dict | None = None, source: str = "",
                 n_classes: int = 10, widths: dict | None = None) -> dict:
    """Everything `hw report` prints, as one JSON-able dict. ``widths``: what the generated kernel declares
    (``widths.declared_widths``), charged by the resource model; None: the configuration's nominal widths."""
    entries = measured(lsb_stats, cfg)[1] if (lsb_stats and isinstance(densities, dict)) else None
    cyc = cycle_model(layers, cfg, densities, n_classes=n_classes, lsb_entries=entries)
    res = resource_model(layers, cfg, n_classes=n_classes, widths=widths)
    full = cycle_model(layers, cfg, 1.0, n_classes=n_classes)
    pub = cycle_model(layers, published_ultra96(), n_classes=n_classes)
    totals = {"cycles": cyc.cycles, "latency_us": cyc.latency_us, "fps": cyc.fps, **res["totals"]}
    rows = []
    for l in cyc.to_dict()["layers"]:
        loops = {lp["loop"]: lp["cycles"] for lp in l["loops"]}
        row = {"name": l["name"], "cycles": l["cycles"], "latency_us": l["cycles"] / cfg.clock_mhz, "loops": loops}
        if "lsb_density" in l:  # share of the layer's full LSB sweep that runs (tile density in the tile design)
            row["lsb_tile_density"] = row["lsb_share"] = l["lsb_density"]
        if lsb_stats and l["name"] in lsb_stats:
            row["gate_density"] = lsb_stats[l["name"]]["gate_density"]
        rows.append(row)
    lsb_full = sum(lp.cycles for l in full.layers for lp in l["loops"] if lp.loop == "lsb")
    lsb_now = sum(lp.cycles for l in cyc.layers for lp in l["loops"] if lp.loop == "lsb")
    lsb_by_layer = {l["name"]: lp.cycles for l in full.layers for lp in l["loops"] if lp.loop == "lsb"}
    ideal = None  # LSB cycles if exactly the open (pixel, channel) pairs cost work: gate density x full sweep
    if lsb_stats and all(k in lsb_stats for k in lsb_by_layer):
        ideal = sum(lsb_stats[k]["gate_density"] * v for k, v in lsb_by_layer.items()) / max(1, lsb_full)
    rep = {
        "source": source, "config": cfg.to_dict(), "part": PART, "totals": totals,
        "utilisation": res["utilisation"], "fits": res["fits"], "layers": rows,
        "resource_components": res["components"], "charged_bits": res["charged_bits"],
        "widths_from": res["widths_from"],
        "lsb": {"cycles": lsb_now, "cycles_without_skipping": lsb_full, "cycles_saved": lsb_full - lsb_now,
                "share_of_full_sweep": lsb_now / lsb_full if lsb_full else None, "ideal_share": ideal,
                "work_lists": "per lane" if cfg.lsb_lanes else "per tile",
                "total_without_skipping": full.cycles, "fps_without_skipping": full.fps},
        "published": {"figures": {k: PUBLISHED[k] for k in ("fps", "lut", "dsp", "bram18k")},
                      "calibration": calibration(), "model_fps_same_layers": pub.fps,
                      "speedup_vs_published_fps": cyc.fps / PUBLISHED["fps"]},
    }
    if csim is not None:
        rep["csim"] = compare_with_csim(cyc, csim)
    return rep


def compare_with_csim(cyc, csim: dict) -> dict:
    """Model cycles vs the C simulation's counted cycles, per layer and in total."""
    by_name = {r["name"]: r for r in csim["rows"]}
    layers = []
    for l in cyc.layers:
        c = by_name.get(l["name"])
        if c is None:
            continue
        layers.append({"name": l["name"], "model": l["cycles"], "csim": c["cycles"],
                       "relative_error": l["cycles"] / c["cycles"] - 1.0 if c["cycles"] else 0.0})
    rel = cyc.cycles / csim["cycles"] - 1.0
    return {"images": csim["images"], "mismatched_images": csim.get("mismatched_images"),
            "csim_cycles": csim["cycles"], "model_cycles": cyc.cycles, "relative_error": rel,
            "within_tolerance": abs(rel) <= CSIM_TOLERANCE, "tolerance": CSIM_TOLERANCE,
            "max_layer_relative_error": max((abs(x["relative_error"]) for x in layers), default=0.0),
            "layers": layers}


def format_report(rep: dict) -> str:
    t, cfg = rep["totals"], rep["config"]
    out = [f"{rep['source']}  [{cfg['name']}: {cfg['lanes']} lanes x {cfg['word_bits']}-bit words"
           f" (segments >= {cfg['min_segment_bits']} bits, {cfg['slots']} pixels/cycle), {cfg['units']} epilogue units,"
           f" LSB skipping {'on' if cfg['lsb_skip'] else 'off'}, {cfg['clock_mhz']:g} MHz]", ""]
    csim_layers = {x["name"]: x for x in rep.get("csim", {}).get("layers", [])}
    head = f"{'layer':<20} {'msb':>7} {'lsb':>7} {'epilog':>7} {'other':>7} {'cycles':>8} {'lsb-sh':>7} {'gate-d':>7}"
    if csim_layers:
        head += f" {'csim':>9} {'diff':>7}"
    out += [head, "-" * len(head)]
    for r in rep["layers"]:
        lp = r["loops"]
        other = sum(v for k, v in lp.items() if k not in ("msb", "lsb", "epilogue", "msb+lsb sweeps"))
        msb = lp.get("msb", lp.get("msb+lsb sweeps", 0))
        line = (f"{r['name']:<20} {msb:>7} {lp.get('lsb', 0):>7} {lp.get('epilogue', 0):>7} {other:>7} "
                f"{r['cycles']:>8} {_f(r.get('lsb_tile_density')):>7} {_f(r.get('gate_density')):>7}")
        if csim_layers:
            c = csim_layers.get(r["name"])
            line += f" {c['csim']:>9.1f} {100 * c['relative_error']:>6.2f}%" if c else ""
        out.append(line)
    u = rep["utilisation"]
    out += ["",
            f"cycles/image {t['cycles']:,}   latency {t['latency_us']:.2f} us   {t['fps']:,.1f} images/s",
            f"resources (model): LUT {t['lut']:,} ({100 * u['lut']:.0f}%)  FF {t['ff']:,} ({100 * u['ff']:.0f}%)  "
            f"BRAM18K {t['bram18k']} ({100 * u['bram18k']:.0f}%)  DSP {t['dsp']} ({100 * u['dsp']:.0f}%)  "
            f"on {rep['part']['name']}: {'fits' if rep['fits'] else 'DOES NOT FIT'}"]
    cb = rep.get("charged_bits")
    if cb:
        roms = ", ".join(f"{k} {cb[k]}" for k in cb if k.isupper())
        out.append(f"widths charged ({rep['widths_from']}): acc {cb['acc']}, residual {cb['res']}, shortcut "
                   f"{cb['sc']}, pool {cb['pool']} bits; tables {roms}; epilogue datapath {cb['epilogue']} bits, "
                   f"{cb['epilogue_dsp']} DSP/unit")
        if not rep["fits"] and cb["pool"] > 32:
            out.append("hint: the model's widths set these types; export with `fracbnn export --frac-bits auto "
                       "--data DIR` (per-layer widths, narrower residual and pool) and generate again")
    l = rep["lsb"]
    if cfg["style"] == "published":
        out.append("LSB pass: full sweeps, half of the 'msb+lsb sweeps' cycles (closed gates save nothing)")
    else:
        share = "" if l["share_of_full_sweep"] is None else f" = {100 * l['share_of_full_sweep']:.1f}% of"
        ideal = "" if l["ideal_share"] is None else f"; ideal (gate density) {100 * l['ideal_share']:.1f}%"
        out.append(f"LSB pass ({l['work_lists']} work lists): {l['cycles']:,} cycles{share or ';'} a full sweep "
                   f"{l['cycles_without_skipping']:,}{ideal} (saved {l['cycles_saved']:,} cycles/image; "
                   f"{l['fps_without_skipping']:,.1f} images/s without skipping)")
    p = rep["published"]
    cal = p["calibration"]
    out += ["", "published design (SPEC 5, ResNet-20) vs the model's published-style configuration on ResNet-20:",
            f"  {'':<10} {'published':>10} {'model':>10} {'error':>8}"]
    for k in ("fps", "lut", "dsp", "bram18k"):
        out.append(f"  {k:<10} {cal['published'][k]:>10,.1f} {cal['model'][k]:>10,.1f} "
                   f"{100 * cal['relative_error'][k]:>7.1f}%")
    out.append(f"  this design: {t['fps']:,.1f} images/s = {p['speedup_vs_published_fps']:.2f}x the published "
               f"{p['figures']['fps']:,} images/s")
    out.append(f"  published-style configuration on this report's layers (model): {p['model_fps_same_layers']:,.1f}"
               f" images/s")
    if "csim" in rep:
        out += ["", csim_line(rep["csim"])]
    return "\n".join(out)


def csim_line(c: dict) -> str:
    """One line: the C simulation's images, mismatches and counted cycles next to the model (both designs)."""
    return (f"C simulation ({c['images']} images, {c['mismatched_images']} mismatched): "
            f"{c['csim_cycles']:,.1f} cycles/image counted, model {c['model_cycles']:,.1f} "
            f"({100 * c['relative_error']:+.2f}%, max per layer {100 * c['max_layer_relative_error']:.2f}%; "
            f"{'within' if c['within_tolerance'] else 'OUTSIDE'} {100 * c['tolerance']:.0f}%)")


def _f(v) -> str:
    return "" if v is None else f"{v:.3f}"


def load_csim(project_dir: Path) -> dict | None:
    p = Path(project_dir) / "csim_result.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
