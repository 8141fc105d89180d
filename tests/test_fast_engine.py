"""The fast CPU engine: exact primitives, and logits identical to the golden engine."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fracbnn.deploy import EngineError, FixedPoint, PackedModel, export_model, get_engine
from fracbnn.deploy import fast, golden
from fracbnn.ir import Graph, get_op
from fracbnn.models import create_model
from fracbnn.quant import thermometer_bits

from conftest import needs_c

needs_ext = needs_c(fast.available(), "fast engine extension not built (pip install -e .)")


def randomize(model, seed):
    """Random BatchNorm statistics, RPReLU parameters and gate thresholds, so every branch is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 2, generator=g)
                m.running_var.uniform_(0.3, 4, generator=g)
                m.weight.normal_(1, 0.7, generator=g)  # some negative scales too
                m.bias.normal_(0, 0.5, generator=g)
        for name, p in model.named_parameters():
            if "shift_in" in name or "shift_out" in name:
                p.normal_(0, 0.5, generator=g)
            elif "slope" in name:
                p.normal_(0.25, 0.4, generator=g)
            elif "threshold" in name:
                p.normal_(0, 4, generator=g)
    return model.eval()


def images(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    if n >= 3:  # extremes and thermometer rounding ties (p = 8j + 4)
        x[0] = 0
        x[1] = 255
        x[2] = (rng.integers(0, 32, (3, 32, 32)) * 8 + 4).astype(np.uint8)
    return x


def packed_model(name="resnet20-fracbnn", seed=0, fx=None, **kwargs):
    torch.manual_seed(seed)
    return export_model(randomize(create_model(name, **kwargs), seed), fx)


_CACHE = {}


def golden_case(seed, n):
    """(packed model, images, golden logits, golden gate counts), computed once per module run."""
    if (seed, n) not in _CACHE:
        packed, x, gates = packed_model(seed=seed), images(n, seed), {}
        _CACHE[seed, n] = packed, x, golden.run_program(packed, x, collect_gates=gates)["logits"], gates
    return _CACHE[seed, n]


# ---------------------------------------------------------------- primitives


@needs_ext
@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("n,c,h,w,o,k,s,p", [
    (2, 16, 8, 8, 16, 3, 1, 1),
    (2, 32, 9, 7, 5, 3, 2, 1),   # stride 2, odd size
    (1, 64, 6, 6, 8, 3, 1, 1),
    (2, 33, 5, 6, 4, 1, 1, 0),   # 1x1, channels not a power of two
    (1, 130, 5, 5, 3, 3, 2, 1),  # several words per pixel, taps straddle words
    (1, 7, 4, 5, 2, 3, 1, 2),    # padding wider than a tap ring
    (1, 1, 6, 6, 3, 5, 1, 2),
    (1, 600, 5, 4, 8, 3, 2, 1),  # beyond the old 512-channel cap: 85-word windows
    (1, 1030, 3, 3, 4, 1, 1, 0),  # 1x1 of > 1024 channels: 17 words
])
def test_binary_conv_matches_torch(n, c, h, w, o, k, s, p, simd):
    rng = np.random.default_rng(c * 100 + k)
    x = rng.integers(0, 2, (n, c, h, w)).astype(np.uint8)
    wt = rng.integers(0, 2, (o, c, k, k)).astype(np.uint8)
    ref = F.conv2d(torch.from_numpy(2.0 * x - 1).double(), torch.from_numpy(2.0 * wt - 1).double(),
                   stride=s, padding=p).round().long().numpy()
    got = fast.binary_conv(x, wt, s, p, simd=simd)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref)


@needs_ext
def test_binary_conv_threads_agree():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, (3, 48, 10, 10)).astype(np.uint8)
    wt = rng.integers(0, 2, (12, 48, 3, 3)).astype(np.uint8)
    np.testing.assert_array_equal(fast.binary_conv(x, wt, 1, 1, threads=1), fast.binary_conv(x, wt, 1, 1, threads=2))


@needs_ext
@pytest.mark.parametrize("vec", [False, True])
def test_popcount_loops_count_bits(vec):
    """The timing loops of benchmarks/engine_speed.py really count bits (one pass, key 0)."""
    words = np.random.default_rng(3).integers(0, 2**63, 256, dtype=np.int64).view(np.uint64)
    want = int(np.unpackbits(words.view(np.uint8)).sum())
    got = fast.kernels().popcount_loop(words, 1, 1, 1, vec)
    if vec and got is None:
        pytest.skip("no AVX2 kernels on this CPU")
    assert got == want


def test_thermometer_table_is_the_conv():
    """Summing table entries per tap and colour gives exactly the conv over the thermometer bits."""
    rng = np.random.default_rng(2)
    img = torch.from_numpy(rng.integers(0, 256, (2, 3, 6, 6), dtype=np.uint8))
    bits = 8
    w01 = rng.integers(0, 2, (5, 3 * bits, 3, 3)).astype(np.uint8)
    x = thermometer_bits(img, resolution=32, dtype=torch.float64)  # T = round(255/32) = 8
    ref = F.conv2d(x, torch.from_numpy(2.0 * w01 - 1), padding=1).round().long().numpy()
    lut = fast.thermometer_table(w01, 3, bits)  # (C, K, K, T+1, O)
    from fracbnn.quant import thermometer_level
    lev = thermometer_level(img.numpy().astype(np.int64), 32)  # (N, C, H, W)
    got = np.zeros_like(ref)
    for u in range(3):
        for v in range(3):
            for i in range(6):
                for j in range(6):
                    iy, ix = i + u - 1, j + v - 1
                    if 0 <= iy < 6 and 0 <= ix < 6:
                        for c in range(3):
                            got[:, :, i, j] += lut[c, u, v, lev[:, c, iy, ix]]
    np.testing.assert_array_equal(got, ref)


# ---------------------------------------------------------------- whole engine vs golden


@needs_ext
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resnet20_fracbnn_identical_logits(seed):
    packed, x, want, gates = golden_case(seed, 9 if seed == 0 else 5)
    engine = fast.FastEngine(packed)
    got = engine.logits(x)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64
    assert engine.gate_counts == {k: (int(v[0]), int(v[1])) for k, v in gates.items()}
    opened = sum(v[0] for v in gates.values()) / sum(v[1] for v in gates.values())
    assert 0.05 < opened < 0.95  # the test really mixes open and closed gates


@needs_ext
@pytest.mark.parametrize("frac_mode", ["frac", "binary"])
def test_gate_counts_equal_golden_engine(frac_mode):
    """FastEngine.gate_counts accumulates like GoldenEngine.gate_counts (what `fracbnn eval` reports)."""
    packed = packed_model(seed=5, frac_mode=frac_mode)
    x = images(5, 5)
    fe, ge = fast.FastEngine(packed, threads=2), golden.GoldenEngine(packed, chunk=2)
    for part in (x[:1], x[1:], x[:0]):  # both parallel schedules, and an empty batch
        np.testing.assert_array_equal(fe.logits(part), ge.logits(part))
    assert fe.gate_counts == ge.gate_counts and len(fe.gate_counts) == 18
    assert all(t == 5 * np.prod(s[1:]) for (_, t), s in zip(fe.gate_counts.values(),
                                                              (fe.packed.validate()[k] for k in fe.gate_counts)))
    opened = sum(o for o, _ in fe.gate_counts.values()) / sum(t for _, t in fe.gate_counts.values())
    assert (opened == 1.0) if frac_mode == "binary" else (0.05 < opened < 0.95)


@needs_ext
@pytest.mark.parametrize("threads,simd,sparse", [(1, True, False), (2, True, True), (1, False, True),
                                                 (2, False, False)])
def test_all_execution_paths_identical(threads, simd, sparse):
    """Batch 1..9 covers both parallel schedules (rows of one image / whole images per thread)."""
    packed, x, want, _ = golden_case(0, 9)
    engine = fast.FastEngine(packed, threads=threads, simd=simd, sparse_lsb=sparse)
    np.testing.assert_array_equal(engine.logits(x), want)
    np.testing.assert_array_equal(engine.logits(x[:1]), want[:1])
    np.testing.assert_array_equal(engine.logits(x[:3]), want[:3])


@needs_ext
@pytest.mark.parametrize("name,kwargs", [
    ("resnet20-bnn", {}),                                  # 1-bit activations: sign_bit + binary_conv
    ("resnet20-fracbnn", {"width": 0.6875, "num_classes": 7}),  # 11/22/44 channels: word tails
    ("resnet20-fracbnn", {"frac_mode": "binary"}),          # 2-bit without gate
    ("resnet20-fracbnn", {"width": 2.0}),                   # 32/64/128 channels: 2 words per pixel
])
def test_model_variants_identical(name, kwargs):
    packed = packed_model(name, seed=3, **kwargs)
    x = images(3, 3)
    np.testing.assert_array_equal(fast.FastEngine(packed).logits(x), golden.GoldenEngine(packed).logits(x))


@needs_ext
@pytest.mark.parametrize("simd", [True, False])
def test_wide_model_identical(simd):
    """width 4: 64/128/256 channels; 256-channel 3x3 windows are 36 words (> 31), the AVX2 dot product's
    chunked path (byte counts folded every 31 words) and the generic variable-size loop."""
    if "wide" not in _CACHE:  # export and golden logits once for both parameters
        packed, x = packed_model("resnet20-fracbnn", seed=10, width=4.0), images(2, 10)
        _CACHE["wide"] = packed, x, golden.GoldenEngine(packed).logits(x)
    packed, x, want = _CACHE["wide"]
    assert max(-(-9 * op["in_channels"] // 64) for op in packed.program if op["op"] == "frac_conv") == 36
    np.testing.assert_array_equal(fast.FastEngine(packed, simd=simd).logits(x), want)


@needs_ext
@pytest.mark.parametrize("fx", [FixedPoint(frac_bits=3, residual_bits=6, param_frac_bits=6),   # saturating
                                FixedPoint(frac_bits=2, residual_bits=8, param_frac_bits=0),   # shift 0
                                FixedPoint(frac_bits=12, residual_bits=32, param_frac_bits=18),  # wide
                                # widest residuals the int32 quantizer path (q32) takes: |r| <= 2^29
                                FixedPoint(frac_bits=20, residual_bits=30, param_frac_bits=16)])
def test_fixed_point_formats_identical(fx):
    packed = packed_model(seed=4, fx=fx)
    x = images(3, 4)
    np.testing.assert_array_equal(fast.FastEngine(packed).logits(x), golden.GoldenEngine(packed).logits(x))


@needs_ext
@pytest.mark.parametrize("simd", [True, False])
def test_gate_thresholds_beyond_int32_identical(simd):
    """The AVX2 gate compare uses thresholds clamped to int32: thresholds far outside (and at the edge of)
    the int32 range must decide every output as the int64 compare does (gate counts included)."""
    packed = packed_model(seed=5)
    edge = np.array([2**40, -2**40, 2**31 - 1, -2**31 - 1, 2**31, -2**31], np.int64)
    n_gated = 0
    for op in packed.program:
        if op["op"] == "frac_conv" and op["gate_threshold"] is not None:
            t = np.array(packed.tensors[op["gate_threshold"]], copy=True)
            t.reshape(-1)[:len(edge)] = edge.astype(t.dtype)
            packed.tensors[op["gate_threshold"]] = t
            n_gated += 1
    assert n_gated > 0
    x = images(5, 5)
    gates = {}
    want = golden.run_program(packed, x, collect_gates=gates)["logits"]
    engine = fast.FastEngine(packed, threads=1, simd=simd)
    np.testing.assert_array_equal(engine.logits(x), want)
    assert engine.gate_counts == gates


@needs_ext
@pytest.mark.parametrize("simd", [True, False])
def test_post_multipliers_at_split_edge_identical(simd):
    """The AVX2 post ops split multipliers in [-2^62, 2^62) into two int32 halves (exact products);
    multipliers at the edge of that range, and beyond it (the 64-bit multiply path), must give the
    golden engine's wrap-around results."""
    packed = packed_model(seed=6)
    inside = np.array([2**62 - 1, -2**62, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 3 * 2**40], np.int64)
    outside = np.array([2**62, -2**62 - 1, 2**63 - 1, -2**63], np.int64)
    k = 0
    for op in packed.program:
        if op["op"] in ("scale_shift", "block_post"):
            for name in ("mul",) if op["op"] == "scale_shift" else ("pos_mul", "neg_mul"):
                t = np.array(packed.tensors[op[name]], copy=True)
                edge = outside if k % 2 else inside
                t.reshape(-1)[:len(edge)] = edge.astype(t.dtype)
                packed.tensors[op[name]] = t
            k += 1
    assert k >= 2
    x = images(5, 5)
    want = golden.run_program(packed, x)["logits"]
    np.testing.assert_array_equal(fast.FastEngine(packed, threads=1, simd=simd).logits(x), want)


@needs_ext
@pytest.mark.parametrize("simd", [True, False])
def test_block_post_sign_test_with_ties_identical(simd):
    """The AVX2 block_post decides pos = sign * a > threshold as one compare of a with a threshold folded
    from sign (and swaps the branches for sign < 0): signs -3, -1, 0, 1, 2, 5, thresholds at exact ties
    sign * a (taken from the golden accumulators, layer after layer), one off them, and at the int64
    extremes must give the golden logits and saturation counts."""
    packed = packed_model(seed=8)
    x = images(3, 8)
    signs = np.array([-3, -1, 0, 1, 2, 5, -1, 1], np.int64)
    extremes = np.array([2**63 - 1, -2**63, 2**62 + 5, -2**62 - 5], np.int64)
    rng = np.random.default_rng(8)
    posts = [op for op in packed.program if op["op"] == "block_post"]
    for i, op in enumerate(posts):
        acc = golden.run_program(packed, x)[op["input"]]  # (N, O, H, W), with the layers before already changed
        o = acc.shape[1]
        sign = np.resize(np.roll(signs, i), o)
        # the accumulator of a random output per channel: its product with sign is an exact tie
        picks = acc[rng.integers(0, len(x), o), np.arange(o), rng.integers(0, acc.shape[2], o),
                    rng.integers(0, acc.shape[3], o)].astype(np.int64)
        thr = sign * picks + rng.integers(-1, 2, o)  # at the tie, or one either side
        thr[: len(extremes)] = np.roll(extremes, i)[: min(o, len(extremes))]
        packed.tensors[op["sign"]] = sign.astype(packed.tensors[op["sign"]].dtype)
        packed.tensors[op["threshold"]] = thr.astype(packed.tensors[op["threshold"]].dtype)
    gold = golden.GoldenEngine(packed)
    engine = fast.FastEngine(packed, threads=1, simd=simd)
    np.testing.assert_array_equal(engine.logits(x), gold.logits(x))
    assert engine.saturation_counts == gold.saturation_counts


@needs_ext
def test_saved_file_and_registry(tmp_path):
    packed = packed_model(seed=6)
    path = packed.save(tmp_path / "m.fbnn")
    loaded = PackedModel.load(path)
    engine = get_engine("fast")(loaded)
    x = images(3, 6)
    np.testing.assert_array_equal(engine.logits(x), golden.GoldenEngine(packed).logits(x))
    np.testing.assert_array_equal(engine.predict(x), golden.GoldenEngine(packed).predict(x))
    assert engine.logits(x[:0]).shape == (0, 10)


# ---------------------------------------------------------------- ReActNet


def _data_like_reactnet(name, width, calib_size, seed=0, **kwargs):
    """A ReActNet with data-like statistics and part-open gates. One torch thread: the calibration passes
    are many small ops, which compete badly for busy cores with more."""
    from fracbnn.models.calibrate import data_like, smooth_images
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        return data_like(create_model(name, width=width, **kwargs), smooth_images(8, calib_size, seed=seed),
                         seed=seed)
    finally:
        torch.set_num_threads(threads)


def reactnet_case(name, seed, width=0.0625, size=32, n=3):
    """(packed ReActNet, images, golden logits, golden gate counts), cached per module run."""
    key = ("reactnet", name, seed, width, size, n)
    if key not in _CACHE:
        from fracbnn.models.calibrate import smooth_images
        model = _data_like_reactnet(name, width, (size, size), seed, num_classes=10)
        x = smooth_images(n, (size, size), seed=seed + 100).numpy()
        x[0, :, : size // 2] = 0  # extremes of the thermometer
        x[-1, :, size // 2:] = 255
        packed, gates = export_model(model, input_size=(3, size, size)), {}
        _CACHE[key] = packed, x, golden.run_program(packed, x, collect_gates=gates)["logits"], gates
    return _CACHE[key]


@needs_ext
@pytest.mark.parametrize("name", ["reactnet-fracbnn", "reactnet-bnn"])
@pytest.mark.parametrize("seed,width,size", [(0, 0.0625, 32), (1, 0.125, 64), (2, 0.125, 32)])
def test_reactnet_identical_logits_and_gates(name, seed, width, size):
    """1x1 and stride-2 convs, 4-bit shortcut codes (direct, 2x2-summed, channel-doubled), stride-2 stem."""
    packed, x, want, gates = reactnet_case(name, seed, width, size)
    ops = {n["op"] for n in packed.program}
    assert {"quantize", "sum_pool2", "channel_dup"} <= ops
    engine = fast.FastEngine(packed, threads=1)
    np.testing.assert_array_equal(engine.logits(x), want)
    assert engine.gate_counts == gates
    if name == "reactnet-fracbnn":
        opened = sum(v[0] for v in gates.values()) / sum(v[1] for v in gates.values())
        assert 0.05 < opened < 0.95  # gates really mixed


@needs_ext
@pytest.mark.parametrize("name", ["reactnet-fracbnn", "reactnet-bnn"])
@pytest.mark.parametrize("threads,simd,sparse", [(2, True, True), (1, False, True), (2, False, False),
                                                 (1, True, True)])
def test_reactnet_all_execution_paths_identical(name, threads, simd, sparse):
    """Batch 1 (threads share the rows of one image) and batch 9 (whole images per thread)."""
    packed, x, want, _ = reactnet_case(name, 1, 0.125, 64, n=9)
    engine = fast.FastEngine(packed, threads=threads, simd=simd, sparse_lsb=sparse)
    np.testing.assert_array_equal(engine.logits(x), want)
    np.testing.assert_array_equal(engine.logits(x[:1]), want[:1])


@needs_ext
@pytest.mark.parametrize("simd", [True, False])
def test_reactnet_shortcut_codes_at_clamp_and_tie(simd):
    """Residuals of exactly 0 (the quantizer's middle tie, x = 0 -> code (L+1)/2) and beyond +-1 (the clamp)
    in the stem and two block outputs, whose 4-bit shortcut codes are read directly, channel-doubled and
    2x2-summed."""
    packed, x, _, _ = reactnet_case("reactnet-fracbnn", 3, 0.125, 32, n=4)
    packed = PackedModel(dict(packed.meta), dict(packed.tensors))
    g = Graph(packed.program)
    nodes = [g.of_kind("scale_shift")[0], *g.of_kind("block_post")[:2]]
    for node in nodes:  # channel 0: r = 0; channel 1: r saturated high; channel 2: saturated low
        for t in ("mul", "pos_mul", "neg_mul", "sc_mul", "add", "pos_add", "neg_add"):
            if t in node.attrs:
                arr = np.array(packed.tensors[node[t]], copy=True)
                arr[:3] = [0, 1 << 60, -(1 << 60)] if t.endswith("add") else 0
                packed.tensors[node[t]] = arr
    bufs = golden.run_program(packed, x)
    readers = set()
    for node in nodes:
        q = next(n for n in g.consumers(node["output"]) if n.op == "quantize")
        r, v, one = bufs[node["output"]], bufs[q["output"]], 1 << q["frac_bits"]
        assert (r[:, 0] == 0).all() and (v[:, 0] == 1).all()  # the tie: code 8 of 0..15, v = 2 * 8 - 15
        assert (r[:, 1] > one).all() and (v[:, 1] == 15).all() and (r[:, 2] < -one).all() and (v[:, 2] == -15).all()
        readers |= {n.op for n in g.consumers(q["output"])}
    assert readers == {"block_post", "sum_pool2", "channel_dup"}
    engine = fast.FastEngine(packed, threads=1, simd=simd)
    np.testing.assert_array_equal(engine.logits(x), bufs["logits"])


@needs_ext
def test_reactnet_buffer_names_are_not_parsed():
    """The plan follows producers and consumers: renaming every inner buffer changes nothing."""
    packed, x, want, _ = reactnet_case("reactnet-fracbnn", 0)
    inner = {b for n in Graph(packed.program).nodes for b in n.inputs + n.outputs} - {"image", "logits"}
    rename = {b: f"b{i}" for i, b in enumerate(sorted(inner, reverse=True))}

    def ren(v):
        return [rename.get(b, b) for b in v] if isinstance(v, list) else rename.get(v, v)

    prog = []
    for n in packed.program:
        op = get_op(n["op"])
        prog.append({k: ren(v) if k in op.inputs + op.outputs else v for k, v in n.items()})
    renamed = PackedModel(dict(packed.meta, program=prog), packed.tensors)
    np.testing.assert_array_equal(fast.FastEngine(renamed).logits(x), want)


@needs_ext
@pytest.mark.parametrize("change", ["pool_before_quantize", "shortcut_read_twice_as_conv_input"])
def test_reactnet_unsupported_shortcuts_are_refused(change):
    packed = reactnet_case("reactnet-fracbnn", 0)[0]
    prog = [dict(n) for n in packed.program]
    pool = next(n for n in prog if n["op"] == "sum_pool2")
    quant = next(n for n in prog if n["op"] == "quantize" and n["output"] == pool["input"])
    if change == "pool_before_quantize":  # quantize(sum_pool2(r)): not what the kernels compute
        pool["input"], quant["input"], quant["output"], pool["output"] = (
            quant["input"], "swapped.pool", pool["output"], "swapped.pool")
        i, j = prog.index(quant), prog.index(pool)
        prog[i], prog[j] = prog[j], prog[i]
    else:  # a shortcut code buffer also read by a bit-plane quantizer
        prog.insert(prog.index(pool) + 1, {"op": "sign_bit", "input": pool["output"], "output": "odd.bits"})
    odd = PackedModel(dict(packed.meta, program=prog), packed.tensors)
    with pytest.raises(EngineError, match="golden"):
        fast.FastEngine(odd)


@needs_ext
@pytest.mark.slow
def test_reactnet_full_width_224_identical():
    """The real geometry: 32..1024 channels (3x3 windows up to 144 words), 112..7 pixels, 1000 classes."""
    from fracbnn.models.calibrate import smooth_images
    model = _data_like_reactnet("reactnet-fracbnn", 1.0, (64, 64))  # statistics at 64 x 64: faster than at 224
    packed = export_model(model, input_size=(3, 224, 224))
    assert max(n["in_channels"] for n in packed.program if n["op"] == "frac_conv") == 1024
    x = smooth_images(1, (224, 224), seed=5).numpy()
    gates = {}
    want = golden.run_program(packed, x, collect_gates=gates)["logits"]
    engine = fast.FastEngine(packed, threads=2)
    np.testing.assert_array_equal(engine.logits(x), want)
    assert engine.gate_counts == gates and want.shape == (1, 1000)


# ---------------------------------------------------------------- errors


@needs_ext
def test_bad_pixels_are_refused():
    engine = fast.FastEngine(packed_model(seed=7))
    with pytest.raises(EngineError, match="uint8"):
        engine.logits(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(EngineError, match="shape"):
        engine.logits(np.zeros((1, 3, 16, 16), np.uint8))


@needs_ext
def test_unsupported_program_is_refused():
    packed = packed_model(seed=8)
    prog = [dict(op) for op in packed.program]
    i = next(k for k, op in enumerate(prog) if op["op"] == "block_post")
    prog.insert(i + 1, {"op": "sign_bit", "input": prog[i]["input"], "output": "extra.bits"})
    odd = PackedModel(dict(packed.meta, program=prog), packed.tensors)
    with pytest.raises(EngineError, match="golden"):
        fast.FastEngine(odd)


def test_missing_extension_says_how_to_build(monkeypatch):
    monkeypatch.setattr(fast, "_fk", None)
    monkeypatch.setattr(fast, "_IMPORT_ERROR", ImportError("no module named _fastkernels"))
    assert not fast.available()
    with pytest.raises(EngineError, match="pip install"):
        fast.FastEngine(packed_model(seed=9))
    # the golden engine is unaffected
    assert get_engine("golden")(packed_model(seed=9)).logits(images(1, 9)).shape == (1, 10)
