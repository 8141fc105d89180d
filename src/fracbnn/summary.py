"""Model summary: per-layer bits and operation counts, and their totals.

Counting rules (also in docs/summary.md):

* weight_bits: 1 per binary weight (BinaryConv2d; FracConv2d in "binary" or
  "frac" mode). Latent float copies of binary weights are training-only and
  not counted.
* float_params: values kept in floating point at inference: float conv and
  Linear weights and biases, BatchNorm scale and shift (running statistics fold
  into them), RPReLU (3 per channel), gating thresholds (1 per channel).
* msb_bmacs: binary MACs of one pass over 1-bit inputs (the input layer, the
  MSB pass of a fractional conv, a 1-bit BNN conv). For k-bit inputs to a
  BinaryConv2d the k - 1 further bit planes are counted as lsb_bmacs.
* lsb_bmacs: the LSB pass of a fractional conv: msb_bmacs x LSB density. The
  density is the measured share of open gates when the layer has statistics
  (see fracbnn.nn.gate_statistics), else ``lsb_density`` (default 1.0, the
  worst case). "binary" mode always runs the LSB pass (density 1).
* float_macs: multiply-accumulates with a float operand (float convs, a
  FracConv2d in "float" mode, the Linear layer).
* effective_activation_bits: 1 + lsb_bmacs / msb_bmacs over the binary convs
  after the input layer; 32 when the network has none.
All counts are per image at the model's input size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from torch import nn

from .nn import BinaryConv2d, FracConv2d, RPReLU, gate_statistics
from .nn import cpu_ops
from .quant import ThermometerEncoder

_ROW_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, RPReLU, ThermometerEncoder, nn.AdaptiveAvgPool2d,
              nn.AvgPool2d)


@dataclass
class Summary:
    rows: list[dict]
    totals: dict
    model_name: str = ""
    input_size: tuple = ()
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.model_name, "input_size": list(self.input_size), "layers": self.rows,
                "totals": self.totals}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_table(self) -> str:
        cols = ["layer", "type", "output", "w_bits", "float_params", "msb_bmacs", "lsb_bmacs", "float_macs"]
        lines = [[r["name"], r["type"], "x".join(map(str, r["output_shape"])), f"{r['weight_bits']:,}",
                  f"{r['float_params']:,}", f"{r['msb_bmacs']:,}", f"{r['lsb_bmacs']:,}", f"{r['float_macs']:,}"]
                 for r in self.rows]
        widths = [max(len(c), *(len(l[i]) for l in lines)) if lines else len(c) for i, c in enumerate(cols)]
        fmt = lambda cells: "  ".join(  # noqa: E731
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        out = [fmt(cols), "-" * (sum(widths) + 2 * (len(cols) - 1))]
        out += [fmt(l) for l in lines]
        t = self.totals
        out += [
            "",
            f"binary weights:            {t['binary_weight_bits']:,} bits = {t['binary_weight_bytes']:,} bytes",
            f"float parameters:          {t['float_params']:,} = {t['float_param_bytes']:,} bytes (fp32)",
            f"input-layer BMACs:         {t['input_bmacs']:,}",
            f"MSB BMACs:                 {t['msb_bmacs']:,}",
            f"LSB BMACs:                 {t['lsb_bmacs']:,}",
            f"total BMACs:               {t['total_bmacs']:,}",
            f"float MACs:                {t['float_macs']:,}",
            f"effective activation bits: {t['effective_activation_bits']:.3f}",
            f"compression vs FP32:       {t['compression_ratio']:.2f}x",
        ]
        out += self.notes
        return "\n".join(out)


def _macs(conv: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = conv.kernel_size
    return int(out[0].numel() * (conv.in_channels // conv.groups) * kh * kw)


def _row(name: str, m: nn.Module, out: torch.Tensor, density: dict[str, float], default_density: float) -> dict:
    r = {"name": name, "type": type(m).__name__, "output_shape": list(out.shape[1:]), "weight_bits": 0,
         "float_params": 0, "msb_bmacs": 0, "lsb_bmacs": 0, "float_macs": 0, "input_layer": False}
    bias = m.bias.numel() if getattr(m, "bias", None) is not None else 0
    if isinstance(m, FracConv2d):
        macs = _macs(m, out)
        r["mode"] = m.mode
        r["float_params"] = bias + (m.threshold.numel() if m.mode == "frac" else 0)
        if m.mode == "float":
            r["float_params"] += m.weight.numel()
            r["float_macs"] = macs
        else:
            r["weight_bits"] = m.weight.numel()
            r["msb_bmacs"] = macs
            d = 1.0 if m.mode == "binary" else density.get(name, default_density)
            r["lsb_density"] = d
            r["lsb_bmacs"] = int(round(macs * d))
    elif isinstance(m, BinaryConv2d):
        macs = _macs(m, out)
        bits = getattr(m.input_quantizer, "precision", 1) if m.input_quantizer is not None else 1
        r.update(weight_bits=m.weight.numel(), float_params=bias, msb_bmacs=macs, lsb_bmacs=macs * (bits - 1),
                 input_layer=bool(getattr(m, "is_input_layer", False)))
    elif isinstance(m, nn.Conv2d):
        r.update(float_params=m.weight.numel() + bias, float_macs=_macs(m, out))
    elif isinstance(m, nn.Linear):
        r.update(float_params=m.weight.numel() + bias, float_macs=m.in_features * m.out_features)
    elif isinstance(m, nn.BatchNorm2d):
        r["float_params"] = 2 * m.num_features
    elif isinstance(m, RPReLU):
        r["float_params"] = sum(p.numel() for p in m.parameters())
    return r


@torch.no_grad()
def summarize(model: nn.Module, input_size: tuple | None = None, lsb_density: float | None = None,
              layer_densities: dict[str, float] | None = None) -> Summary:
    """Count bits and operations of ``model`` for one image.

    ``lsb_density`` overrides the LSB density of every gated layer; when None,
    per-layer densities come from ``layer_densities`` (e.g. recorded in a
    checkpoint), then from the model's own gate statistics, else 1.0.
    """
    input_size = tuple(input_size or getattr(model, "input_size", (3, 32, 32)))
    measured = {} if lsb_density is not None else {
        k: v["density"] for k, v in gate_statistics(model, all_reduce=False).items() if v["total"] > 0}
    default_density = 1.0 if lsb_density is None else float(lsb_density)
    if not 0.0 <= default_density <= 1.0:
        raise ValueError(f"lsb_density must be in [0, 1], got {lsb_density}")

    records: list[tuple[str, nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: records.append((name, mod, out)))
             for name, m in model.named_modules() if isinstance(m, _ROW_TYPES)]
    # Counting must not disturb the model: keep its mode and gate counters.
    was_training = model.training
    saved_counts = {name: dict(m.gate_counter._counts) for name, m in model.named_modules()
                    if isinstance(m, FracConv2d)}
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with cpu_ops.disabled():  # the plain path calls every module (the fused input layer skips the encoder)
            model(torch.zeros((1, *input_size), dtype=torch.uint8, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
        for name, m in model.named_modules():
            if isinstance(m, FracConv2d):
                m.gate_counter._counts = saved_counts[name]

    rows = [_row(name, m, out, measured, default_density) for name, m, out in records]
    if lsb_density is None and layer_densities:
        rows = with_lsb_densities(rows, layer_densities)
    totals = summary_totals(rows)
    return Summary(rows=rows, totals=totals, model_name=getattr(model, "spec", {}).get("name", type(model).__name__),
                   input_size=input_size)


def with_lsb_densities(rows: list[dict], densities: dict[str, float]) -> list[dict]:
    """Rows of gated ("frac" mode) layers re-counted at the given per-layer LSB densities.

    Lets a caller that summarised a model once (e.g. the trainer) apply
    densities measured later without another pass through the model.
    """
    out = []
    for r in rows:
        if r.get("mode") == "frac" and r["name"] in densities:
            d = float(densities[r["name"]])
            r = {**r, "lsb_density": d, "lsb_bmacs": int(round(r["msb_bmacs"] * d))}
        out.append(r)
    return out


def summary_totals(rows: list[dict]) -> dict:
    """Network totals of summary rows (the keys documented in docs/summary.md)."""
    binary_bits = sum(r["weight_bits"] for r in rows)
    float_params = sum(r["float_params"] for r in rows)
    input_bmacs = sum(r["msb_bmacs"] + r["lsb_bmacs"] for r in rows if r["input_layer"])
    body = [r for r in rows if not r["input_layer"]]
    msb = sum(r["msb_bmacs"] for r in body)
    lsb = sum(r["lsb_bmacs"] for r in body)
    model_bits = binary_bits + 32 * float_params
    return {
        "binary_weight_bits": binary_bits,
        "binary_weight_bytes": (binary_bits + 7) // 8,
        "float_params": float_params,
        "float_param_bytes": 4 * float_params,
        "input_bmacs": input_bmacs,
        "msb_bmacs": msb,
        "lsb_bmacs": lsb,
        "total_bmacs": input_bmacs + msb + lsb,
        "float_macs": sum(r["float_macs"] for r in rows),
        "effective_activation_bits": (1.0 + lsb / msb) if msb else 32.0,
        "model_bytes": (model_bits + 7) // 8,
        "compression_ratio": (32 * (binary_bits + float_params)) / model_bits if model_bits else 1.0,
    }
