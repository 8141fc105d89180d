"""ReActNet FracBNN: packed model vs PyTorch on real images, and logit differences at 224 x 224.

There is no ImageNet here, so the agreement is measured on a reduced-width
``reactnet-fracbnn`` trained briefly on the shared CIFAR-10 copy, upsampled
2x to 64 x 64 (nearest neighbour: the pixels the thermometer sees are the
real ones). The reference is PyTorch in float64: float32 rounding alone
flips quantizer codes (26 layers of 2- and 4-bit steps), so the float32
model disagrees with its own float64 version on a few % of images; both
comparisons are printed. Then, for the full-width model at 224 x 224, a random model with
data-like statistics (``fracbnn.models.calibrate.data_like``) gives the
integer-vs-float logit differences at the paper's size.

    python benchmarks/reactnet_agreement.py --data ../shared/datasets --out /tmp/rx [--steps 800]

Training saves DIR/model.pt every 100 steps and resumes from it, so an
interrupted run goes on where it stopped. The last line is one JSON object
(agreement, top1_torch, top1_packed, images, max_abs_logit_diff, ...).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fracbnn.data import load_dataset
from fracbnn.deploy import EngineError, export_model, get_engine
from fracbnn.ir import Graph
from fracbnn.models import create_model
from fracbnn.models.calibrate import data_like, smooth_images


def best_engine(packed):
    """The fast engine where it runs this program (identical logits, faster), else the golden one."""
    try:
        return get_engine("fast")(packed)
    except EngineError:
        return get_engine("golden")(packed)


def torch_logits(model, x, batch=100):
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch]).to(dtype) for i in range(0, len(x), batch)]).double().numpy()


def float64_copy(model):
    """The same network in float64: the exact real-number reference (float32 rounding flips 2-bit codes)."""
    import copy

    return copy.deepcopy(model).double().eval()


def upsample2(images: torch.Tensor) -> torch.Tensor:
    return images.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def train(model, images, labels, steps, batch, lr, ckpt: Path, log_every=50):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
        print(f"resumed at step {start}")
    g = torch.Generator().manual_seed(1234)
    order = torch.randperm(len(images), generator=g)
    model.train()
    t0 = time.time()
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr * (1 - step / steps)  # linear decay, as in the paper's recipe
        idx = order[(step * batch) % len(images):][:batch]
        if len(idx) < batch:
            idx = order[:batch]
        x = images[idx]
        flip = torch.rand(len(x), generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        loss = F.cross_entropy(model(upsample2(x)), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} ({(step + 1 - start) * batch / (time.time() - t0):.0f} img/s)",
                  flush=True)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1}, tmp)
            tmp.replace(ckpt)
    model.eval()
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder holding cifar-10-python.tar.gz")
    p.add_argument("--out", required=True, help="work folder (trained model, resumable)")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--full-images", type=int, default=4, help="images for the 224 x 224 logit comparison (0: skip)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    train_set = load_dataset("cifar10", args.data, "train", download=False)
    test_set = load_dataset("cifar10", args.data, "test", download=False)
    model = create_model("reactnet-fracbnn", num_classes=10, width=args.width)
    model.input_size = (3, 64, 64)
    model = train(model, train_set.images, train_set.labels, args.steps, args.batch, args.lr, out / "model.pt")

    x = upsample2(test_set.images[:args.test_images])
    y = test_set.labels[:args.test_images].numpy()
    ref = torch_logits(model, x)
    ref64 = torch_logits(float64_copy(model), x)
    packed = export_model(model)
    engine = best_engine(packed)
    scores = np.concatenate([engine.scores(x[i:i + 200].numpy()) for i in range(0, len(x), 200)])
    gates = engine.gate_counts
    density = sum(a for a, _ in gates.values()) / max(1, sum(b for _, b in gates.values()))
    diff = np.abs(scores - ref64)
    agree = lambda a, b: float((a.argmax(1) == b.argmax(1)).mean())  # noqa: E731
    res = {
        "model": "reactnet-fracbnn", "width": args.width, "input_size": [3, 64, 64], "train_steps": args.steps,
        "engine": engine.name, "images": int(len(x)), "fixed_point": packed.meta["fixed_point"],
        "top1_torch": float((ref.argmax(1) == y).mean()), "top1_packed": float((scores.argmax(1) == y).mean()),
        "agreement": agree(scores, ref64), "agreement_float32": agree(scores, ref),
        "float32_vs_float64_agreement": agree(ref, ref64),
        "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
        "float32_mean_abs_logit_diff": float(np.abs(ref - ref64).mean()),
        "lsb_gate_density": density,
        "gate_density_by_layer": {Graph(packed.program).layer_name(k): round(a / b, 4) for k, (a, b) in gates.items()},
    }
    print(f"64x64 width {args.width}, {len(x)} images: top-1 PyTorch {res['top1_torch']:.4f}, packed "
          f"{res['top1_packed']:.4f}; packed vs PyTorch float64 agreement {res['agreement']:.4f} (max |logit diff| "
          f"{res['max_abs_logit_diff']:.3g}, mean {res['mean_abs_logit_diff']:.3g}); packed vs PyTorch float32 "
          f"{res['agreement_float32']:.4f}; PyTorch float32 vs float64 {res['float32_vs_float64_agreement']:.4f} "
          f"(mean |logit diff| {res['float32_mean_abs_logit_diff']:.3g}); LSB gate density {density:.3f}")

    if args.full_images:
        full = create_model("reactnet-fracbnn", num_classes=1000)
        calib = smooth_images(8, (224, 224), seed=0)
        data_like(full, calib, seed=0)
        full.input_size = (3, 224, 224)
        xf = smooth_images(args.full_images, (224, 224), seed=1)
        ref_f = torch_logits(float64_copy(full), xf)
        ref_f32 = torch_logits(full, xf)
        packed_f = export_model(full)
        eng_f = best_engine(packed_f)
        sf = eng_f.scores(xf.numpy())
        d = np.abs(sf - ref_f)
        res["full_224"] = {"images": args.full_images, "max_abs_logit_diff": float(d.max()),
                           "mean_abs_logit_diff": float(d.mean()),
                           "logit_std": float(ref_f.std()),
                           "float32_mean_abs_logit_diff": float(np.abs(ref_f32 - ref_f).mean()),
                           "top1_agreement": float((sf.argmax(1) == ref_f.argmax(1)).mean())}
        print(f"224x224 full width (data-like random weights), packed vs PyTorch float64: max |logit diff| "
              f"{d.max():.3g}, mean {d.mean():.3g} (logit std {ref_f.std():.3g}; float32 vs float64 mean "
              f"{res['full_224']['float32_mean_abs_logit_diff']:.3g}), top-1 agreement "
              f"{res['full_224']['top1_agreement']:.2f}")
    (out / "agreement.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
