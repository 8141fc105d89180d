"""The generated PYNQ drivers against a stand-in `pynq` module: buffer addresses reach the IP's registers, the
IP is started and waited for, and the ImageNet driver's classifier on the ARM gives the golden logits."""

import importlib
import sys
import types

import numpy as np
from exportable import data_like_model, family_images

from fracbnn.deploy import export_model
from fracbnn.deploy.golden import run_program
from fracbnn.hw.reactnet.generate import generate_rx_project


class _Buffer(np.ndarray):
    def flush(self):
        pass

    def invalidate(self):
        pass


def fake_pynq(ip_behaviour):
    """A `pynq` with allocate (addresses -> buffers) and an Overlay whose IP runs ``ip_behaviour(buffers)``."""
    memory = {}

    def allocate(shape, dtype):
        buf = np.zeros(shape, dtype).view(_Buffer)
        buf.device_address = 0x1_0000_0000 + 0x100_0000 * len(memory)  # above 4 GB: two address registers
        memory[buf.device_address] = buf
        return buf

    class Regs:
        pass

    class IP:
        def __init__(self):
            self.register_map = Regs()
            for arg in ("params", "image", "codes_a", "codes_b", "pooled", "logits"):
                setattr(self.register_map, f"{arg}_1", 0)
                setattr(self.register_map, f"{arg}_2", 0)
            self.started = 0

        def buffer(self, arg):
            r = self.register_map
            return memory[getattr(r, f"{arg}_1") | getattr(r, f"{arg}_2") << 32]

        def write(self, offset, value):
            if offset == 0 and value == 1:
                self.started += 1
                ip_behaviour(self)

        def read(self, offset):
            return 0x2  # ap_done

    class Overlay:
        def __init__(self, bitfile):
            self.ip_dict = {"fracbnn_top_0": {}}
            self.fracbnn_top_0 = IP()

    return types.SimpleNamespace(allocate=allocate, Overlay=Overlay)


def test_imagenet_driver_gives_the_golden_logits(tmp_path, monkeypatch):
    packed = export_model(data_like_model("reactnet-fracbnn"))
    images = np.asarray(family_images("reactnet-fracbnn", 3))
    out = tmp_path / "prj"
    generate_rx_project(packed, out, images=images, image_origin="test")
    buffers = run_program(packed, images)
    pool_of = {images[i].tobytes(): buffers["pool"][i] for i in range(len(images))}

    def ip(dev):  # the accelerator: global-pool sums of the image in the image buffer, read by address
        assert dev.buffer("params")[:8].tobytes() == (out / "params.bin").read_bytes()[:8]
        img = dev.buffer("image")[:images[0].size].tobytes()
        dev.buffer("pooled")[:] = pool_of[img]

    monkeypatch.setitem(sys.modules, "pynq", fake_pynq(ip))
    monkeypatch.syspath_prepend(str(out / "host"))
    sys.modules.pop("fracbnn_pynq", None)
    driver = importlib.import_module("fracbnn_pynq")
    try:
        acc = driver.FracBNNImageNet("fracbnn.bit", project_dir=out)
        got = np.stack([acc.logits(im) for im in images])
        np.testing.assert_array_equal(got, buffers["logits"])
        assert acc.ip.started == len(images)
    finally:
        sys.modules.pop("fracbnn_pynq", None)
        sys.modules.pop("pynq_ip", None)
