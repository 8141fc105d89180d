"""Evidence for the FPGA accelerator: bit-exact C simulation vs the golden engine on CIFAR-10 test images,
model vs counted cycles, LSB densities and the cycles LSB skipping saved, next to the published design.

    python benchmarks/hw_evidence.py [--checkpoint CKPT ...] [--images 100] [--data PATH] [--out DIR]

Models: every --checkpoint (trained), plus randomly initialised resnet20-fracbnn models: "init" (as built:
thresholds -1, BN identity statistics) and "perturbed" (random BN statistics/scales, RPReLU slopes and
shifts, and thresholds, so gates and both RPReLU sides are exercised). CIFAR-10 comes from --data, else
$FRACBNN_DATA or the data cache (never downloaded); without it the images are random. Last line: one JSON object.
"""

import argparse
import json
import time
from pathlib import Path

import torch


def random_model(seed: int, perturb: bool):
    from fracbnn.models import create_model

    torch.manual_seed(seed)
    m = create_model("resnet20-fracbnn")
    if perturb:
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.3, 2.0)
                mod.weight.data.uniform_(-1.5, 1.5)
                mod.bias.data.uniform_(-0.5, 0.5)
            if hasattr(mod, "slope"):
                mod.slope.data.uniform_(-0.5, 0.5)
                mod.shift_in.data.uniform_(-0.3, 0.3)
                mod.shift_out.data.uniform_(-0.3, 0.3)
            if hasattr(mod, "threshold") and isinstance(mod.threshold, torch.nn.Parameter):
                mod.threshold.data.uniform_(-5.0, 40.0)
    return m.eval()


def threshold_sweep(packed, images, calib, offsets=(0, 8, 16, 32, 64, 128)):
    """Gate density vs LSB tile density vs cycles when every gate threshold is raised by an offset.

    Raising thresholds mimics a higher gating target g; the model (no csim) shows how many LSB cycles
    tile-granular skipping saves at each gate density.
    """
    import copy

    from fracbnn.hw.perf_model import cycle_model, proposed_ultra96
    from fracbnn.hw.report import measured
    from fracbnn.hw.program import gate_open_rates, hw_program, lsb_tile_stats, order_channels_by_gate_rate

    cfg = proposed_ultra96()
    rows = []
    for off in offsets:
        p = copy.deepcopy(packed)
        for op in p.program:
            if op["op"] == "frac_conv" and op["gate_threshold"] is not None:
                p.tensors[op["gate_threshold"]] = p.tensors[op["gate_threshold"]] + off
        prog = hw_program(p)
        st0 = lsb_tile_stats(p, prog, cfg, images)  # natural channel order
        order_channels_by_gate_rate(prog, gate_open_rates(p, prog, calib))
        st = lsb_tile_stats(p, prog, cfg, images)
        tot = sum(v["tiles"] for v in st.values())
        dens, entries = measured(st)
        full, now = cycle_model(prog.shapes, cfg, 1.0), cycle_model(prog.shapes, cfg, dens, lsb_entries=entries)
        rows.append({"threshold_offset": off,
                     "gate_density": sum(v["gate_density"] * v["tiles"] for v in st.values()) / tot,
                     "tile_density": sum(v["open_tiles"] for v in st.values()) / tot,
                     "tile_density_natural_order": sum(v["open_tiles"] for v in st0.values()) / tot,
                     "cycles": now.cycles, "cycles_saved": full.cycles - now.cycles, "fps": now.fps})
    print(f"threshold sweep (model, {len(images)} images):")
    for r in rows:
        print(f"  +{r['threshold_offset']:>3}: gate density {r['gate_density']:.3f}  tile density "
              f"{r['tile_density']:.3f} (natural order {r['tile_density_natural_order']:.3f})  cycles {r['cycles']:,}  saved {r['cycles_saved']:,}  {r['fps']:,.0f} images/s")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", action="append", default=[])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--data", help="CIFAR-10 folder or archive (default: $FRACBNN_DATA, else the data cache)")
    ap.add_argument("--out", default="/tmp/fracbnn-hw-evidence")
    args = ap.parse_args()
    from fracbnn.checkpoint import model_from_checkpoint
    from fracbnn.deploy import export_model
    from fracbnn.hw.csim import run_csim
    from fracbnn.hw.generate import config_from_project, default_images, generate_project
    from fracbnn.hw.layers import ConvLayer
    from fracbnn.hw.report import build_report, format_report, measured

    images, origin = default_images(args.images, datasets=args.data)
    calib = default_images(64, datasets=args.data, split="train")[0]  # channel order from training images, disjoint from the test set
    models = [(Path(c).stem, model_from_checkpoint(c).eval()) for c in args.checkpoint]
    models += [("random-init", random_model(0, False)), ("random-perturbed", random_model(1, True))]
    summary = {"images": len(images), "image_origin": origin, "models": {}}
    for name, model in models:
        t0 = time.time()
        packed = export_model(model)
        out = Path(args.out) / name
        if out.exists():
            import shutil

            shutil.rmtree(out)
        meta = generate_project(packed, out, images=images, image_origin=origin, model_label=name,
                                calib_images=calib)
        res = run_csim(out)
        layers = [ConvLayer(**l) for l in meta["layers"]]
        dens = measured(meta["lsb"])[0]
        rep = build_report(layers, config_from_project(meta), dens, lsb_stats=meta["lsb"], csim=res,
                           source=f"{name}: {out}")
        print(f"\n=== {name} ({time.time() - t0:.0f} s) ===")
        print(res["stdout"].strip().splitlines()[-2])
        print(format_report(rep))
        gates = sum(v["gate_density"] * v["tiles"] for v in meta["lsb"].values()) / sum(
            v["tiles"] for v in meta["lsb"].values())
        tiles = sum(v["open_tiles"] for v in meta["lsb"].values()) / sum(v["tiles"] for v in meta["lsb"].values())
        summary["models"][name] = {
            "csim_images": res["images"], "mismatched_images": res["mismatched_images"],
            "bit_exact": res["returncode"] == 0 and res["mismatched_images"] == 0,
            "csim_cycles": res["cycles"], "model_cycles": rep["totals"]["cycles"],
            "cycle_model_error": rep["csim"]["relative_error"],
            "max_layer_cycle_error": rep["csim"]["max_layer_relative_error"],
            "fps": rep["totals"]["fps"], "speedup_vs_published": rep["published"]["speedup_vs_published_fps"],
            "gate_density": gates, "lsb_tile_density": tiles,
            "lsb_cycles_saved": rep["lsb"]["cycles_saved"], "lsb_cycles_full": rep["lsb"]["cycles_without_skipping"],
            "resources": {k: rep["totals"][k] for k in ("lut", "ff", "bram18k", "dsp")},
        }
        summary["models"][name]["threshold_sweep"] = threshold_sweep(packed, images[:20], calib)
    summary["calibration"] = rep["published"]["calibration"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
