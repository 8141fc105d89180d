"""A ReActNet FracBNN's integer program seen as accelerator layers.

``rx_program(packed)`` follows the IR graph (producers and consumers of each
buffer, never buffer names) from the thermometer stem to the classifier and
returns one :class:`RxLayer` per binary convolution with everything the
generated kernel needs: shape, weight bits, gate thresholds, the folded
epilogue, what its shortcut is (the 4-bit codes of its own input, 2x2-pooled
or channel-duplicated) and how its output is consumed (the next block's 4-bit
and 2-bit quantizers, or the global pool). Anything else is refused with a
one-line error.

Every layer's output x is only ever read through quantizers (ReActNet's
residual is never added in full precision), so the hardware never stores it:
the epilogue quantizes x at once into the next layer's MSB/LSB planes (kept
on chip) and its 4-bit shortcut codes (streamed to DRAM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..program import UnsupportedForHardware

#: the IR ops this accelerator implements
RX_OPS = frozenset({"thermometer", "binary_conv", "scale_shift", "quantize", "quantize2", "sum_pool2", "frac_conv",
                    "block_post", "channel_dup", "global_sum_pool", "linear"})
POST_TABLES = ("sign", "threshold", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul")


@dataclass(frozen=True)
class RxShape:
    """One binary convolution of the accelerator (sizes only: what the cycle and resource models need)."""

    name: str
    kind: str        # "stem" (thermometer bits, scale_shift epilogue) | "conv3" | "conv1" (gated 2-bit convs)
    cin: int
    cout: int
    h_in: int
    w_in: int
    stride: int
    shortcut: str    # "none" (stem) | "identity" | "pool" (2x2 sum of the input's codes) | "dup" (channels c mod cin)
    gated: bool      # has gate thresholds (else every LSB is used)
    last: bool       # output goes to the global pool instead of the next layer's quantizers

    @property
    def k(self) -> int:
        return 1 if self.kind == "conv1" else 3

    @property
    def h_out(self) -> int:
        return (self.h_in - 1) // self.stride + 1 if self.k == 3 else self.h_in

    @property
    def w_out(self) -> int:
        return (self.w_in - 1) // self.stride + 1 if self.k == 3 else self.w_in

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RxLayer:
    shape: RxShape
    weight_bits: np.ndarray               # uint8 0/1 (Cout, Cin, k, k), 1 = +1
    gate: np.ndarray | None               # int64 (Cout,) thresholds on S_M (None: every LSB used)
    consts: dict = field(default_factory=dict)  # int64 (Cout,) tables: stem mul/add, else POST_TABLES
    shift: int = 0
    bits: int = 32
    q4_frac: int = 0                      # the quantizers reading this layer's output (not for the last)
    q4_bits: int = 4
    q2_frac: int = 0


@dataclass
class RxProgram:
    layers: list[RxLayer]
    resolution: int
    thermo_bits: int
    fc_weight: np.ndarray                 # int64 (classes, C)
    fc_bias: np.ndarray
    input_size: tuple
    logit_denominator: int

    @property
    def shapes(self) -> list[RxShape]:
        return [l.shape for l in self.layers]


def _fail(msg: str):
    raise UnsupportedForHardware(f"{msg}; the ImageNet accelerator implements ReActNet FracBNNs exported by "
                                 "`fracbnn export` (thermometer stem, gated 2-bit 3x3/1x1 block convs, "
                                 "4-bit shortcuts)")


def is_reactnet_program(packed) -> bool:
    """True for programs of the ReActNet family (4-bit shortcut quantizers), which this accelerator takes."""
    from ...ir import Graph

    return any(n.op == "quantize" for n in Graph(packed.program).nodes)


def rx_program(packed) -> RxProgram:
    from ...ir import Graph, unpack_weight_bits

    t = packed.tensors
    shapes = packed.validate()
    g = Graph(packed.program)
    ops = {n.op for n in g.nodes}
    if "sign_bit" in ops:
        _fail("this is a binary (1-bit activation) ReActNet; the accelerator needs the FracBNN variant "
              "(reactnet-fracbnn), run BNNs on the CPU engines (`fracbnn eval/infer --engine fast`)")
    foreign = sorted(ops - RX_OPS)
    if foreign:
        _fail(f"the model uses {', '.join(foreign)}")

    def only(buffer, op):
        cons = [n for n in g.consumers(buffer) if n.op == op]
        if len(cons) != 1:
            _fail(f"{buffer} has {len(cons)} {op} consumers, expected one")
        return cons[0]

    th = g.of_kind("thermometer")
    if len(th) != 1:
        _fail("the program has no single thermometer input layer")
    th = th[0]
    stem = only(th["output"], "binary_conv")
    ss = only(stem["output"], "scale_shift")
    if stem["kernel"] != 3 or stem["padding"] != 1:
        _fail("the input convolution is not 3x3 with padding 1")
    _, _, h, w = shapes["image"]
    layers = [RxLayer(RxShape(stem.name, "stem", stem["in_channels"], stem["out_channels"], h, w, stem["stride"],
                              "none", False, False),
                      unpack_weight_bits(t[stem["weight"]], stem["in_channels"]), None,
                      {"mul": t[ss["mul"]], "add": t[ss["add"]]}, int(ss["shift"]), int(ss["bits"]))]
    x = ss["output"]
    while True:
        users = g.consumers(x)
        if len(users) == 1 and users[0].op == "global_sum_pool":
            pool = users[0]
            break
        q4 = only(x, "quantize")
        q2 = only(x, "quantize2")
        if len(users) != 2:
            _fail(f"{x} is read by {len(users)} ops; a layer output feeds one 4-bit and one 2-bit quantizer")
        prev = layers[-1]
        prev.q4_frac, prev.q4_bits, prev.q2_frac = int(q4["frac_bits"]), int(q4["bits"]), int(q2["frac_bits"])
        if prev.q4_bits > 4:
            _fail(f"{q4.name}: {prev.q4_bits}-bit shortcut codes; the DRAM shortcut path carries 4-bit codes "
                  "(train with shortcut_bits <= 4)")
        conv = only(q2.outputs[0], "frac_conv")
        if conv.inputs != q2.outputs:
            _fail(f"{conv.name} does not read the MSB and LSB planes of one quantizer")
        post = only(conv["output"], "block_post")
        sc_buf = post["shortcut"]
        codes = q4["output"]
        if sc_buf == codes:
            kind = "identity"
        else:
            sc_node = g.producer(sc_buf)
            if sc_node is None or sc_node.inputs != [codes] or sc_node.op not in ("sum_pool2", "channel_dup"):
                _fail(f"{post.name}: the shortcut is not the 4-bit codes of the layer input, pooled or duplicated")
            kind = "pool" if sc_node.op == "sum_pool2" else "dup"
        k, s = conv["kernel"], conv["stride"]
        _, cin, hh, ww = shapes[x]
        if k == 3:
            if conv["padding"] != 1 or s not in (1, 2) or conv["out_channels"] != cin:
                _fail(f"{conv.name} is not a 3x3 padding-1 in->in convolution with stride 1 or 2")
            if (kind == "pool") != (s == 2) or kind == "dup":
                _fail(f"{conv.name}: a stride-2 3x3 conv needs the 2x2-pooled shortcut, stride 1 the identity")
            if s == 2 and (hh % 2 or ww % 2):
                _fail("down-sampling needs even feature-map sizes")
        elif k == 1:
            if conv["padding"] != 0 or s != 1 or conv["out_channels"] not in (cin, 2 * cin):
                _fail(f"{conv.name} is not a 1x1 stride-1 conv keeping or doubling the channels")
            if (kind == "dup") != (conv["out_channels"] == 2 * cin) or kind == "pool":
                _fail(f"{conv.name}: a channel-doubling 1x1 conv needs the duplicated shortcut, else the identity")
        else:
            _fail(f"{conv.name} has a {k}x{k} kernel")
        gate = t[conv["gate_threshold"]] if conv["gate_threshold"] is not None else None
        nxt = g.consumers(post["output"])
        last = len(nxt) == 1 and nxt[0].op == "global_sum_pool"
        layers.append(RxLayer(RxShape(conv.name, "conv3" if k == 3 else "conv1", cin, conv["out_channels"], hh, ww,
                                      s, kind, gate is not None, last),
                              unpack_weight_bits(t[conv["weight"]], cin), gate,
                              {k_: t[post[k_]] for k_ in POST_TABLES}, int(post["shift"]), int(post["bits"])))
        x = post["output"]
    lin = only(pool["output"], "linear")
    if len(layers) < 3:
        _fail("the model has no block convolutions")
    if max(l.bits for l in layers) > 32:
        _fail(f"a layer output is {max(l.bits for l in layers)} bits wide, above the 32 the epilogue supports; "
              "export with --residual-bits 32 or less")
    if layers[0].shape.cin != shapes["image"][1] * int(th["bits"]):
        _fail("thermometer channels do not match the input convolution")
    return RxProgram(layers, int(th["resolution"]), int(th["bits"]), t[lin["weight"]], t[lin["bias"]],
                     tuple(packed.input_size), packed.logit_denominator)


def reactnet_shapes(width: float = 1.0, image_size: int = 224, thermo_bits: int = 32) -> list[RxShape]:
    """The layer shapes of ``reactnet-fracbnn`` without building or exporting a model."""
    from ...models.reactnet import REACTNET_A_BLOCKS, STEM_CHANNELS

    ch = lambda c: max(1, int(round(c * width)))  # noqa: E731
    h = image_size
    stem = RxShape("stem", "stem", 3 * thermo_bits, ch(STEM_CHANNELS), h, h, 2, "none", False, False)
    out, h = [stem], stem.h_out
    for i, (cin, cout, s) in enumerate(REACTNET_A_BLOCKS):
        last = i == len(REACTNET_A_BLOCKS) - 1
        c3 = RxShape(f"blocks.{i}.conv1", "conv3", ch(cin), ch(cin), h, h, s, "pool" if s == 2 else "identity",
                     True, False)
        h = c3.h_out
        c1 = RxShape(f"blocks.{i}.conv2", "conv1", ch(cin), ch(cout), h, h, 1, "dup" if cout == 2 * cin else
                     "identity", True, last)
        out += [c3, c1]
    return out
