"""The integer IR: op registry, documentation, torch-free use, and export of every model family."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from exportable import EXPORTABLE, data_like_model, family_images
from fracbnn.deploy import export_model
from fracbnn.deploy.golden import GoldenEngine
from fracbnn.ir import Graph, PackedFormatError, PackedModel, registered_ops
from fracbnn.ir.docgen import BEGIN, END, ops_markdown
from fracbnn.ir.ops.quantize import uniform_code
from fracbnn.quant import ActivationQuantizer

from conftest import REPO


def test_every_op_is_complete_and_documented():
    ops = registered_ops()
    assert {"thermometer", "binary_conv", "frac_conv", "quantize2", "sign_bit", "quantize", "scale_shift",
            "block_post", "avgpool2_dup", "sum_pool2", "channel_dup", "global_sum_pool", "linear"} <= set(ops)
    for name, op in ops.items():
        assert op.name == name
        assert op.__doc__ and len(op.__doc__.strip()) > 20, name
        for method in ("infer_shapes", "bounds", "execute"):
            assert getattr(op, method) is not getattr(op.__mro__[-2], method), f"{name} lacks {method}"


def test_deploy_format_doc_is_generated_from_the_registry():
    text = (REPO / "docs" / "deploy-format.md").read_text()
    section = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert section == ops_markdown().strip(), "run `python -m fracbnn.ir.docgen --write`"


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("frac_bits", [0, 5, 22])
def test_quantize_codes_equal_the_trained_quantizer(bits, frac_bits):
    one = 1 << frac_bits
    rng = np.random.default_rng(bits * 100 + frac_bits)
    L = (1 << bits) - 1
    # every level boundary, +-1 around it, the middle tie r = 0, the clamps and random values
    edges = [round((2 * j + 1 - L) * one / L) for j in range(L)]
    r = np.array(sorted({e + d for e in edges for d in (-1, 0, 1)} | {0, -one, one, -5 * one, 5 * one}), np.int64)
    r = np.concatenate([r, rng.integers(-3 * one - 5, 3 * one + 5, 2000)])
    x = torch.from_numpy(r.astype(np.float64) / one)  # exact: r < 2^53
    want = ActivationQuantizer(bits).to(torch.float64).codes(x).numpy()
    assert np.array_equal(uniform_code(r, frac_bits, bits), want)


def test_pool_and_dup_ops_match_torch():
    x = np.random.default_rng(0).integers(-50, 50, (2, 3, 7, 6)).astype(np.int64)
    ops = registered_ops()
    s = ops["sum_pool2"]().execute({"op": "sum_pool2"}, [x], {})[0]
    ref = 4 * torch.nn.functional.avg_pool2d(torch.from_numpy(x).double(), 2).numpy()
    assert np.array_equal(s, np.round(ref).astype(np.int64))
    d = ops["channel_dup"]().execute({"op": "channel_dup"}, [x], {})[0]
    assert np.array_equal(d, np.concatenate([x, x], 1))


@pytest.mark.parametrize("name", sorted(EXPORTABLE))
def test_family_exports_and_golden_follows_pytorch(name, tmp_path):
    model = data_like_model(name)
    packed = export_model(model)
    path = packed.save(tmp_path / "m.fbnn")
    loaded = PackedModel.load(path)
    x = family_images(name, 6)
    scores = GoldenEngine(loaded).scores(x.numpy())
    with torch.no_grad():
        ref = model(x).double().numpy()
    diff = np.abs(scores - ref)
    if name.endswith("-fracbnn"):  # no sign flips possible at these widths: integer = float up to rounding
        assert diff.max() < 1e-3, diff.max()
    else:  # sign(x) flips where float and fixed point round x = 0 differently; most logits still agree closely
        assert np.median(diff) < 1e-3, np.median(diff)
    assert packed.meta["accumulator_bits"] and max(packed.meta["accumulator_bits"].values()) <= 64


@pytest.mark.parametrize("name", ["reactnet-fracbnn"])
def test_reactnet_program_has_every_block_pattern(name):
    packed = export_model(data_like_model(name))
    g = Graph(packed.program)
    kinds = [n.op for n in g.nodes]
    assert kinds.count("quantize") == 26 and kinds.count("sum_pool2") == 4 and kinds.count("channel_dup") == 5
    convs = g.of_kind("frac_conv")
    assert {(c["kernel"], c["stride"]) for c in convs} == {(3, 1), (3, 2), (1, 1)}
    # every block_post reads a quantized shortcut (directly or through a pool / dup), never the float residual
    for post in g.of_kind("block_post"):
        src = g.producer(post["shortcut"])
        while src.op in ("sum_pool2", "channel_dup"):
            src = g.producer(src.inputs[0])
        assert src.op == "quantize"
    # part-open gates, as in a trained model
    eng = GoldenEngine(packed)
    eng.logits(family_images(name, 4).numpy())
    dens = [a / b for a, b in eng.gate_counts.values()]
    assert len(dens) == 26 and 0.05 < min(dens) and max(dens) < 0.95, dens


def test_any_input_size_multiple_of_32():
    model = data_like_model("reactnet-fracbnn")
    for size in [(3, 32, 32), (3, 96, 64)]:
        packed = export_model(model, input_size=size)
        assert packed.input_size == size
        x = torch.randint(0, 256, (2, *size), dtype=torch.uint8)
        with torch.no_grad():
            ref = model(x).double().numpy()
        assert np.abs(GoldenEngine(packed).scores(x.numpy()) - ref).max() < 1e-3


def test_bad_nodes_are_one_line_format_errors():
    packed = export_model(data_like_model("reactnet-fracbnn"))
    first = {}
    for i, node in enumerate(packed.program):
        first.setdefault(node["op"], i)
    q, q2 = first["quantize"], first["quantize2"]
    pool_out = packed.program[first["sum_pool2"]]["output"]
    pooled_post = next(i for i, n in enumerate(packed.program) if n.get("shortcut") == pool_out)
    for mutate, msg in [
        (lambda p: p[q].update(bits=1), "bad bits"),
        (lambda p: p[q].pop("frac_bits"), "lacks frac_bits"),
        (lambda p: p[q].update(op="nonsense"), "does not know"),
        (lambda p: p[q].update(output=["a", "b"]), "buffer name"),
        (lambda p: p[q2].update(frac_bits="22"), "must be an integer"),
        (lambda p: p[q2].update(output="x"), "list of 2 buffer names"),
        (lambda p: p[first["block_post"]].update(shortcut="nowhere"), "before anything writes it"),
        (lambda p: p[pooled_post].update(shortcut=p[first["sum_pool2"]]["input"]), "shortcut shape"),
    ]:
        prog = [dict(n) for n in packed.program]
        mutate(prog)
        bad = PackedModel(dict(packed.meta, program=prog), packed.tensors)
        with pytest.raises(PackedFormatError, match=msg):
            bad.validate()


def test_integer_side_runs_without_torch(tmp_path):
    """Read, validate and run the golden engine in a process where `import torch` fails."""
    model = data_like_model("reactnet-fracbnn")
    path = export_model(model).save(tmp_path / "m.fbnn")
    x = family_images("reactnet-fracbnn", 3).numpy()
    np.save(tmp_path / "x.npy", x)
    want = GoldenEngine(PackedModel.load(path)).logits(x)
    np.save(tmp_path / "want.npy", want)
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from fracbnn.deploy import PackedModel, get_engine
        from fracbnn.deploy.golden import GoldenEngine
        from fracbnn.ir import run_program
        packed = PackedModel.load({str(path)!r})
        packed.validate()
        got = get_engine("golden")(packed).logits(np.load({str(tmp_path / 'x.npy')!r}))
        assert np.array_equal(got, np.load({str(tmp_path / 'want.npy')!r})), "logits differ"
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("torch was importable")
        assert "torch" not in sys.modules, "something imported torch"
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
