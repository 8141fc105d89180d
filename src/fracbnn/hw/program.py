"""The packed model's program seen as accelerator layers.

``hw_program(packed)`` walks the integer program of a CIFAR FracBNN ResNet
(written by ``fracbnn.deploy.export``) and returns one record per binary
convolution with everything the hardware needs: its shape (a
:class:`~fracbnn.hw.layers.ConvLayer`), weight bits, gate thresholds and the
folded epilogue constants. The accelerator supports exactly the pattern the
exporter writes for these models; anything else is refused with a clear
message rather than mis-compiled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import FracBNNError
from .layers import ConvLayer
from .design import HwConfig, segment_plan


class UnsupportedForHardware(FracBNNError):
    """The packed program has an op pattern the accelerator does not implement."""


@dataclass
class HwLayer:
    shape: ConvLayer
    weight_bits: np.ndarray          # uint8 0/1 (Cout, Cin, 3, 3), 1 = +1
    gate: np.ndarray | None          # int64 (Cout,) gate thresholds on S_M; None = always open
    consts: dict = field(default_factory=dict)  # epilogue constants, int64 (Cout,) each
    shift: int = 0
    bits: int = 16
    order: np.ndarray | None = None  # engine slot -> output channel (None: identity)
    msb: str | None = None           # IR buffer of the layer's MSB input plane (None for the stem)
    out_frac: int = 0                # F of the output, as the next layer's quantizer reads it (per layer)

    def channel_order(self) -> np.ndarray:
        return np.arange(self.shape.cout) if self.order is None else self.order


@dataclass
class HwProgram:
    layers: list[HwLayer]
    resolution: int
    thermo_bits: int
    fc_weight: np.ndarray            # int64 (classes, C)
    fc_bias: np.ndarray              # int64 (classes,)
    input_size: tuple
    logit_denominator: int

    @property
    def shapes(self) -> list[ConvLayer]:
        return [l.shape for l in self.layers]


#: the IR ops the accelerator implements
HW_OPS = frozenset({"thermometer", "binary_conv", "scale_shift", "avgpool2_dup", "quantize2", "frac_conv", "block_post",
                    "global_sum_pool", "linear"})


def _fail(msg: str):
    raise UnsupportedForHardware(f"{msg}; the accelerator implements CIFAR FracBNN ResNets exported by "
                                 "`fracbnn export` (thermometer stem, gated 2-bit block convs)")


def hw_program(packed) -> HwProgram:
    """The accelerator's layer list, read from the IR graph (ops and the buffers they declare)."""
    from ..ir import Graph, unpack_weight_bits

    t = packed.tensors
    shapes = packed.validate()
    g = Graph(packed.program)
    nodes = g.nodes
    foreign = sorted({n.op for n in nodes} - HW_OPS)
    if foreign:
        name = (packed.meta.get("model") or {}).get("name", "this model")
        raise UnsupportedForHardware(f"{name} uses {', '.join(foreign)}, which the generated accelerator does not "
                                     "implement yet (it supports the CIFAR FracBNN ResNets); run it on the CPU "
                                     "engines (`fracbnn eval/infer --engine fast`)")
    if [n.op for n in nodes[:3]] != ["thermometer", "binary_conv", "scale_shift"] or \
            nodes[1].inputs != nodes[0].outputs or nodes[2].inputs != nodes[1].outputs:
        _fail("the program does not start with thermometer -> binary_conv -> scale_shift")
    th, stem, ss = nodes[:3]
    if stem["kernel"] != 3 or stem["padding"] != 1 or stem["stride"] != 1:
        _fail("the input convolution is not 3x3, stride 1, padding 1")
    _, c_img, h, w = shapes["image"]
    layers = [HwLayer(ConvLayer(stem.name, "input", stem["in_channels"], stem["out_channels"], h, w, 1, "none"),
                      unpack_weight_bits(t[stem["weight"]], stem["in_channels"]), None,
                      {"pos_mul": t[ss["mul"]], "pos_add": t[ss["add"]]}, int(ss["shift"]), int(ss["bits"]))]
    x = ss["output"]
    i = 3
    while i < len(nodes) and nodes[i].op != "global_sum_pool":
        node = nodes[i]
        pooled = None
        if node.op == "avgpool2_dup":
            if node.inputs != [x]:
                _fail("a shortcut pools something other than the block input")
            pooled, i = node["output"], i + 1
            node = nodes[i]
        if node.op != "quantize2" or node.inputs != [x]:
            _fail(f"op {i} ({node.op}) is not the 2-bit quantizer of the residual stream")
        layers[-1].out_frac = int(node["frac_bits"])  # the format of the residual the previous layer wrote
        conv, post = nodes[i + 1], nodes[i + 2]
        if conv.op != "frac_conv" or post.op != "block_post" or conv.inputs != node.outputs \
                or post["input"] != conv["output"]:
            _fail(f"op {i + 1} is not frac_conv of the quantizer's planes followed by block_post")
        if conv["kernel"] != 3 or conv["padding"] != 1 or conv["stride"] not in (1, 2):
            _fail(f"{conv.name} is not a 3x3 padding-1 convolution with stride 1 or 2")
        if pooled is not None:
            if post["shortcut"] != pooled or conv["stride"] != 2 or conv["out_channels"] != 2 * conv["in_channels"]:
                _fail(f"{conv.name}: a pooled shortcut must go with a stride-2 channel-doubling conv")
            residual = "downsample"
            hin = shapes[x][2:]
            if hin[0] % 2 or hin[1] % 2:
                _fail("down-sampling needs even feature-map sizes")
        else:
            if post["shortcut"] != x or conv["stride"] != 1 or conv["in_channels"] != conv["out_channels"]:
                _fail(f"{conv.name}: an identity shortcut needs a stride-1 conv with equal channels")
            residual = "identity"
        _, cin, hh, ww = shapes[x]
        gate = t[conv["gate_threshold"]] if conv["gate_threshold"] is not None else None
        consts = {k: t[post[k]] for k in ("sign", "threshold", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul")}
        layers.append(HwLayer(ConvLayer(conv.name, "frac", cin, conv["out_channels"], hh, ww, conv["stride"],
                                        residual),
                              unpack_weight_bits(t[conv["weight"]], cin), gate, consts, int(post["shift"]),
                              int(post["bits"]), msb=conv.inputs[0]))
        x = post["output"]
        i += 3
    if i >= len(nodes) or nodes[i].inputs != [x] or i + 1 >= len(nodes) or nodes[i + 1].op != "linear":
        _fail("the program does not end in global_sum_pool -> linear on the residual stream")
    lin = nodes[i + 1]
    if len(layers) < 2:
        _fail("the model has no gated block convolutions")
    bits = {l.bits for l in layers}
    if max(bits) > 32:
        _fail(f"residual width {max(bits)} bits exceeds the 32 the accelerator supports; export with "
              "--residual-bits 32 or less")
    return HwProgram(layers, int(th["resolution"]), int(th["bits"]),
                     t[lin["weight"]], t[lin["bias"]], tuple(packed.input_size), packed.logit_denominator)


def weight_words(layer: HwLayer, cfg: HwConfig) -> np.ndarray:
    """Weights as engine words: (groups * words, 9, lanes) uint64, bit b of word k = channel k*seg + b."""
    s = layer.shape
    seg, _, kw = segment_plan(s.cin, s.w_out, cfg)
    groups = math.ceil(s.cout / cfg.lanes)
    out = np.zeros((groups * kw, 9, cfg.lanes), np.uint64)
    wb = layer.weight_bits.reshape(s.cout, s.cin, 9).astype(np.uint64)
    for slot, oc in enumerate(layer.channel_order()):
        g, p = divmod(slot, cfg.lanes)
        for k in range(kw):
            chans = wb[oc, k * seg:min(s.cin, (k + 1) * seg), :]  # (n, 9)
            shifts = np.arange(chans.shape[0], dtype=np.uint64).reshape(-1, 1)
            out[g * kw + k, :, p] = np.bitwise_or.reduce(chans << shifts, axis=0) if len(chans) else 0
    return out
