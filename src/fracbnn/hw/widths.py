"""The integer widths the generated kernel declares, decided once from the packed model's values.

``declared_widths(prog)`` says, for every on-chip buffer (conv accumulators,
residual stream, 2x2 shortcut sums) and every constant table (gate
thresholds, the folded epilogue coefficients, the classifier), how many bits
its values need and which standard C integer type holds them. The generator
declares exactly those types (``fracbnn_config.h`` typedefs, ``fracbnn_params.h``
tables) and the resource model charges exactly those widths, so the two
cannot drift apart (tests/test_hw_widths.py checks the generated text).

The residual stream follows the per-layer widths of the packed model (each
``block_post`` / ``scale_shift`` node's ``bits``; ``fracbnn export
--residual-bits auto`` chooses them per layer): the kernel saturates every
layer to its own width (the layer table's ``bits``), and the buffers are as
wide as the widest layer that writes them.
"""

from __future__ import annotations

import numpy as np

#: the standard integer types the generated C++ uses, narrowest first (g++ and Vitis HLS both take them)
C_TYPES = ((8, "int8_t"), (16, "int16_t"), (32, "int32_t"), (64, "int64_t"))
#: per-output-channel constant tables of the kernel, in fracbnn_params.h
CONST_TABLES = ("GATE_THR", "SIGN", "THRESH", "POS_MUL", "POS_ADD", "NEG_MUL", "NEG_ADD", "SC_MUL")


def signed_bits(lo: int, hi: int) -> int:
    """Bits of the narrowest two's-complement integer holding every value in [lo, hi] (at least 1)."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


def c_type(bits: int) -> tuple[int, str]:
    """(bits, name) of the narrowest standard C integer type with at least ``bits`` bits."""
    for b, name in C_TYPES:
        if bits <= b:
            return b, name
    raise ValueError(f"{bits} bits do not fit a 64-bit integer")


def _entry(needed: int, minimum: int = 8) -> dict:
    bits, name = c_type(max(needed, minimum))
    return {"needed": int(needed), "bits": bits, "ctype": name}


def _values_entry(arr) -> dict:
    a = np.asarray(arr, np.int64)
    return _entry(signed_bits(int(a.min()), int(a.max())) if a.size else 1)


def const_tables(prog) -> dict[str, np.ndarray]:
    """The per-channel constant tables of the kernel (concatenated over layers at each layer's p_off)."""
    total = sum(l.shape.cout for l in prog.layers)
    tables = {k: np.zeros(total, np.int64) for k in CONST_TABLES}
    off = 0
    for layer in prog.layers:
        sl = slice(off, off + layer.shape.cout)
        if layer.gate is not None:
            tables["GATE_THR"][sl] = layer.gate
        for k, v in layer.consts.items():
            tables["THRESH" if k == "threshold" else k.upper()][sl] = v
        off += layer.shape.cout
    return tables


#: coefficient tables stored without their common trailing zero bits (the exporter puts multipliers and offsets
#: on coarse grids, q_grid); the kernel shifts them back left by <NAME>_SHIFT, which costs only wiring
SHIFTED_TABLES = ("POS_MUL", "POS_ADD", "NEG_MUL", "NEG_ADD", "SC_MUL")


def stored_shift(values: np.ndarray) -> int:
    """The trailing zero bits every value shares (0 for an all-zero table): values >> shift << shift == values."""
    v = np.asarray(values, np.int64)
    nz = v[v != 0]
    if not nz.size:
        return 0
    k = 0
    while k < 62 and not np.any(nz & np.int64((1 << (k + 1)) - 1)):
        k += 1
    return k


def declared_widths(prog) -> dict:
    """Per buffer and constant table: ``needed`` bits, and the ``bits`` / ``ctype`` the kernel declares.

    * ``acc``: conv accumulator A = 2 S_M + S_L, |A| <= 3 x 9 x Cin (S_M alone for the stem);
    * ``res``: the residual stream, the widest layer's saturation width;
    * ``sc``: 2x2 sums of the residual entering a down-sampling block (its width + 2 bits);
    * ``pool``: the global sum pool's per-channel sums (last layer's width + log2(H W));
    * one entry per constant table (``CONST_TABLES``, ``FC_W``, ``FC_BIAS``): the range of its values as
      stored, i.e. after dropping the coefficient tables' common trailing zeros (``shift``, see
      ``SHIFTED_TABLES``).
    Buffers are at least 16 bits wide (the banked memories' narrowest port); tables at least 8.
    """
    layers = prog.layers
    acc_bound = max(9 * l.shape.cin * (3 if l.shape.kind == "frac" else 1) for l in layers)
    res_bits = max(l.bits for l in layers)
    sc_bits = max([layers[i - 1].bits + 2 for i in range(1, len(layers)) if layers[i].shape.residual == "downsample"]
                  or [0])
    out = {
        "acc": _entry(signed_bits(-acc_bound, acc_bound), 16),
        "res": _entry(res_bits, 16),
        "sc": _entry(sc_bits, 16),
        # global sum pool over the last layer's H x W pixels
        "pool": _entry(layers[-1].bits + max(1, (layers[-1].shape.h_out * layers[-1].shape.w_out - 1).bit_length()), 16),
        "layer_bits": {l.shape.name: int(l.bits) for l in layers},
    }
    for k, v in const_tables(prog).items():
        shift = stored_shift(v) if k in SHIFTED_TABLES else 0
        out[k] = dict(_values_entry(v >> np.int64(shift)), shift=shift)
    out["FC_W"] = _values_entry(prog.fc_weight)
    out["FC_BIAS"] = _values_entry(prog.fc_bias)
    return out


def dsp48(a_bits: int, b_bits: int) -> int:
    """DSP48E2 slices of one a x b-bit signed multiplier (27 x 18 per slice), the cheaper orientation."""
    return min(-(-a_bits // 27) * -(-b_bits // 18), -(-b_bits // 27) * -(-a_bits // 18))


def charged_bits(cfg, widths: dict | None) -> dict[str, int]:
    """The widths the resource model charges: the declared ones (``declared_widths``, as the generator wrote
    them), or, for a design without a model (``widths`` None), the configuration's nominal widths.

    Besides the buffers and tables: ``epilogue``, the width of the epilogue's add/compare datapath (the
    widest operand sum its declared operand types give, at most the 64 bits fracbnn_int.h computes in), and
    ``epilogue_dsp``, DSP48E2 slices per epilogue unit for its three multipliers (sign x A, pos/neg
    multiplier x A, shortcut multiplier x shortcut).
    """
    if widths is None:
        out = {"acc": cfg.acc_bits, "res": cfg.residual_bits, "sc": cfg.residual_bits, "pool": cfg.residual_bits,
               "FC_W": cfg.param_bits, **{k: cfg.param_bits for k in CONST_TABLES}}
        out.update(epilogue=cfg.residual_bits, epilogue_dsp=cfg.epilogue_mults)
        return out
    out = {k: int(widths[k]["bits"]) for k in ("acc", "res", "sc", "pool", "FC_W", *CONST_TABLES)}
    sh = {k: int(widths[k].get("shift", 0)) for k in CONST_TABLES}
    mul = max(out["POS_MUL"], out["NEG_MUL"])  # the multipliers as stored: what the DSPs multiply
    sc = max(out["res"], out["sc"])
    # the sums see the shifted-back values (the shift is wiring; the adders are as wide as the values)
    value = {k: out[k] + sh[k] for k in ("POS_MUL", "NEG_MUL", "POS_ADD", "NEG_ADD", "SC_MUL")}
    out["epilogue"] = min(64, max(max(value["POS_MUL"], value["NEG_MUL"]) + out["acc"], value["POS_ADD"],
                                  value["NEG_ADD"], value["SC_MUL"] + sc) + 2)
    out["epilogue_dsp"] = dsp48(out["SIGN"], out["acc"]) + dsp48(mul, out["acc"]) + dsp48(out["SC_MUL"], sc)
    return out
