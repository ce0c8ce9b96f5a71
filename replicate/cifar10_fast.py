"""David Page's ResNet-9 for CIFAR-10 (davidcpage/cifar10-fast, "How to train your ResNet"), readable beside its source.

    model = ResNet9()        # the net of demo.ipynb / utils.py at commit 5ca5d10
    logits = model(images)   # images: (batch, 3, 32, 32) or (batch, 3072)

The source builds the net as a dict of layers (demo.ipynb cell 6 at 5ca5d10196a6939be7358bda071beeb63a577efb: `conv_bn`,
`residual`, `basic_net`, `net`); each node takes the previous node's output unless named otherwise, so a layer's
`pool` runs after its ReLU and its `residual` after the pool. Here the same graph is written as modules:

    prep    conv_bn(3, 64)
    layer1  conv_bn(64, 128) → max-pool 2 → x + res2(res1(x)), res1 = res2 = conv_bn(128, 128)
    layer2  conv_bn(128, 256) → max-pool 2
    layer3  conv_bn(256, 512) → max-pool 2 → x + res2(res1(x)), res1 = res2 = conv_bn(512, 512)
    classifier  max-pool 4 → flatten → linear 512 → 10 (no bias) → × 0.125

conv_bn = 3×3 convolution (stride 1, padding 1, no bias) → BatchNorm2d → ReLU. BatchNorm is PyTorch's nn.BatchNorm2d
with its defaults (eps 1e-5, momentum 0.1, affine), its weight filled with 1.0 (`bn_weight_init=1.0`) and its bias
left at PyTorch's 0; both train. Convolution and linear weights keep PyTorch's default init, U(±1/√fan_in).
"""
from __future__ import annotations

from torch import nn

CHANNELS = {"prep": 64, "layer1": 128, "layer2": 256, "layer3": 512}  # net(): `channels or {...}`
LOGIT_WEIGHT = 0.125  # net(weight=0.125): the classifier's `Mul(weight)` scales the logits


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """conv_bn(c_in, c_out, bn_weight_init=1.0): Conv2d(3×3, stride 1, padding 1, bias=False) → BatchNorm2d → ReLU."""
    batch_norm = nn.BatchNorm2d(c_out)  # utils.py batch_norm(): nn.BatchNorm2d(num_channels), PyTorch's eps and momentum
    nn.init.ones_(batch_norm.weight)    # m.weight.data.fill_(bn_weight_init), bn_weight_init=1.0
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False), batch_norm, nn.ReLU())


class Residual(nn.Module):
    """residual(c): 'add' = in + res2/relu, with res1 and res2 each conv_bn(c, c)."""

    def __init__(self, channels: int):
        super().__init__()
        self.res1 = conv_bn(channels, channels)
        self.res2 = conv_bn(channels, channels)

    def forward(self, x):
        return x + self.res2(self.res1(x))


class ResNet9(nn.Module):
    """net() with res_layers=('layer1', 'layer3'), pool=nn.MaxPool2d(2), weight=0.125 (6.57 M parameters)."""

    trains_seeds_alone = True  # BatchNorm keeps running statistics per seed, updated in place

    def __init__(self, output_size: int = 10):
        super().__init__()
        c = CHANNELS
        self.prep = conv_bn(3, c["prep"])
        self.layer1 = nn.Sequential(conv_bn(c["prep"], c["layer1"]), nn.MaxPool2d(2), Residual(c["layer1"]))
        self.layer2 = nn.Sequential(conv_bn(c["layer1"], c["layer2"]), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(conv_bn(c["layer2"], c["layer3"]), nn.MaxPool2d(2), Residual(c["layer3"]))
        self.pool = nn.MaxPool2d(4)  # the 4×4 map left after three halvings of 32 → one value per channel
        self.linear = nn.Linear(c["layer3"], output_size, bias=False)

    def forward(self, x):
        h = self.layer3(self.layer2(self.layer1(self.prep(x.reshape(x.shape[0], 3, 32, 32)))))
        return self.linear(self.pool(h).flatten(1)) * LOGIT_WEIGHT
