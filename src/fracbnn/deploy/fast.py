"""The fast CPU engine: the golden engine's integer program, fused and compiled.

The golden engine (:mod:`fracbnn.deploy.golden`) runs one numpy op at a time
on int64 NCHW arrays. This engine compiles the same op program into a few
fused steps and runs whole batches in C (``fracbnn.deploy._fastkernels``),
on all cores through OpenMP:

* ``thermometer -> binary_conv -> scale_shift``  becomes one THERMO step: a
  thermometer bit plane of colour c at a tap is decided by the pixel's level
  n alone, so the conv's sum over those 32 bits is a table entry
  ``lut[c, u, v, n, o]`` (27 table adds per output instead of 864 BMACs);
* ``quantize2 / sign_bit -> frac_conv / binary_conv -> block_post /
  scale_shift`` becomes one QCONV step: residual -> packed bit planes, a
  64-bit XNOR-popcount convolution that counts only valid taps (exact zero
  padding), the precision gate, and the folded fixed-point post op; the
  block_post shortcut (a residual, optionally through ``quantize``, then
  ``sum_pool2`` / ``channel_dup`` / ``avgpool2_dup``) is computed on the fly
  from the residual buffer, row by row;
* ``global_sum_pool -> linear`` becomes one POOLFC step.

The program is read through :class:`fracbnn.ir.Graph` (producers and
consumers of each buffer, as the op classes declare them), never by buffer
names. Every integer operation is the golden one (same int64 wrap-around, same
round_shift and saturate), so the logits are identical; tests prove it on
random models and images. Programs that do not fit these patterns are
refused with an EngineError (use the golden engine for them).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ir.arith import thermometer_level
from .engines import Engine, EngineError
from .packed import PackedModel, unpack_weight_bits

try:  # the compiled part is optional at install time (see setup.py)
    from . import _fastkernels as _fk
    _IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the build
    _fk = None
    _IMPORT_ERROR = e

#: Must equal FB_ABI_VERSION in _kernels/fastkernels.c (a stale build is refused).
ABI_VERSION = 5

# step kinds and post ops (same numbers as the C enums)
THERMO, QCONV, POOLFC = 1, 2, 3
POST_SCALE_SHIFT, POST_BLOCK = 1, 2
#: block_post shortcut flags: present; 2x2 window sum; 4-bit (k-bit) quantize codes of the residual first.
#: A shortcut with fewer channels than the output (sc_C < O) is repeated over them (channel duplication).
SC_ON, SC_POOL, SC_QUANT = 1, 2, 4
_POST_OPS = ("scale_shift", "block_post")
_CONVS = ("binary_conv", "frac_conv")
_SHORTCUT_OPS = ("quantize", "sum_pool2", "channel_dup", "avgpool2_dup")
#: every op the plan compiler knows how to fuse into its steps
_FUSED_OPS = _POST_OPS + _CONVS + _SHORTCUT_OPS + ("thermometer", "quantize2", "sign_bit", "global_sum_pool", "linear")
_ARRAYS = ("wbits", "gate", "mul", "add", "sign", "thr", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul",
           "lut", "level_of", "fc_w", "fc_b", "row_cls", "col_cls", "corr", "nvalid", "wbits_t")
_MAX_CHANNELS = 4096
BUILD_HINT = ("reinstall fracbnn with a C compiler available (`pip install -e .` in the source tree, "
              "gcc/clang needed), or use the golden engine")


def kernels():
    """The compiled module, or EngineError saying how to build it."""
    if _fk is None:
        raise EngineError(f"the fast engine's compiled extension is not available ({_IMPORT_ERROR}); {BUILD_HINT}")
    abi = _fk.info()["abi"]
    if abi != ABI_VERSION:
        raise EngineError(f"the fast engine's compiled extension is stale (ABI {abi}, need {ABI_VERSION}); "
                          f"{BUILD_HINT}")
    return _fk


def available() -> bool:
    try:
        kernels()
    except EngineError:
        return False
    return True


def build_info() -> dict:
    """ABI version, OpenMP on/off, default thread count and the kernel set picked for this CPU."""
    return dict(kernels().info())


# --------------------------------------------------------------------------- packing


def pack_planes(bits: np.ndarray) -> np.ndarray:
    """0/1 bits (N, C, H, W) -> uint64 words (N, H, W, ceil(C/64)); channel c is bit c % 64 of word c // 64."""
    n, c, h, w = bits.shape
    wpp = (c + 63) // 64
    hwc = np.zeros((n, h, w, wpp * 64), np.uint8)
    hwc[..., :c] = np.asarray(bits, np.uint8).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(np.packbits(hwc, axis=-1, bitorder="little").view("<u8").astype(np.uint64))


def pack_window_weights(w_bits: np.ndarray) -> np.ndarray:
    """0/1 weights (O, Cin, K, K) -> uint64 (O, nK): bit t*Cin + c is tap t = (u, v) row-major, channel c.

    This is the order in which the kernels gather an output pixel's window.
    """
    o, cin, k, _ = w_bits.shape
    flat = np.asarray(w_bits, np.uint8).transpose(0, 2, 3, 1).reshape(o, k * k * cin)
    nk = (k * k * cin + 63) // 64
    padded = np.zeros((o, nk * 64), np.uint8)
    padded[:, :flat.shape[1]] = flat
    return np.ascontiguousarray(np.packbits(padded, axis=-1, bitorder="little").view("<u8").astype(np.uint64))


def border_tables(w_bits: np.ndarray, h: int, w: int, stride: int, padding: int):
    """Zero-padding correction of the kernels, per border class of output pixel.

    The kernels gather windows from bit planes with a ring of ``padding``
    zero pixels; at a padded tap the XOR with the weights then counts the
    weight's one-bits as disagreements. An output pixel's class is decided by
    how many window rows/columns fall outside the image at each side; per
    class this returns the valid bit count and, per output channel, the
    weight ones on its padded taps (subtracted by the kernels):
    (row_cls (Ho,), col_cls (Wo,), corr (classes, O), nvalid (classes,), ncc), all int32.
    """
    o, cin, k, _ = w_bits.shape
    ones = np.asarray(w_bits, np.int64).sum(axis=1)  # (O, K, K) one-bits per tap

    def classes(size, n_out):
        spans = [(max(0, padding - i * stride), max(0, i * stride - padding + k - size)) for i in range(n_out)]
        kinds = sorted(set(spans))
        return np.array([kinds.index(sp) for sp in spans], np.int32), kinds

    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    row_cls, rows = classes(h, ho)
    col_cls, cols = classes(w, wo)
    corr = np.zeros((len(rows), len(cols), o), np.int32)
    nvalid = np.zeros((len(rows), len(cols)), np.int32)
    for a, (top, bottom) in enumerate(rows):
        valid_u = (np.arange(k) >= top) & (np.arange(k) < k - bottom)
        for b, (left, right) in enumerate(cols):
            valid_v = (np.arange(k) >= left) & (np.arange(k) < k - right)
            valid = valid_u[:, None] & valid_v[None, :]
            corr[a, b] = (ones * ~valid).sum(axis=(1, 2))
            nvalid[a, b] = cin * valid.sum()
    return (row_cls, col_cls, np.ascontiguousarray(corr.reshape(-1, o)), np.ascontiguousarray(nvalid.reshape(-1)),
            len(cols))


def binary_conv(x_bits: np.ndarray, w_bits: np.ndarray, stride: int = 1, padding: int = 0,
                threads: int | None = None, simd: bool = True) -> np.ndarray:
    """The bare compiled XNOR-popcount convolution: int32 (N, O, Ho, Wo) of the +-1 conv with zero padding.

    ``x_bits`` (N, C, H, W) and ``w_bits`` (O, C, K, K) hold 0/1 for -1/+1.
    Same result as :func:`fracbnn.deploy.golden.binary_conv2d`.
    """
    fk = kernels()
    n, c, h, w = x_bits.shape
    o, c2, k, k2 = w_bits.shape
    if c2 != c or k != k2:
        raise ValueError(f"weights {w_bits.shape} do not fit input {x_bits.shape}")
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError("kernel larger than the padded input")
    out = np.zeros((n, ho, wo, o), np.int32)
    p = padding
    ringed = np.pad(np.asarray(x_bits, np.uint8), ((0, 0), (0, 0), (p, p), (p, p)))  # zero bits in the ring
    row_cls, col_cls, corr, nvalid, ncc = border_tables(w_bits, h, w, stride, padding)
    fk.binary_conv(pack_planes(ringed), pack_window_weights(w_bits), row_cls, col_cls, corr, nvalid, out,
                   (n, c, h, w, o, k, stride, padding, ncc), int(threads or 0), int(bool(simd)))
    return out.transpose(0, 3, 1, 2)


def thermometer_table(w_bits: np.ndarray, colours: int, bits: int) -> np.ndarray:
    """Partial sums of the thermometer conv: int32 (colours, K, K, bits+1, O).

    Entry [c, u, v, n, o] = sum over k < bits of w[o, c*bits + k, u, v] * (+1 if k < n else -1),
    the exact contribution of a pixel of level n of colour c at tap (u, v).
    """
    o, cin, k, _ = w_bits.shape
    w = 2 * np.asarray(w_bits, np.int64).reshape(o, colours, bits, k, k) - 1  # (O, C, T, K, K)
    w = w.transpose(1, 3, 4, 2, 0)  # (C, K, K, T, O)
    below = np.concatenate([np.zeros_like(w[:, :, :, :1]), np.cumsum(w, axis=3)], axis=3)  # sum over k < n
    total = below[:, :, :, -1:]
    return np.ascontiguousarray((2 * below - total).astype(np.int32))


# --------------------------------------------------------------------------- program compiler


class _Unsupported(EngineError):
    pass


def _no(msg: str):
    raise _Unsupported(f"the fast engine cannot run this program: {msg}; use the golden engine")


def _i64(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.int64))


class _Plan:
    """Steps (ints + arrays per step) for the C side, compiled from a packed model's program.

    The program is read as a graph (:class:`fracbnn.ir.Graph`): every step is
    anchored at a post op (``scale_shift`` / ``block_post``) or at ``linear``,
    and found by following producers of the buffers its op class declares;
    ops whose results the kernels compute on the fly (bit planes, shortcut
    codes, pools, channel duplication) are checked to feed nothing else.
    """

    def __init__(self, packed: PackedModel):
        self.packed = packed
        self.shapes = packed.validate()  # batch-1 shapes of every buffer
        self.tensors = packed.tensors
        self.graph = Graph(packed.program)
        self.steps: list[tuple[dict, dict]] = []
        self.gate_names: list[str] = []
        self._compile()

    # -- helpers
    def _chw(self, name):
        s = self.shapes[name]
        return s[1], s[2], s[3]

    def _only_read_by(self, buffer: str, ops: tuple[str, ...], what: str):
        readers = self.graph.consumers(buffer)
        if not readers or any(n.op not in ops for n in readers):
            _no(f"{what} {buffer!r} is read by {sorted({n.op for n in readers}) or 'nothing'} "
                f"(the kernels fuse it into {', '.join(ops)})")

    def _residual(self, buffer: str, what: str) -> str:
        """``buffer`` if a post op (a step) writes it: the int64 residual buffers the kernels keep."""
        node = self.graph.producer(buffer)
        if node is None or node.op not in _POST_OPS:
            _no(f"{what} must be a residual buffer (written by scale_shift or block_post), not {buffer!r}")
        return buffer

    def _compile(self):
        g = self.graph
        for node in g.nodes:
            if node.op not in _FUSED_OPS:
                _no(f"op {node.op!r}")
        for node in g.nodes:
            if node.op in _POST_OPS:
                self._conv_step(node)
            elif node.op == "linear":
                self._head_step(node)
            elif node.op in _CONVS:
                self._only_read_by(node["output"], _POST_OPS, "convolution output")
                if len(g.consumers(node["output"])) != 1:
                    _no(f"convolution output {node['output']!r} is read more than once")
            elif node.op in ("quantize2", "sign_bit"):
                for b in node.outputs:
                    self._only_read_by(b, _CONVS, "bit plane")
            elif node.op in _SHORTCUT_OPS:
                self._only_read_by(node["output"], _SHORTCUT_OPS + ("block_post",), "shortcut buffer")
            elif node.op == "thermometer":
                if g.producer(node["input"]) is not None:  # no producer: the program's input image
                    _no("thermometer of something other than the image")
                self._only_read_by(node["output"], ("binary_conv",), "thermometer output")
            elif node.op == "global_sum_pool":
                self._only_read_by(node["output"], ("linear",), "pooled buffer")
        if not self.steps or self.steps[-1][0]["kind"] != POOLFC or g.nodes[-1].op != "linear":
            _no("the program must end with global_sum_pool -> linear -> logits")

    def _head_step(self, node):
        pool = self.graph.producer(node["input"])
        if pool is None or pool.op != "global_sum_pool" or node["output"] != "logits":
            _no("linear must read a global_sum_pool and write 'logits'")
        src = self._residual(pool["input"], "global_sum_pool's input")
        c, h, w = self._chw(src)
        wt, bias = self.tensors[node["weight"]], self.tensors[node["bias"]]
        self.steps.append((dict(kind=POOLFC, Cin=c, H=h, W=w, O=c, Ho=h, Wo=w, src=src, ncls=int(wt.shape[0])),
                           dict(fc_w=_i64(wt), fc_b=_i64(bias))))

    def _shortcut(self, buffer: str, o: int, ho: int, wo: int) -> dict:
        """Step ints of a block_post shortcut: a residual, optionally quantized, 2x2-summed, channel-repeated.

        Walks producers from ``buffer`` back to the residual; the kernels apply
        quantize first, then the pool and the duplication (which commute).
        """
        chain, b = [], buffer
        node = self.graph.producer(b)
        while node is not None and node.op in _SHORTCUT_OPS:
            chain.append(node)
            b = node["input"]
            node = self.graph.producer(b)
        src = self._residual(b, "a block_post shortcut's source")
        ops = [n.op for n in reversed(chain)]  # in application order, from the residual
        pools = ops.count("sum_pool2") + ops.count("avgpool2_dup")
        dups = ops.count("channel_dup") + ops.count("avgpool2_dup")
        quant = [n for n in chain if n.op == "quantize"]
        if pools > 1 or dups > 1 or len(quant) > 1 or (quant and ops[0] != "quantize"):
            _no(f"shortcut chain {' -> '.join(ops)} (the kernels take quantize, then one 2x2 sum and/or "
                "one channel duplication)")
        c, hs, ws = self._chw(src)
        side = (hs // 2, ws // 2) if pools else (hs, ws)
        if c * (2 if dups else 1) != o or side != (ho, wo):
            _no(f"shortcut {buffer!r} does not match the block's output shape")
        ints = dict(sc=src, sc_mode=SC_ON | (SC_POOL if pools else 0), sc_C=c, sc_W=ws)
        if quant:
            ints.update(sc_mode=ints["sc_mode"] | SC_QUANT, sc_qbits=int(quant[0]["bits"]),
                        sc_qfrac=int(quant[0]["frac_bits"]))
        return ints

    def _conv_step(self, post):
        g = self.graph
        conv = g.producer(post["input"])
        if conv is None or conv.op not in _CONVS:
            _no(f"{post.op} must read a convolution's output")
        x_bufs = conv.inputs
        cin, h, w = self._chw(x_bufs[0])
        o, ho, wo = self._chw(post["input"])
        k, s, p = int(conv["kernel"]), int(conv["stride"]), int(conv["padding"])
        ints = dict(Cin=cin, H=h, W=w, O=o, Ho=ho, Wo=wo, K=k, stride=s, pad=p)
        arrs: dict[str, np.ndarray] = {}
        wbits = unpack_weight_bits(self.tensors[conv["weight"]], cin)  # (O, Cin, K, K) 0/1
        quant = g.producer(x_bufs[0])
        if quant is None:
            _no(f"a convolution reads {x_bufs[0]!r}, which nothing computes")
        if conv.op == "binary_conv" and quant.op == "thermometer":
            colours = self.shapes[quant["input"]][1]
            bits, res = int(quant["bits"]), int(quant["resolution"])
            if cin != colours * bits:
                _no("thermometer channels do not match the conv")
            level = np.minimum(thermometer_level(np.arange(256, dtype=np.int64), res), bits)
            ints.update(kind=THERMO, levels=bits + 1, img_C=colours, Cin=colours)
            arrs.update(lut=thermometer_table(wbits, colours, bits), level_of=level.astype(np.int32))
        else:
            if cin > _MAX_CHANNELS:
                _no(f"{cin} input channels (the kernels take up to {_MAX_CHANNELS})")
            if conv.op == "binary_conv":
                if quant.op != "sign_bit":
                    _no("binary_conv must read a sign_bit plane or the thermometer")
                ints.update(qbits=1, frac_bits=0)
            else:  # frac_conv: the MSB and LSB planes of one quantize2, in that order
                if quant.op != "quantize2" or quant.outputs != x_bufs:
                    _no("frac_conv must read the MSB and LSB planes of one quantize2")
                ints.update(qbits=2, frac_bits=int(quant["frac_bits"]))
                if conv["gate_threshold"] is not None:
                    arrs["gate"] = _i64(self.tensors[conv["gate_threshold"]])
                    ints["gate_index"] = len(self.gate_names)
                    self.gate_names.append(conv["output"])
            ints.update(kind=QCONV, src=self._residual(quant["input"], f"{quant.op}'s input"))
            arrs["wbits"] = pack_window_weights(wbits)
            self._border(ints, arrs, wbits, h, w, s, p)
        t = self.tensors
        ints.update(shift=int(post["shift"]), bits=int(post["bits"]), dst=post["output"])
        if post.op == "scale_shift":
            ints["post"] = POST_SCALE_SHIFT
            arrs.update(mul=_i64(t[post["mul"]]), add=_i64(t[post["add"]]))
        else:
            ints["post"] = POST_BLOCK
            for name in ("sign", "thr", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul"):
                arrs[name] = _i64(t[post["threshold" if name == "thr" else name]])
            ints.update(self._shortcut(post["shortcut"], o, ho, wo))
        self.steps.append((ints, arrs))

    @staticmethod
    def _border(ints, arrs, wbits, h, w, s, p):
        if arrs["wbits"].shape[0] % 4 == 0:  # 4 channels interleaved, for the AVX2 dot product
            o, nk = arrs["wbits"].shape
            arrs["wbits_t"] = np.ascontiguousarray(arrs["wbits"].reshape(o // 4, 4, nk).transpose(0, 2, 1))
        row_cls, col_cls, corr, nvalid, ncc = border_tables(wbits, h, w, s, p)
        arrs.update(row_cls=row_cls, col_cls=col_cls, corr=corr, nvalid=nvalid)
        ints["ncc"] = ncc

    # -- lowering to the C tuples
    def lower(self):
        """(meta tuple, step tuples) for _fastkernels.make_plan; residual buffers share slots by liveness."""
        reads = []  # per step, residual buffers read
        for ints, _ in self.steps:
            r = [ints[k] for k in ("src", "sc") if ints.get(k)]
            reads.append(r)
        last = {}
        for i, r in enumerate(reads):
            for b in r:
                last[b] = i
        slot_of, free, nslots = {}, [], 0
        for i, (ints, _) in enumerate(self.steps):
            for b in reads[i]:
                if b not in slot_of:
                    _no(f"buffer {b!r} is read before it is computed")
            dst = ints.get("dst")
            if dst is not None:
                busy = {slot_of[b] for b in reads[i]}
                choice = next((s for s in free if s not in busy), None)
                if choice is None:
                    choice, nslots = nslots, nslots + 1
                else:
                    free.remove(choice)
                slot_of[dst] = choice
                if dst not in last:  # computed but never read: its slot is free again right away
                    free.append(choice)
            for b in set(reads[i]):
                if last[b] == i:
                    free.append(slot_of[b])
        elems = [int(np.prod(self._chw(b))) for b in slot_of]
        slot_elems = max(elems) if elems else 1
        max_o = max(ints["O"] for ints, _ in self.steps)
        max_nk = max((ints["K"] ** 2 * ints["Cin"] + 63) // 64 for ints, _ in self.steps if ints["kind"] == QCONV)
        max_wpp = max(((ints["Cin"] + 63) // 64) * (ints["H"] + 2 * ints["pad"]) * (ints["W"] + 2 * ints["pad"])
                      for ints, _ in self.steps if ints["kind"] == QCONV)
        c, h, w = self.packed.input_size
        ncls = self.steps[-1][0]["ncls"]
        meta = (max(nslots, 1), slot_elems, max_wpp, max(max_o, ncls), max_nk, ncls, len(self.gate_names), c, h, w)
        out = []
        for ints, arrs in self.steps:
            g = lambda k, d=0: int(ints.get(k, d))  # noqa: E731
            tup = (g("kind"), g("Cin"), g("H"), g("W"), g("O"), g("Ho"), g("Wo"), g("K", 1), g("stride", 1),
                   g("pad"), slot_of.get(ints.get("src"), 0), slot_of.get(ints.get("dst"), 0),
                   slot_of.get(ints.get("sc"), 0), g("qbits"), g("frac_bits"), g("post"), g("shift"), g("bits", 2),
                   g("sc_mode"), g("sc_C"), g("sc_W"), g("levels"), g("img_C"), g("ncls"),
                   g("gate_index", -1), ABI_VERSION, g("ncc", 1), g("sc_qbits"), g("sc_qfrac"))
            out.append((tup, tuple(arrs.get(k) for k in _ARRAYS)))
        return meta, out


class FastEngine(Engine):
    """Fused, multi-threaded C engine; logits identical to the golden engine.

    ``threads``: OpenMP threads (default: all cores, or OMP_NUM_THREADS).
    ``simd``: allow the AVX2/POPCNT kernels when the CPU has them (False forces
    the portable build of the same code, for testing).
    ``sparse_lsb``: skip the LSB pass where the precision gate is closed. Off
    by default: on a CPU the dense pass shares its loads with the MSB pass and
    is faster unless most gates are closed (see docs/fast-engine.md). The
    logits are the same either way.
    """

    name = "fast"

    def __init__(self, packed: PackedModel, threads: int | None = None, simd: bool = True,
                 sparse_lsb: bool = False):
        super().__init__(packed)
        self._fk = kernels()
        self.threads = int(threads or 0)
        self.simd = bool(simd)
        plan = _Plan(packed)
        self.gate_names = list(plan.gate_names)
        self._plan = self._fk.make_plan(*plan.lower())  # holds buffer views of the step arrays
        self.sparse_lsb = bool(sparse_lsb)
        self._fk.set_sparse(self._plan, self.sparse_lsb)
        self._ncls = packed.num_classes
        #: frac_conv output buffer -> (open gates, outputs) over every image seen so far, as in the golden
        #: engine (a frac_conv without a gate counts every output as open)
        self.gate_counts: dict[str, tuple[int, int]] = {}
        self._frac_convs = [(op["output"], int(np.prod(plan.shapes[op["output"]][1:])))
                            for op in plan.graph.of_kind("frac_conv")]
        #: saturating node output -> (values clipped to its width, values) over every image seen so far, as in
        #: the golden engine (the kernels count, per step, what its post op clips)
        self.saturation_counts: dict[str, tuple[int, int]] = {}
        self._nsteps = len(plan.steps)
        self._post_steps = [(i, ints["dst"], int(ints["O"]) * int(ints["Ho"]) * int(ints["Wo"]))
                            for i, (ints, _) in enumerate(plan.steps) if ints["kind"] in (THERMO, QCONV)]

    def logits(self, pixels) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        out = np.zeros((len(pixels), self._ncls), np.int64)
        gates = np.zeros(len(self.gate_names), np.int64)  # the kernels count open gates as they go
        clipped = np.zeros(self._nsteps, np.int64)  # and the values each step's post op saturates
        self._fk.forward(self._plan, pixels, out, gates, clipped, self.threads, int(self.simd))
        if len(pixels):
            for i, name, size in self._post_steps:
                prev = self.saturation_counts.get(name, (0, 0))
                self.saturation_counts[name] = (prev[0] + int(clipped[i]), prev[1] + size * len(pixels))
            opened = dict(zip(self.gate_names, gates.tolist()))
            for name, size in self._frac_convs:
                total = size * len(pixels)
                prev = self.gate_counts.get(name, (0, 0))
                self.gate_counts[name] = (prev[0] + opened.get(name, total), prev[1] + total)
        return out
