"""PYNQ host driver for the FracBNN ImageNet accelerator (written by `fracbnn hw generate`).

On the Ultra96v2 (PYNQ image), next to fracbnn.bit / fracbnn.hwh and this
project's params.bin and fc.bin:

    from fracbnn_pynq import FracBNNImageNet
    acc = FracBNNImageNet("fracbnn.bit", project_dir=".")
    logits = acc.logits(image_uint8_chw)   # int64 integer logits, identical to the golden engine
    label = int(logits.argmax())

The IP (ap_ctrl_hs, one s_axilite port) reads the weights and constants from
the params buffer, the image from the image buffer, keeps the feature maps on
chip, streams each layer's 4-bit shortcut codes through two DRAM buffers and
writes the global-pool sums; the classifier runs here on the ARM, in int64,
exactly like the model's `linear` op: logits = pooled @ W.T + b.
"""

from pathlib import Path

import numpy as np
from pynq_ip import run, set_address  # copied next to this file by `fracbnn hw generate`

IMG_SHAPE = @IMG_SHAPE@
NUM_CLASSES = @NUM_CLASSES@
POOL_C = @POOL_C@              # channels of the global-pool sums
PARAMS_BYTES = @PARAMS_BYTES@
CODE_BYTES = @CODE_BYTES@      # one 4-bit code buffer (two are used, ping-pong)
BUS_BYTES = @BUS_BYTES@
LOGIT_DENOMINATOR = @LOGIT_DENOMINATOR@  # real logit = integer logit / LOGIT_DENOMINATOR


def _padded(n):
    return (n + BUS_BYTES - 1) // BUS_BYTES * BUS_BYTES + BUS_BYTES


class FracBNNImageNet:
    def __init__(self, bitfile="fracbnn.bit", project_dir=".", ip_name=None):
        from pynq import Overlay, allocate

        d = Path(project_dir)
        params = np.fromfile(d / "params.bin", dtype=np.uint8)
        if params.size != PARAMS_BYTES:
            raise ValueError(f"{d / 'params.bin'} has {params.size} bytes, expected {PARAMS_BYTES}; "
                             "use the params.bin of this project")
        fc = np.fromfile(d / "fc.bin", dtype="<i8")
        self.fc_w = fc[:NUM_CLASSES * POOL_C].reshape(NUM_CLASSES, POOL_C)
        self.fc_b = fc[NUM_CLASSES * POOL_C:]
        self.overlay = Overlay(bitfile)
        name = ip_name or next(k for k in self.overlay.ip_dict if k.startswith("fracbnn_top"))
        self.ip = getattr(self.overlay, name)
        self.params = allocate(shape=(_padded(PARAMS_BYTES),), dtype=np.uint8)
        self.params[:PARAMS_BYTES] = params
        self.params.flush()
        self.image = allocate(shape=(_padded(int(np.prod(IMG_SHAPE))),), dtype=np.uint8)
        self.codes_a = allocate(shape=(_padded(CODE_BYTES),), dtype=np.uint8)
        self.codes_b = allocate(shape=(_padded(CODE_BYTES),), dtype=np.uint8)
        self.pooled = allocate(shape=(POOL_C,), dtype=np.int64)
        for arg, buf in (("params", self.params), ("image", self.image), ("codes_a", self.codes_a),
                         ("codes_b", self.codes_b), ("pooled", self.pooled)):
            set_address(self.ip, arg, buf.device_address)

    def pooled_sums(self, image):
        img = np.ascontiguousarray(image, dtype=np.uint8)
        if img.shape != IMG_SHAPE:
            raise ValueError(f"image must be uint8 {IMG_SHAPE} (C, H, W), got {img.shape}")
        self.image[:img.size] = img.reshape(-1)
        self.image.flush()
        run(self.ip)
        self.pooled.invalidate()
        return np.array(self.pooled, dtype=np.int64)

    def logits(self, image):
        """Integer logits: the IP's global-pool sums through the classifier (int64, as the IR's linear op)."""
        return self.pooled_sums(image) @ self.fc_w.T + self.fc_b

    def predict(self, images):
        return np.array([int(self.logits(im).argmax()) for im in images])


if __name__ == "__main__":
    import sys
    import time

    here = Path(__file__).resolve().parent.parent
    acc = FracBNNImageNet(sys.argv[1] if len(sys.argv) > 1 else "fracbnn.bit", project_dir=here)
    imgs = np.fromfile(here / "tb_images.bin", dtype=np.uint8).reshape(-1, *IMG_SHAPE)
    want = np.fromfile(here / "tb_logits.bin", dtype="<i8").reshape(len(imgs), NUM_CLASSES)
    t0 = time.time()
    got = np.stack([acc.logits(im) for im in imgs])
    dt = time.time() - t0
    print(f"{len(imgs) / dt:.1f} images/s including Python and AXI overhead; "
          f"{int((got != want).any(axis=1).sum())} of {len(imgs)} images differ from the golden logits")
