"""fracbnn_int.h, the one header of scalar integer primitives: bit-equal to the golden numpy ops, and the one
header both C builds (the fast engine's extension and the generated HLS project) use."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fracbnn.ir.arith import round_shift, saturate, thermometer_level
from fracbnn.ir.op import get_op
from fracbnn.ir.ops.quantize import uniform_code

from conftest import needs_c

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "src" / "fracbnn" / "_csrc" / "fracbnn_int.h"
HARNESS = Path(__file__).resolve().parent / "fixtures" / "int_header_harness.c"
I64 = np.iinfo(np.int64)

pytestmark = needs_c(shutil.which("g++") is not None, "g++ is needed to build the header's test harness")


@pytest.fixture(scope="module", params=["c++", "c"])
def harness(request, tmp_path_factory):
    """The harness built as C++ (the HLS kernel's language) and as C99 (the fast engine's)."""
    lang = request.param
    cc = "g++" if lang == "c++" else "gcc"
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not found")
    exe = tmp_path_factory.mktemp(f"fbi_{lang.replace('+', 'p')}") / "harness"
    std = ["-std=c++14"] if lang == "c++" else ["-std=c99", "-pedantic"]
    subprocess.run([cc, "-x", lang, *std, "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(HEADER.parent),
                    str(HARNESS), "-o", str(exe)], check=True, capture_output=True, text=True)

    def run(rows):
        rows = np.asarray(rows, np.int64)
        full = np.zeros((len(rows), 12), np.int64)
        full[:, :rows.shape[1]] = rows
        out = subprocess.run([str(exe)], input=full.tobytes(), capture_output=True, check=True).stdout
        return np.frombuffer(out, np.int64)
    return run


def _edges(rng, n):
    """Random int64 values of every magnitude, with the int64 limits, zero and +-1 mixed in."""
    mag = rng.integers(0, 64, n)
    v = rng.integers(I64.min, I64.max, n, dtype=np.int64, endpoint=True)
    v = np.where(mag < 63, v >> np.minimum(mag, 63), v)
    special = np.array([I64.min, I64.min + 1, I64.max, I64.max - 1, 0, 1, -1, 2, -2], np.int64)
    v[:len(special)] = special
    return v


def _col(v):
    return np.asarray(v, np.int64).reshape(-1)


def test_round_shift_and_saturate_bit_equal(harness):
    rng = np.random.default_rng(0)
    for s in (0, 1, 2, 5, 24, 46, 62):
        v = _edges(rng, 400)
        # ties at .5: v = k 2^s + 2^(s-1) (rounds toward +infinity), and the values either side of them
        if s:
            k = rng.integers(-2**20, 2**20, 60)
            v[-60:] = k * (1 << s) + (1 << (s - 1)) + rng.integers(-1, 2, 60)
        got = harness(np.stack([np.zeros_like(v), v, np.full_like(v, s)], 1))
        np.testing.assert_array_equal(got, round_shift(v, s), err_msg=f"round_shift s={s}")
    for bits in (2, 3, 8, 16, 27, 32, 48, 62, 63):
        hi = (1 << (bits - 1)) - 1
        v = np.concatenate([_edges(rng, 300), np.array([hi, hi + 1, -hi - 1, -hi - 2, hi - 1, -hi], np.int64)])
        got = harness(np.stack([np.ones_like(v), v, np.full_like(v, bits)], 1))
        np.testing.assert_array_equal(got, saturate(v, bits), err_msg=f"saturate bits={bits}")
        for s in (0, 3, 22):
            got = harness(np.stack([np.full_like(v, 10), v, np.full_like(v, s), np.full_like(v, bits)], 1))
            np.testing.assert_array_equal(got, saturate(round_shift(v, s), bits))


def test_quantizers_bit_equal(harness):
    rng = np.random.default_rng(1)
    q2, sign_bit, quantize = get_op("quantize2")(), get_op("sign_bit")(), get_op("quantize")()
    for f in (0, 1, 7, 22, 40, 60):
        v = _edges(rng, 400)
        b = 1 << (f + 1)
        # the level boundaries 3r = +-2^(F+1) (r = +-2^(F+1)/3 rounded both ways) and r = 0
        near = np.array([b // 3, b // 3 + 1, -(b // 3), -(b // 3) - 1, 0, -1, 1 << f, -(1 << f)], np.int64)
        v = np.concatenate([v, near])
        x = v.reshape(1, -1, 1, 1)
        m, l = q2.execute({"frac_bits": f}, [x], {})
        got = harness(np.stack([np.full_like(v, 2), v, np.full_like(v, f)], 1))
        np.testing.assert_array_equal(got, 2 * _col(m) + _col(l), err_msg=f"quantize2 F={f}")
        got = harness(np.stack([np.full_like(v, 3), v], 1))
        np.testing.assert_array_equal(got, _col(sign_bit.execute({}, [x], {})[0]))
    for f in (0, 4, 22, 52):
        for k in (2, 4, 8):
            v = np.concatenate([_edges(rng, 300), rng.integers(-(2 << f), 2 << f, 200, endpoint=True)])
            rows = np.stack([np.full_like(v, 4), v, np.full_like(v, f), np.full_like(v, k)], 1)
            np.testing.assert_array_equal(harness(rows), uniform_code(v, f, k), err_msg=f"uniform_code F={f} k={k}")
            rows[:, 0] = 5
            want = quantize.execute({"frac_bits": f, "bits": k}, [v.reshape(1, -1, 1, 1)], {})[0]
            np.testing.assert_array_equal(harness(rows), _col(want))


def test_gate_and_thermometer_bit_equal(harness):
    rng = np.random.default_rng(2)
    s, t = _edges(rng, 500), _edges(rng, 500)
    t[100:200] = s[100:200]  # ties: S_M == threshold keeps the gate closed
    t[200:300] = s[200:300] - 1
    got = harness(np.stack([np.full_like(s, 6), s, t], 1))
    np.testing.assert_array_equal(got, (s > t).astype(np.int64))  # frac_conv: open = S_M > gate_threshold
    p = np.arange(256, dtype=np.int64)
    for res in (1, 2, 3, 8, 16, 51):
        got = harness(np.stack([np.full_like(p, 9), p, np.full_like(p, res)], 1))
        np.testing.assert_array_equal(got, thermometer_level(p, res), err_msg=f"thermometer R={res}")


def test_xnor_dot_is_the_golden_tap(harness):
    """One valid tap of one word (fbi_xnor_dot, both kernels' popcount primitive) = arith.binary_conv2d of the
    word's n channels against the same weights."""
    from fracbnn.ir.arith import binary_conv2d

    rng = np.random.default_rng(5)
    x = rng.integers(I64.min, I64.max, 300, dtype=np.int64, endpoint=True)
    w = rng.integers(I64.min, I64.max, 300, dtype=np.int64, endpoint=True)
    x[:4] = [0, -1, 0, -1]
    w[:4] = [0, -1, -1, 0]
    for n in (1, 17, 32, 63, 64):
        mask = np.int64(-1) if n == 64 else np.int64((1 << n) - 1)
        xm, wm = x & mask, w & mask
        got = harness(np.stack([np.full_like(x, 11), xm, wm, np.full_like(x, n)], 1))
        bits = lambda v: ((v.view(np.uint64)[:, None] >> np.arange(n, dtype=np.uint64)) & 1).astype(np.uint8)  # noqa: E731
        want = [binary_conv2d(bits(xm[i:i + 1]).reshape(1, n, 1, 1), bits(wm[i:i + 1]).reshape(1, n, 1, 1), 1, 0)
                .item() for i in range(len(x))]
        np.testing.assert_array_equal(got, want, err_msg=f"n={n}")


def _coeffs(rng, n):
    """Per-element coefficients: mostly realistic magnitudes, some anywhere in int64 (wrap-around)."""
    c = rng.integers(-2**40, 2**40, n)
    wild = rng.random(n) < 0.2
    c[wild] = _edges(rng, n)[wild]
    return c


def test_scale_shift_and_block_post_bit_equal(harness):
    rng = np.random.default_rng(3)
    ss, bp = get_op("scale_shift")(), get_op("block_post")()
    n = 600
    for shift, bits in ((0, 62), (1, 2), (24, 27), (46, 16), (60, 2), (30, 62)):
        a = np.concatenate([rng.integers(-3000, 3000, n - 100), _edges(rng, 100)])
        node = {"mul": "mul", "add": "add", "shift": shift, "bits": bits}
        tensors = {"mul": _coeffs(rng, n), "add": _coeffs(rng, n)}
        want = _col(ss.execute(node, [a.reshape(1, -1, 1, 1)], tensors)[0])
        rows = np.stack([np.full(n, 7), a, tensors["mul"], tensors["add"], np.full(n, shift), np.full(n, bits)], 1)
        np.testing.assert_array_equal(harness(rows), want, err_msg=f"scale_shift shift={shift} bits={bits}")

        names = ("sign", "threshold", "pos_mul", "pos_add", "neg_mul", "neg_add", "sc_mul")
        tensors = {k: _coeffs(rng, n) for k in names}
        tensors["sign"] = np.where(rng.random(n) < 0.8, rng.choice([-1, 1], n), tensors["sign"])
        tensors["threshold"][:100] = tensors["sign"][:100] * a[:100]  # ties: sign a == threshold is the negative side
        sc = _edges(rng, n)
        sc[:n // 2] = rng.integers(-2**30, 2**30, n // 2)
        hi = (1 << (bits - 1)) - 1
        if shift + bits <= 62:  # rows whose sum is just past either saturation bound: a = 1 on the positive side
            for k, v in zip(range(100, 108), (hi + 1, hi + 2, -hi - 2, -hi - 3, hi, -hi - 1, 4 * hi, -4 * hi)):
                a[k], sc[k] = 1, 0
                for t, c in (("sign", 1), ("threshold", 0), ("pos_mul", 0), ("sc_mul", 0), ("pos_add", v << shift)):
                    tensors[t][k] = c
        node = {"shift": shift, "bits": bits, **{k: k for k in names}}
        want = _col(bp.execute(node, [a.reshape(1, -1, 1, 1), sc.reshape(1, -1, 1, 1)], tensors)[0])
        rows = np.stack([np.full(n, 8), a, *(tensors[k] for k in names), sc, np.full(n, shift), np.full(n, bits)], 1)
        got = harness(rows)
        np.testing.assert_array_equal(got, want, err_msg=f"block_post shift={shift} bits={bits}")
        if shift + bits <= 62:  # both saturation bounds were reached
            assert (want == hi).any() and (want == -hi - 1).any()


def test_both_builds_use_the_one_header():
    """The fast extension compiles fastkernels.c with the header's folder on its include path, its scalar code
    calls the primitives, and the HLS kernel template includes it (generated projects copy it: test_hw_csim)."""
    kernels = ROOT / "src" / "fracbnn" / "deploy" / "_kernels"
    assert '#include "fracbnn_int.h"' in (kernels / "fastkernels.c").read_text()
    impl = (kernels / "fast_impl.h").read_text()
    for fn in ("fbi_scale_shift_raw", "fbi_block_post_raw", "fbi_saturate", "fbi_clips", "fbi_quantize2_code",
               "fbi_sign_bit", "fbi_gate_open", "fbi_quantize_value"):
        assert fn + "(" in impl, fn
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'CSRC = os\.path\.join\("src", "fracbnn", "_csrc"\)', setup) and "include_dirs=[CSRC]" in setup
    assert not list(kernels.glob("fracbnn_int.h")), "a second copy of the header next to the fast engine"
    kernel = (ROOT / "src" / "fracbnn" / "hw" / "templates" / "fracbnn_kernel.cpp").read_text()
    assert '#include "fracbnn_int.h"' in kernel
    rx = (ROOT / "src" / "fracbnn" / "hw" / "templates" / "rx_kernel.cpp").read_text()
    assert '#include "fracbnn_int.h"' in rx
    for fn in ("fbi_block_post", "fbi_scale_shift", "fbi_quantize2_code", "fbi_gate_open", "fbi_thermometer_level",
               "fbi_xnor_dot"):
        assert fn + "(" in kernel and fn + "(" in rx, fn
    # the kernels no longer carry their own versions of the primitives
    for k in (kernel, rx):
        assert not re.search(r"static inline \w+ (floor_shift|round_shift|saturate|thermo_level|popc\w*)\(", k)
    from fracbnn.hw.generate import INT_HEADER
    assert INT_HEADER.resolve() == HEADER.resolve()
