"""Layer shapes the accelerator models work on, from sizes (a packed model's: ``program.hw_program(...).shapes``).

The cycle and resource models only need the convolution shapes of a CIFAR
FracBNN ResNet: the thermometer input layer ("input") and the 3x3 fractional
convolutions of the residual blocks ("frac"), each with its residual kind.
Names follow ``model.named_modules()`` so measured gate statistics and the
golden engine's per-layer densities line up with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ConvLayer:
    """One 3x3, padding-1 binary convolution and what the engine does around it."""

    name: str
    kind: str  # "input" (thermometer stem, 1-bit inputs) | "frac" (2-bit gated conv)
    cin: int
    cout: int
    h_in: int
    w_in: int
    stride: int
    residual: str  # "none" (stem) | "identity" | "downsample" (2x2 avg pool + channel duplication)

    @property
    def h_out(self) -> int:
        return (self.h_in - 1) // self.stride + 1

    @property
    def w_out(self) -> int:
        return (self.w_in - 1) // self.stride + 1

    def to_dict(self) -> dict:
        return asdict(self)


def cifar_resnet_layers(depth: int = 20, width: float = 1.0, in_channels: int = 3, resolution: int = 8,
                        image_size: int = 32) -> list[ConvLayer]:
    """Conv shapes of ``resnet{depth}-fracbnn`` without building the model."""
    from ..quant.thermometer import bits_per_channel

    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    widths = [max(1, int(round(w * width))) for w in (16, 32, 64)]
    t = bits_per_channel(resolution)
    layers = [ConvLayer("stem", "input", in_channels * t, widths[0], image_size, image_size, 1, "none")]
    cin, h = widths[0], image_size
    for i, cout in enumerate(widths):
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            res = "downsample" if stride == 2 else "identity"
            layers.append(ConvLayer(f"stages.{i}.{j}.conv1", "frac", cin, cout, h, h, stride, res))
            h = (h - 1) // stride + 1
            layers.append(ConvLayer(f"stages.{i}.{j}.conv2", "frac", cout, cout, h, h, 1, "identity"))
            cin = cout
    return layers
