"""Fast CPU engine vs PyTorch FP32 inference of the same network, same CPU, same threads.

Measures images/s at batch 1 and batch 256 of
  * PyTorch: the resnet20-fracbnn model in eval mode, float32, inference_mode,
    uint8 images in (the model encodes them itself), torch.set_num_threads(T),
    as fracbnn runs it by default: on CPU that includes fracbnn's own C kernels
    (thermometer lookup, one packed convolution per gated layer; see
    fracbnn.nn.cpu_ops). ``speedup_*`` compares with this. For reference the same
    model with those kernels switched off (stock PyTorch ops only) is timed too
    (``speedup_vs_stock_torch_*``);
  * the fast engine: the same model exported to the packed integer format,
    uint8 images in, integer logits out, T OpenMP threads;
and, for reference, PyTorch FP32 of resnet20-fp (the full-precision network).
Before timing it checks on a few images that the fast engine's logits equal
the golden engine's (bit_exact in the JSON).

It also measures this CPU's "popcount limit": a tight XOR+popcount loop over
L1-resident 64-bit words on T threads (the faster of a POPCNT loop and an
AVX2 byte-table loop, the kind the engine uses) gives words/s; divided by the words one
image needs it bounds images/s for an engine whose binary convolutions are
all XNOR-popcount. Two word counts are reported: the words the fast engine
really popcounts (block convs, MSB and LSB planes over full sweeps, padding
bits of partial words included; the AVX2 tap-wise kernels for 3x3 convs over
16 or 32 input channels count exactly the window's bits), and the network's BMACs / 64 (input layer,
MSB passes and LSB passes, as if every gate were open) - the fast engine does
the input layer with a partial-sum table instead, so it can beat the second.

    python benchmarks/engine_speed.py [--checkpoint CKPT] [--threads T] [--min-time 2]
    python benchmarks/engine_speed.py --model reactnet-fracbnn    # ImageNet size, see main_imagenet

With ``--model reactnet-fracbnn`` (or reactnet-bnn) the comparison is at the
model's 224 x 224 input, batch 1 and 8, all cores, on a random model with
data-like statistics; its JSON keys are described in ``main_imagenet``.

Timing: per batch size, warm-up runs, then repeated runs until --min-time
seconds and --repeats runs have passed; the median is reported. For the
resnet20 comparison PyTorch and the engine are timed in --rounds pairs, back
to back, and ``speedup_*`` is the median of the pairs' ratios (this virtual
machine's speed drifts by tens of percent within minutes; a pair sees the
same machine on both sides); the rates printed are the medians per side. The main
comparison uses all cores (--threads); a second one with 1 thread for both
is printed too (``*_1thread_*`` keys), because multi-threaded timings of both
engines suffer when other processes compete for the cores (a thread that is
descheduled mid-batch delays the work the others wait for): check the load
average printed. The
last line printed is one JSON object (speedup_batch1, speedup_batch256,
speedup_vs_stock_torch_batch1, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from fracbnn.deploy import export_model
from fracbnn.deploy import fast
from fracbnn.deploy.golden import GoldenEngine
from fracbnn.ir import Graph
from fracbnn.models import create_model
from fracbnn.nn import cpu_ops


def calibrate_bn(model: torch.nn.Module, batches: int = 3, seed: int = 0) -> torch.nn.Module:
    """Give a randomly initialised model data-like BatchNorm statistics (train-mode passes, no weight change)."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        for _ in range(batches):
            model(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g))
    return model.eval()


def time_fn(fn, min_time: float, repeats: int, warmup: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_rate(model, images: torch.Tensor, args) -> float:
    model.eval()

    def run():
        with torch.inference_mode():
            model(images)

    reps = args.repeats if len(images) > 1 else max(args.repeats, 20)
    return len(images) / time_fn(run, args.min_time, reps, args.warmup)


def engine_rate(engine, images: np.ndarray, args) -> float:
    reps = args.repeats if len(images) > 1 else max(args.repeats, 20)
    return len(images) / time_fn(lambda: engine.logits(images), args.min_time, reps, args.warmup)


def popcount_words_per_s(threads: int, simd: bool, vec: bool = False, seconds: float = 1.0) -> float:
    """XOR+popcount words/s of a tight loop; vec: the AVX2 byte-table popcount instead of POPCNT (0 if absent)."""
    fk = fast.kernels()
    words = np.random.default_rng(0).integers(0, 2**63, 2048, dtype=np.int64).view(np.uint64)  # 16 KiB: in L1
    reps = 256
    while True:
        t = time.perf_counter()
        if fk.popcount_loop(words, reps, threads, int(simd), vec) is None:
            return 0.0
        dt = time.perf_counter() - t
        if dt >= seconds:
            return reps * len(words) / dt
        reps *= 2


def network_work(packed) -> dict:
    """BMACs and popcount words per image, from the packed program."""
    shapes = packed.validate()
    graph = Graph(packed.program)
    bmac = {"input": 0, "msb": 0, "lsb": 0}
    engine_words = 0
    for node in graph.of_kind("binary_conv", "frac_conv"):
        op = node.attrs
        o, ho, wo = shapes[op["output"]][1:]
        k, cin = int(op["kernel"]), int(op["in_channels"])
        per_plane = ho * wo * o * k * k * cin
        words = ho * wo * o * ((k * k * cin + 63) // 64)
        if k == 3 and cin in (16, 32) and o % (256 // cin) == 0:
            # the tap-wise AVX2 kernels (taps16_row / taps32_row): one lane of cin bits per tap, no partial words
            words = ho * wo * o * k * k * cin // 64
        if op["op"] == "frac_conv":
            bmac["msb"] += per_plane
            bmac["lsb"] += per_plane
            engine_words += 2 * words
        elif graph.producer(op["input"]).op == "thermometer":
            bmac["input"] += per_plane
        else:
            bmac["msb"] += per_plane
            engine_words += words
    return {"bmac": bmac, "bmac_total": sum(bmac.values()), "engine_words": engine_words}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="trained resnet20-fracbnn checkpoint (default: random init, BN calibrated)")
    p.add_argument("--model", default="resnet20-fracbnn")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for both (default: all cores)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3,
                   help="resnet20: PyTorch/engine timing pairs per batch size, back to back; speedup = median ratio")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-fp", action="store_true", help="skip the resnet20-fp reference timing")
    p.add_argument("--no-simd", action="store_true", help="force the portable kernels")
    p.add_argument("--no-single-thread", action="store_true",
                   help="skip the extra 1-thread comparison (less sensitive to other load on the machine)")
    p.add_argument("--calib-images", type=int, default=4,
                   help="ReActNet: images for data_like's BatchNorm statistics and gate placement")
    p.add_argument("--calib-size", type=int, default=128,
                   help="ReActNet: side of the calibration images, a multiple of 32 (224 takes minutes on 2 cores)")
    p.add_argument("--width", type=float, default=1.0, help="ReActNet: channel width multiplier (quick checks)")
    args = p.parse_args(argv)
    if args.model.startswith("reactnet"):
        return main_imagenet(args, p)

    T = args.threads
    torch.set_num_threads(T)
    torch.manual_seed(0)
    if args.checkpoint:
        from fracbnn.checkpoint import model_from_checkpoint
        model = model_from_checkpoint(args.checkpoint).eval()
        source = args.checkpoint
    else:
        model = calibrate_bn(create_model(args.model))
        source = f"random init {args.model}, BN statistics from 3 random batches"
    packed = export_model(model)
    engine = fast.FastEngine(packed, threads=T, simd=not args.no_simd)
    info = fast.build_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"model: {source}")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; threads: {T}; "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"fast engine build: {info}")

    rng = np.random.default_rng(0)
    check = rng.integers(0, 256, (32, 3, 32, 32), dtype=np.uint8)
    fast_logits = engine.logits(check)
    bit_exact = bool(np.array_equal(fast_logits, GoldenEngine(packed).logits(check)))
    with torch.inference_mode():
        agree = float((model(torch.from_numpy(check)).argmax(1).numpy() == fast_logits.argmax(1)).mean())
    print(f"fast == golden logits on {len(check)} images: {bit_exact}; top-1 agreement with PyTorch: {agree:.3f}")

    fp_model = None if args.no_fp else create_model("resnet20-fp").eval()
    result = {"threads": T, "cpu_count": os.cpu_count(), "load_avg_before": round(load[0], 2),
              "bit_exact": bit_exact, "kernels": info["kernels"], "openmp": bool(info["openmp"])}
    thread_counts = [T] + ([1] if T != 1 and not args.no_single_thread else [])
    for nt in thread_counts:
        torch.set_num_threads(nt)
        eng = engine if nt == T else fast.FastEngine(packed, threads=nt, simd=not args.no_simd)
        tag = "" if nt == T else "_1thread"
        print(f"--- {nt} thread(s)" + (" (all cores)" if nt == os.cpu_count() else ""))
        print(f"{'batch':>6} {'torch fracbnn':>15} {'fast engine':>13} {'speedup':>8} {'stock torch':>13} "
              f"{'vs stock':>8}" + ("" if fp_model is None else f" {'torch fp':>10} {'vs fp':>7}"))
        for bs in args.batch_sizes:
            imgs = rng.integers(0, 256, (bs, 3, 32, 32), dtype=np.uint8)
            timgs = torch.from_numpy(imgs)
            # paired rounds: PyTorch and the engine timed back to back, --rounds times; the speedup is the
            # median of the rounds' ratios, so a drift of the machine's speed hits both sides of each ratio
            pairs = [(torch_rate(model, timgs, args), engine_rate(eng, imgs, args)) for _ in range(args.rounds)]
            r_torch = statistics.median(t for t, _ in pairs)
            r_fast = statistics.median(f for _, f in pairs)
            paired = statistics.median(f / t for t, f in pairs)
            with cpu_ops.disabled():
                r_stock = torch_rate(model, timgs, args)
            line = (f"{bs:>6} {r_torch:>11.1f}/s {r_fast:>11.1f}/s {paired:>7.1f}x {r_stock:>11.1f}/s "
                    f"{r_fast / r_stock:>7.1f}x")
            result[f"torch_fracbnn_ips{tag}_batch{bs}"] = round(r_torch, 2)
            result[f"fast_ips{tag}_batch{bs}"] = round(r_fast, 2)
            result[f"speedup{tag}_batch{bs}"] = round(paired, 2)
            result[f"speedup_rounds{tag}_batch{bs}"] = [round(f / t, 2) for t, f in pairs]
            result[f"torch_fracbnn_stock_ips{tag}_batch{bs}"] = round(r_stock, 2)
            result[f"speedup_vs_stock_torch{tag}_batch{bs}"] = round(r_fast / r_stock, 2)
            if fp_model is not None:
                r_fp = torch_rate(fp_model, timgs, args)
                line += f" {r_fp:>8.1f}/s {r_fast / r_fp:>6.1f}x"
                result[f"torch_fp_ips{tag}_batch{bs}"] = round(r_fp, 2)
                result[f"speedup_vs_fp{tag}_batch{bs}"] = round(r_fast / r_fp, 2)
            print(line)
    torch.set_num_threads(T)

    # popcount limit: the tight loop and the engine (largest batch) timed back to back, three times,
    # so a change of machine load affects both sides of the ratio alike
    work = network_work(packed)
    big = rng.integers(0, 256, (max(args.batch_sizes), 3, 32, 32), dtype=np.uint8)
    rates, fracs, scalar_rates, vec_rates = [], [], [], []
    for _ in range(3):
        scalar = popcount_words_per_s(T, not args.no_simd)
        vec = popcount_words_per_s(T, not args.no_simd, vec=True)
        ips = engine_rate(engine, big, argparse.Namespace(min_time=0.5, repeats=1, warmup=0))
        rate = max(scalar, vec)  # the limit is the faster of the two ways this CPU can count bits
        scalar_rates.append(scalar)
        vec_rates.append(vec)
        rates.append(rate)
        fracs.append(ips * work["engine_words"] / rate)
    rate, frac = statistics.median(rates), statistics.median(fracs)
    print(f"popcount loops on {T} threads: POPCNT {statistics.median(scalar_rates) / 1e9:.2f} G words/s, "
          f"AVX2 byte table {statistics.median(vec_rates) / 1e9:.2f} G words/s")
    lim_engine = rate / work["engine_words"]
    lim_bmac = rate * 64 / work["bmac_total"]
    print(f"popcount limit: {rate / 1e9:.2f} G XOR+popcount words/s on {T} threads (best tight loop, L1-resident)")
    print(f"  engine popcount words/image {work['engine_words']:,} -> limit {lim_engine:,.0f} images/s; "
          f"the fast engine at batch {len(big)} runs at {frac:.0%} of it")
    print(f"  network BMACs/image {work['bmac_total']:,} (input {work['bmac']['input']:,}, MSB "
          f"{work['bmac']['msb']:,}, LSB {work['bmac']['lsb']:,}) / 64 -> limit {lim_bmac:,.0f} images/s "
          f"if every BMAC went through POPCNT; the fast engine reaches {frac * lim_engine / lim_bmac:.0%} of it")
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result.update(popcount_words_per_s=round(rate), popcnt_scalar_words_per_s=round(statistics.median(scalar_rates)),
                  popcnt_avx2_words_per_s=round(statistics.median(vec_rates)), engine_words_per_image=work["engine_words"],
                  popcount_limit_ips_engine_work=round(lim_engine, 1), fraction_of_limit_engine_work=round(frac, 3),
                  bmac_per_image=work["bmac_total"], popcount_limit_ips_all_bmac=round(lim_bmac, 1),
                  fraction_of_limit_all_bmac=round(frac * lim_engine / lim_bmac, 3),
                  load_avg_after=round(load_after, 2))
    print(json.dumps(result))
    return 0


def popcount_limit_share(engine, images: np.ndarray, words_per_image: int, threads: int, simd: bool,
                         rounds: int = 3, min_time: float = 0.5) -> tuple[float, float, float]:
    """(limit words/s, engine images/s, share of the limit): the tight loops and the engine timed back to
    back, ``rounds`` times (medians), so a change of machine load affects both sides of the ratio alike."""
    rates, ipss, shares = [], [], []
    for _ in range(rounds):
        rate = max(popcount_words_per_s(threads, simd), popcount_words_per_s(threads, simd, vec=True))
        ips = engine_rate(engine, images, argparse.Namespace(min_time=min_time, repeats=1, warmup=0))
        rates.append(rate)
        ipss.append(ips)
        shares.append(ips * words_per_image / rate)
    return statistics.median(rates), statistics.median(ipss), statistics.median(shares)


def main_imagenet(args, parser) -> int:
    """ReActNet at its input size (224 x 224): fast engine vs PyTorch FP32, batch 1 and 8 by default.

    The model is random with data-like statistics (fracbnn.models.calibrate.data_like on smooth random
    images, part-open gates). Same columns as the CIFAR comparison; the last line is one JSON object with
    model, bit_exact, speedup_batch1/8 (vs fracbnn's CPU path), speedup_vs_stock_torch_batch1/8 and
    popcount_limit_share_batch1/8 (fractions).
    """
    from fracbnn.models.calibrate import data_like, smooth_images

    T = args.threads
    batch_sizes = args.batch_sizes if args.batch_sizes != parser.get_default("batch_sizes") else [1, 8]
    torch.manual_seed(0)
    model = create_model(args.model, width=args.width)
    size = tuple(model.input_size)
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # many small ops: one thread is faster on busy cores
    data_like(model, smooth_images(args.calib_images, (args.calib_size, args.calib_size)))
    calib_s = time.perf_counter() - t0
    torch.set_num_threads(T)
    packed = export_model(model)
    engine = fast.FastEngine(packed, threads=T, simd=not args.no_simd)
    info = fast.build_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"model: random init {args.model}, data_like statistics from {args.calib_images} smooth images of "
          f"{args.calib_size}x{args.calib_size} ({calib_s:.0f} s); input {size[1]}x{size[2]}")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; threads: {T}; "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"fast engine build: {info}")

    check = smooth_images(2, size[1:], seed=1).numpy()
    fast_logits = engine.logits(check)
    bit_exact = bool(np.array_equal(fast_logits, GoldenEngine(packed).logits(check)))
    print(f"fast == golden logits on {len(check)} images: {bit_exact}")

    # one timed run per measurement is enough at these sizes (a PyTorch batch of 8 takes tens of seconds)
    slow = argparse.Namespace(min_time=min(args.min_time, 1.0), repeats=1, warmup=1, batch1_repeats=3)
    fp_model = None if args.no_fp else create_model(args.model.rsplit("-", 1)[0] + "-fp", width=args.width).eval()
    result = {"model": args.model, "input_size": list(size), "threads": T, "cpu_count": os.cpu_count(),
              "load_avg_before": round(load[0], 2), "bit_exact": bit_exact, "kernels": info["kernels"],
              "openmp": bool(info["openmp"])}
    work = network_work(packed)
    rng = np.random.default_rng(0)
    print(f"--- {T} thread(s)" + (" (all cores)" if T == os.cpu_count() else ""))
    print(f"{'batch':>6} {'torch fracbnn':>15} {'fast engine':>13} {'ms/img':>7} {'speedup':>8} {'stock torch':>13} "
          f"{'vs stock':>8}" + ("" if fp_model is None else f" {'torch fp':>10} {'vs fp':>7}")
          + f" {'popcount limit share':>21}")
    for bs in batch_sizes:
        imgs = rng.integers(0, 256, (bs, *size), dtype=np.uint8)
        timgs = torch.from_numpy(imgs)
        once = slow if bs == batch_sizes[0] else argparse.Namespace(**dict(vars(slow), warmup=0))  # warm by now
        r_torch = torch_rate(model, timgs, once)
        with cpu_ops.disabled():
            r_stock = torch_rate(model, timgs, once)
        r_fp = torch_rate(fp_model, timgs, once) if fp_model is not None else None
        rate, r_fast, share = popcount_limit_share(engine, imgs, work["engine_words"], T, not args.no_simd,
                                                   min_time=args.min_time / 2)
        line = (f"{bs:>6} {r_torch:>11.2f}/s {r_fast:>11.2f}/s {1000 / r_fast:>7.1f} {r_fast / r_torch:>7.1f}x "
                f"{r_stock:>11.2f}/s {r_fast / r_stock:>7.1f}x")
        if r_fp is not None:
            line += f" {r_fp:>8.2f}/s {r_fast / r_fp:>6.1f}x"
            result[f"torch_fp_ips_batch{bs}"] = round(r_fp, 3)
            result[f"speedup_vs_fp_batch{bs}"] = round(r_fast / r_fp, 2)
        print(line + f" {share:>20.0%}")
        result.update({f"torch_fracbnn_ips_batch{bs}": round(r_torch, 3), f"fast_ips_batch{bs}": round(r_fast, 2),
                       f"fast_ms_per_image_batch{bs}": round(1000 / r_fast, 2),
                       f"speedup_batch{bs}": round(r_fast / r_torch, 2),
                       f"torch_fracbnn_stock_ips_batch{bs}": round(r_stock, 3),
                       f"speedup_vs_stock_torch_batch{bs}": round(r_fast / r_stock, 2),
                       f"popcount_limit_words_per_s_batch{bs}": round(rate),
                       f"popcount_limit_share_batch{bs}": round(share, 3)})
    lim = statistics.median(result[f"popcount_limit_words_per_s_batch{bs}"] for bs in batch_sizes)
    print(f"popcount limit: {lim / 1e9:.2f} G XOR+popcount words/s on {T} threads (best tight loop, L1-resident); "
          f"engine popcount words/image {work['engine_words']:,} -> limit {lim / work['engine_words']:,.1f} images/s")
    print(f"  network BMACs/image {work['bmac_total']:,} (input {work['bmac']['input']:,}, MSB "
          f"{work['bmac']['msb']:,}, LSB {work['bmac']['lsb']:,})")
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result.update(engine_words_per_image=work["engine_words"], bmac_per_image=work["bmac_total"],
                  load_avg_after=round(load_after, 2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
