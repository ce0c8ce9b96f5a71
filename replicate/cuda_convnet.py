"""Krizhevsky's cuda-convnet (2011), the pieces its CIFAR-10 example nets need, readable beside its source: the
`rnorm` layer (response normalization over a spatial neighbourhood within each map) and the `layers-18pct` net.
Source: dnouri/cuda-convnet at e4ac0c1f374a15cfe3944bd6d732c3822cc2b96b (a fork of the Google Code original that
changes neither the layers nor the update; README.rst).

    net = CudaConvnet18pct()      # example-layers/layers-18pct.cfg, "18% error on CIFAR-10 in 20 minutes"
    logits = net(images)          # images: (batch, 3, 32, 32) or (batch, 3072), mean image subtracted, 0..255 scale

Pooling: a cuda-convnet pool layer has ceil((size − start − sizeX) / stride) + 1 outputs per side (layer.py line
1023) and its average divides by the window clipped to the image (include/cudaconv2/conv_util.cuh lines 162–166,
AvgPooler lines 72–83): PyTorch's ceil_mode pooling with no padding does the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def response_norm(x: torch.Tensor, size: int, scale: float, power: float) -> torch.Tensor:
    """cuda-convnet's `rnorm` (ResponseNormLayer): each value divided by (1 + scale/size² · Σ x²)^power, the sum over
    the size × size pixels of the same map starting size//2 before it, clipped to the image.

    The parser divides the configured scale by size² for rnorm (by size for the cross-map `cmrnorm`):
    layer.py line 1043; the kernel adds the squares of the window clipped to the image, forms 1 + addScale·Σ and
    multiplies the input by that to the power −pow (src/cudaconv2/conv_util.cu kCNorm_manyfilter, lines 842–889;
    convResponseNorm, line 2064, is convContrastNorm with the input as its own "mean difference").
    torch.nn.LocalResponseNorm normalises across channels instead, so it is not this layer. x: (..., C, H, W)."""
    before = size // 2  # C's -sizeX/2 truncates toward zero: the window starts size//2 pixels before
    squares = F.pad(x.square(), (before, size - 1 - before, before, size - 1 - before))
    shape = squares.shape
    # a sum over each window: divisor_override=1 adds the squares without dividing (the zero padding adds nothing)
    sums = F.avg_pool2d(squares.reshape(-1, *shape[-3:]), size, stride=1, divisor_override=1).reshape(x.shape)
    return x * (1 + (scale / size**2) * sums).pow(-power)


class ResponseNorm(nn.Module):
    """The `rnorm` layer: response_norm with the layer's size, scale and pow."""

    def __init__(self, size: int, scale: float, power: float):
        super().__init__()
        self.size, self.scale, self.power = size, scale, power

    def forward(self, x):
        return response_norm(x, self.size, self.scale, self.power)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, pow={self.power}"


class CudaConvnet18pct(nn.Module):
    """example-layers/layers-18pct.cfg (lines 11–104), with layer-params-18pct.cfg's rnorm scale 0.00005, pow 0.75
    (lines 37–43): conv1 32@5×5 pad 2 → max-pool 3/2 → ReLU (the neuron sits on pool1, line 32) → rnorm 3 →
    conv2 32@5×5 pad 2 → ReLU → avg-pool 3/2 → rnorm 3 → conv3 64@5×5 pad 2 → ReLU → avg-pool 3/2 → fc10 → softmax.
    32 → 16 → 8 → 4 pixels per side. Weights N(0, initW²) (layer.py line 720: initW · randn) with initW 1e-4 (conv1,
    line 19), 0.01 (conv2, conv3, fc10: lines 49, 78, 96); biases initB, default 0 (layer.py line 745)."""

    trains_seeds_alone = False

    def __init__(self, output_size: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.rnorm1 = ResponseNorm(size=3, scale=0.00005, power=0.75)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.rnorm2 = ResponseNorm(size=3, scale=0.00005, power=0.75)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc10 = nn.Linear(64 * 4 * 4, output_size)
        for layer, init_w in ((self.conv1, 1e-4), (self.conv2, 0.01), (self.conv3, 0.01), (self.fc10, 0.01)):
            nn.init.normal_(layer.weight, 0.0, init_w)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = F.max_pool2d(self.conv1(x.reshape(x.shape[0], 3, 32, 32)), 3, 2, ceil_mode=True).relu()  # flat or image batches
        h = self.rnorm1(h)
        h = F.avg_pool2d(self.conv2(h).relu(), 3, 2, ceil_mode=True)
        h = self.rnorm2(h)
        h = F.avg_pool2d(self.conv3(h).relu(), 3, 2, ceil_mode=True)
        return self.fc10(h.flatten(1))
