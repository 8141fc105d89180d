"""PYNQ host driver for the FracBNN accelerator (written by `fracbnn hw generate`).

On the Ultra96v2 (PYNQ image), next to fracbnn.bit and fracbnn.hwh:

    from fracbnn_pynq import FracBNNAccel
    acc = FracBNNAccel("fracbnn.bit")
    logits = acc.logits(image_uint8_chw)     # int64 integer logits, identical to the golden engine
    label = int(logits.argmax())

The kernel is an HLS ap_ctrl_hs block with one s_axilite port: the host
writes the physical addresses of the image and logits buffers, sets
ap_start and polls ap_done. The argument offsets are read from the overlay's
register map (names as Vitis HLS writes them: image / logits, split into
_1/_2 halves for 64-bit addresses on some versions).
"""

import numpy as np
from pynq_ip import run, set_address  # copied next to this file by `fracbnn hw generate`

IMG_SHAPE = @IMG_SHAPE@
NUM_CLASSES = @NUM_CLASSES@
LOGIT_DENOMINATOR = @LOGIT_DENOMINATOR@  # real logit = integer logit / LOGIT_DENOMINATOR


class FracBNNAccel:
    def __init__(self, bitfile="fracbnn.bit", ip_name=None):
        from pynq import Overlay, allocate

        self.overlay = Overlay(bitfile)
        name = ip_name or next(k for k in self.overlay.ip_dict if k.startswith("fracbnn_top"))
        self.ip = getattr(self.overlay, name)
        self.image = allocate(shape=(int(np.prod(IMG_SHAPE)),), dtype=np.uint8)
        self.out = allocate(shape=(NUM_CLASSES,), dtype=np.int64)
        set_address(self.ip, "image", self.image.device_address)
        set_address(self.ip, "logits", self.out.device_address)

    def logits(self, image):
        img = np.ascontiguousarray(image, dtype=np.uint8)
        if img.shape != IMG_SHAPE:
            raise ValueError(f"image must be uint8 {IMG_SHAPE} (C, H, W), got {img.shape}")
        self.image[:] = img.reshape(-1)
        self.image.flush()
        run(self.ip)
        self.out.invalidate()
        return np.array(self.out, dtype=np.int64)

    def predict(self, images):
        return np.array([int(self.logits(im).argmax()) for im in images])


if __name__ == "__main__":
    import sys
    import time

    acc = FracBNNAccel(sys.argv[1] if len(sys.argv) > 1 else "fracbnn.bit")
    imgs = np.random.default_rng(0).integers(0, 256, size=(100, *IMG_SHAPE), dtype=np.uint8)
    t0 = time.time()
    for im in imgs:
        acc.logits(im)
    dt = time.time() - t0
    print(f"{len(imgs) / dt:.1f} images/s including Python and AXI overhead")
