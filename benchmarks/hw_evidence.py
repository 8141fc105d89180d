"""Evidence for the FPGA accelerator: bit-exact C simulation vs the golden engine on CIFAR-10 test images,
model vs counted cycles, the LSB work each design skips, next to the published design.

    python benchmarks/hw_evidence.py [--models DIR] [--checkpoint CKPT ...] [--fbnn MODEL.fbnn ...]
                                     [--images 100] [--data PATH] [--out DIR]

Models: the FracBNN authors' trained CIFAR-10 ResNet-20 when ``--models`` (default $FRACBNN_MODELS, else
../shared/models beside the repository) holds it (imported with `fracbnn import-reference`; skipped with
the reason otherwise), every --checkpoint, every already exported --fbnn (e.g. the authors' model exported
with `fracbnn export --frac-bits auto`, whose per-layer widths decide what the design declares), and
randomly initialised resnet20-fracbnn models: "init" (as built) and "perturbed" (random BN statistics/scales, RPReLU slopes and shifts, and thresholds). Each runs through
both LSB designs: work lists per lane (the default) and per tile (--lsb-tiles). The published-design
calibration uses the layer shapes read from the authors' model when it is there. CIFAR-10 comes from
--data, else $FRACBNN_DATA or the data cache (never downloaded); without it the images are random.
Last line: one JSON object.
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "fracbnn-cifar10-resnet20-reference.pt"


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


def authors_model(models_dir: Path, work: Path):
    """(packed model, None) from the authors' reference checkpoint, or (None, reason it is skipped)."""
    src = models_dir / REFERENCE
    if not src.is_file():
        return None, f"authors' model not found at {src} (pass --models DIR or set $FRACBNN_MODELS)"
    from fracbnn.checkpoint import load_checkpoint, model_from_checkpoint
    from fracbnn.deploy import export_model
    from fracbnn.deploy.preprocess import attach_data_facts
    from fracbnn.reference import import_reference_file

    work.mkdir(parents=True, exist_ok=True)
    out = work / "authors-resnet20.pt"
    import_reference_file(src, "resnet20", out, force=True)
    ckpt = load_checkpoint(out)
    return export_model(attach_data_facts(model_from_checkpoint(ckpt, source=str(out)).eval(), ckpt)), None


def threshold_sweep(packed, images, calib, offsets=(0, 8, 16, 32, 64, 128)):
    """Gate density vs the LSB share of both designs when every gate threshold is raised by an offset.

    Raising thresholds mimics a higher gating target g; the model (no csim) shows how many LSB cycles each
    design saves at each gate density.
    """
    import copy

    from fracbnn.hw.design import proposed_ultra96
    from fracbnn.hw.measure import calibrate, measured
    from fracbnn.hw.perf_model import cycle_model
    from fracbnn.hw.program import hw_program

    rows = []
    for off in offsets:
        p = copy.deepcopy(packed)
        for op in p.program:
            if op["op"] == "frac_conv" and op["gate_threshold"] is not None:
                p.tensors[op["gate_threshold"]] = p.tensors[op["gate_threshold"]] + off
        row = {"threshold_offset": off}
        for cfg in (proposed_ultra96(lsb_lanes=False), proposed_ultra96()):
            prog = hw_program(p)
            st = calibrate(p, prog, cfg, images, calib)
            tot = sum(v["tiles"] for v in st.values())
            dens, entries = measured(st, cfg)
            full, now = cycle_model(prog.shapes, cfg, 1.0), cycle_model(prog.shapes, cfg, dens, lsb_entries=entries)
            key = "lanes" if cfg.lsb_lanes else "tiles"
            row["gate_density"] = sum(v["gate_density"] * v["tiles"] for v in st.values()) / tot
            row[f"{key}_cycles"], row[f"{key}_fps"] = now.cycles, now.fps
            row[f"{key}_cycles_saved"] = full.cycles - now.cycles
        rows.append(row)
    print(f"threshold sweep (model, {len(images)} images):")
    for r in rows:
        print(f"  +{r['threshold_offset']:>3}: gate density {r['gate_density']:.3f}  tiles: {r['tiles_cycles']:,} "
              f"cycles ({r['tiles_cycles_saved']:,} saved)  lanes: {r['lanes_cycles']:,} cycles "
              f"({r['lanes_cycles_saved']:,} saved, {r['lanes_fps']:,.0f} images/s)")
    return rows


def run_design(name, packed, cfg, images, origin, calib, out_root):
    from fracbnn.hw.csim import run_csim
    from fracbnn.hw.generate import config_from_project, generate_project, layers_from_project
    from fracbnn.hw.measure import measured
    from fracbnn.hw.report import build_report, format_report

    t0 = time.time()
    out = out_root / name
    shutil.rmtree(out, ignore_errors=True)
    meta = generate_project(packed, out, cfg=cfg, images=images, image_origin=origin, model_label=name,
                            calib_images=calib)
    res = run_csim(out)
    layers = layers_from_project(meta)
    pcfg = config_from_project(meta)
    rep = build_report(layers, pcfg, measured(meta["lsb"], pcfg)[0], lsb_stats=meta["lsb"], csim=res,
                       source=f"{name}: {out}", widths=meta["widths"])  # charged at the types the kernel declares
    print(f"\n=== {name} ({time.time() - t0:.0f} s) ===")
    print(res["stdout"].strip().splitlines()[-2])
    print(format_report(rep))
    st = meta["lsb"]
    tiles = sum(v["tiles"] for v in st.values())
    csim_lsb = sum(r["loops"]["lsb"] for r in res["rows"])
    return rep, {
        "design": "per-lane work lists" if pcfg.lsb_lanes else "per-tile work list",
        "csim_images": res["images"], "mismatched_images": res["mismatched_images"],
        "bit_exact": res["returncode"] == 0 and res["mismatched_images"] == 0,
        "csim_cycles": res["cycles"], "model_cycles": rep["totals"]["cycles"],
        "cycle_model_error": rep["csim"]["relative_error"],
        "max_layer_cycle_error": rep["csim"]["max_layer_relative_error"],
        "fps": rep["totals"]["fps"], "speedup_vs_published": rep["published"]["speedup_vs_published_fps"],
        "gate_density": sum(v["gate_density"] * v["tiles"] for v in st.values()) / tiles,
        "lsb_tile_density": sum(v["open_tiles"] for v in st.values()) / tiles,
        "lsb_cycles_saved": rep["lsb"]["cycles_saved"], "lsb_cycles_full": rep["lsb"]["cycles_without_skipping"],
        "csim_lsb_cycles": csim_lsb,
        "lsb_share_of_full_sweep": csim_lsb / rep["lsb"]["cycles_without_skipping"],
        "lsb_ideal_share": rep["lsb"]["ideal_share"],
        "resources": {k: rep["totals"][k] for k in ("lut", "ff", "bram18k", "dsp")}, "fits": rep["fits"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("FRACBNN_MODELS", str(REPO.parent / "shared" / "models")),
                    help="folder with the authors' reference checkpoint (default: $FRACBNN_MODELS, else "
                    "../shared/models beside the repository)")
    ap.add_argument("--checkpoint", action="append", default=[])
    ap.add_argument("--fbnn", action="append", default=[], help="an exported packed model (its own widths)")
    ap.add_argument("--images", type=int, default=None, help="test images (default 100; reactnet: 20)")
    ap.add_argument("--data", help="CIFAR-10 folder or archive (default: $FRACBNN_DATA, else the data cache)")
    ap.add_argument("--out", default="/tmp/fracbnn-hw-evidence")
    ap.add_argument("--model", choices=("resnet20-fracbnn", "reactnet-fracbnn"), default="resnet20-fracbnn",
                    help="the CIFAR design (default) or the ImageNet design (see hw_evidence_reactnet.py)")
    ap.add_argument("--trained", metavar="DIR", help="reactnet: work folder of benchmarks/reactnet_agreement.py")
    ap.add_argument("--train-steps", type=int, default=300, help="reactnet: steps when training here (--data)")
    ap.add_argument("--full-images", type=int, default=2, help="reactnet: also csim the full model at 224x224 "
                    "on N images (0: skip)")
    args = ap.parse_args()
    if args.model == "reactnet-fracbnn":
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import hw_evidence_reactnet

        args.images = args.images or 20
        raise SystemExit(hw_evidence_reactnet.main(args))
    from fracbnn.checkpoint import model_from_checkpoint
    from fracbnn.deploy import export_model
    from fracbnn.hw.design import proposed_ultra96
    from fracbnn.hw.measure import default_images
    from fracbnn.hw.perf_model import calibration
    from fracbnn.hw.program import hw_program

    args.images = args.images or 100
    out_root = Path(args.out)
    images, origin = default_images(args.images, datasets=args.data)
    calib = default_images(64, datasets=args.data, split="train")[0]  # channel order: training images
    packed_models = []
    ref, skipped = authors_model(Path(args.models), out_root / "reference")
    if ref is None:
        print(f"skip: {skipped}; continuing with the other models")
    else:
        packed_models.append(("authors-resnet20", ref))
    packed_models += [(Path(c).stem, export_model(model_from_checkpoint(c).eval())) for c in args.checkpoint]
    from fracbnn.ir.model import PackedModel

    packed_models += [(Path(f).stem, PackedModel.load(f)) for f in args.fbnn]
    packed_models += [("random-init", export_model(random_model(0, False))),
                      ("random-perturbed", export_model(random_model(1, True)))]
    summary = {"images": len(images), "image_origin": origin, "models": {},
               "authors_model": None if ref is None else "authors-resnet20", "authors_model_skipped": skipped}
    for name, packed in packed_models:
        _, tiles = run_design(name + "-tiles", packed, proposed_ultra96(lsb_lanes=False), images, origin, calib,
                              out_root)
        _, lanes = run_design(name, packed, proposed_ultra96(), images, origin, calib, out_root)  # the default
        summary["models"][name] = {**tiles, "per_lane_design": lanes,
                                   "threshold_sweep": threshold_sweep(packed, images[:20], calib)}
    # the published-design calibration on the trained network's shapes (read from its program) when present
    shapes = hw_program(ref).shapes if ref is not None else None
    summary["calibration"] = calibration(shapes)
    summary["calibration_layers"] = "authors' model" if ref is not None else "ResNet-20 shapes built without a model"
    if ref is not None:
        a = summary["models"]["authors-resnet20"]
        summary["lsb_share_of_full_sweep"] = {"tiles": a["lsb_share_of_full_sweep"],
                                              "lanes": a["per_lane_design"]["lsb_share_of_full_sweep"]}
        summary["lsb_ideal_share"] = a["lsb_ideal_share"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
