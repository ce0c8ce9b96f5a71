"""The image models of the classic MNIST and CIFAR-10 recipes, each named after its source and readable beside it.

    model = CaffeLeNet()          # BVLC/caffe examples/mnist/lenet_train_test.prototxt
    logits = model(images)        # images: (batch, 1, 28, 28) or (batch, 784)

Each class initialises its parameters as its source did (Caffe's fillers, Keras's glorot_uniform, He et al.'s
initialisation), drawing from PyTorch's global generator, so a training seed fixes them (replicate.seed_stack
seeds it before building each seed's model). Layers are shared only where the sources share them.

Dropout and BatchNorm behave differently in training and in evaluation, and draw or keep state per seed:
models that have them set `trains_seeds_alone`, and replicate.seed_stack trains their seeds one at a time.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from replicate.airbench import Airbench94Net
from replicate.cifar10_fast import ResNet9
from replicate.cuda_convnet import CudaConvnet18pct
from replicate.theano_tutorials import TheanoLogisticRegression
from replicate.zaremba_lstm import ZarembaLSTM


def as_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(batch, C·H·W) or (batch, C, H, W) → (batch, C, H, W): loaders may hand either layout. These models train
    their seeds one at a time or under vmap, so the first axis is always the batch."""
    return x.reshape(x.shape[0], *shape)


@torch.no_grad()
def caffe_xavier_(weight: torch.Tensor) -> None:
    """Caffe's "xavier" filler with its default variance_norm FAN_IN: U(±√(3 / fan_in)), fan_in = count / num_output
    (BVLC/caffe include/caffe/filler.hpp, XavierFiller, lines 148–165 at 9b89154)."""
    fan_in = weight[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    weight.uniform_(-bound, bound)


class CaffeLeNet(nn.Module):
    """Caffe's LeNet for MNIST (BVLC/caffe examples/mnist/lenet_train_test.prototxt at 9b89154):
    conv1 20@5×5 → max-pool 2/2 → conv2 50@5×5 → max-pool 2/2 → ip1 500 → ReLU → ip2 10.
    No nonlinearity after the convolutions (the prototxt has none); weights "xavier", biases "constant" 0."""

    trains_seeds_alone = False

    def __init__(self, output_size: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.ip1 = nn.Linear(50 * 4 * 4, 500)
        self.ip2 = nn.Linear(500, output_size)
        for layer in (self.conv1, self.conv2, self.ip1, self.ip2):
            caffe_xavier_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = F.max_pool2d(self.conv1(as_images(x, (1, 28, 28))), 2, 2)
        h = F.max_pool2d(self.conv2(h), 2, 2)
        return self.ip2(self.ip1(h.flatten(1)).relu())


class CaffeCifar10Quick(nn.Module):
    """Caffe's CIFAR-10 "quick" net (BVLC/caffe examples/cifar10/cifar10_quick_train_test.prototxt at 9b89154):
    conv1 32@5×5 pad 2 → max-pool 3/2 → ReLU → conv2 32@5×5 pad 2 → ReLU → ave-pool 3/2 → conv3 64@5×5 pad 2 →
    ReLU → ave-pool 3/2 → ip1 64 → ip2 10. No ReLU between ip1 and ip2 (the prototxt has none).
    Caffe's pooling rounds the output size up (ceil_mode) and divides an average by the window clipped to the image
    (pad 0), as PyTorch's ceil_mode pooling does. Gaussian weight fillers: std 1e-4 (conv1), 0.01 (conv2, conv3),
    0.1 (ip1, ip2); biases 0."""

    trains_seeds_alone = False

    def __init__(self, output_size: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.ip1 = nn.Linear(64 * 4 * 4, 64)  # 32 → 16 → 8 → 4 pixels per side through the three 3/2 poolings
        self.ip2 = nn.Linear(64, output_size)
        for layer, std in ((self.conv1, 1e-4), (self.conv2, 0.01), (self.conv3, 0.01), (self.ip1, 0.1), (self.ip2, 0.1)):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = F.max_pool2d(self.conv1(as_images(x, (3, 32, 32))), 3, 2, ceil_mode=True).relu()
        h = F.avg_pool2d(self.conv2(h).relu(), 3, 2, ceil_mode=True)
        h = F.avg_pool2d(self.conv3(h).relu(), 3, 2, ceil_mode=True)
        return self.ip2(self.ip1(h.flatten(1)))


class KerasMnistMLP(nn.Module):
    """Keras's examples/mnist_mlp.py (keras-team/keras at 34838cd, 2015-11-19, lines 40–48):
    784 → Dense 512 ReLU → Dropout 0.2 → Dense 512 ReLU → Dropout 0.2 → Dense 10 (softmax in the loss).
    Dense layers start glorot_uniform, U(±√(6 / (fan_in + fan_out))), biases 0 (keras/initializations.py lines
    37–39, keras/layers/core.py Dense at that commit). Keras's dropout scales kept units by 1/(1 − p) during
    training only (keras/backend/theano_backend.py `dropout`, lines 367–376), as F.dropout does."""

    trains_seeds_alone = True  # dropout draws from the generator: each seed's masks as when it trains alone

    def __init__(self, input_size: int = 784, output_size: int = 10, hidden_size: int = 512, dropout: float = 0.2):
        super().__init__()
        self.input_size, self.dropout = input_size, dropout
        self.dense1 = nn.Linear(input_size, hidden_size)
        self.dense2 = nn.Linear(hidden_size, hidden_size)
        self.dense3 = nn.Linear(hidden_size, output_size)
        for layer in (self.dense1, self.dense2, self.dense3):
            nn.init.xavier_uniform_(layer.weight)  # the same bound: √(6 / (fan_in + fan_out))
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = F.dropout(self.dense1(x.reshape(x.shape[0], self.input_size)).relu(), self.dropout, self.training)
        h = F.dropout(self.dense2(h).relu(), self.dropout, self.training)
        return self.dense3(h)


class BasicBlock(nn.Module):
    """He et al. 2016's residual unit for CIFAR: two 3×3 conv-BN layers, ReLU after the addition. Where the width
    doubles, the shortcut is option A: identity on every second pixel, zero-padded with new channels (no parameters)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.stride, self.extra_channels = stride, channels - in_channels

    def shortcut(self, x):
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # zeros after the existing channels

    def forward(self, x):
        h = self.bn1(self.conv1(x)).relu()
        h = self.bn2(self.conv2(h))
        return (h + self.shortcut(x)).relu()


class CifarResNet(nn.Module):
    """He, Zhang, Ren, Sun 2016, "Deep Residual Learning for Image Recognition", section 4.2: a 3×3 convolution
    with 16 filters, then 3 stages of n residual units with {16, 32, 64} filters on {32, 16, 8}-pixel maps (the
    first unit of stages 2 and 3 subsamples with stride 2), global average pooling, a 10-way fully-connected layer:
    6n + 2 weighted layers (n = 3: ResNet-20). Convolutions start as in He et al. 2015 ("Delving deep into
    rectifiers"): N(0, 2 / fan_in)."""

    trains_seeds_alone = True  # BatchNorm keeps running statistics per seed, updated in place

    def __init__(self, depth: int = 20, output_size: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110); got depth {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, in_channels = [], 16
        for stage, channels in enumerate((16, 32, 64)):
            for unit in range(n):
                blocks.append(BasicBlock(in_channels, channels, stride=2 if stage > 0 and unit == 0 else 1))
                in_channels = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, output_size)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x):
        h = self.bn(self.conv(as_images(x, (3, 32, 32)))).relu()
        h = self.blocks(h)
        return self.fc(h.mean((2, 3)))


PAPER_MODELS = {  # model.name → builder from the model config
    "caffe_lenet": lambda cfg: CaffeLeNet(output_size=cfg.output_size),
    "caffe_cifar10_quick": lambda cfg: CaffeCifar10Quick(output_size=cfg.output_size),
    "keras_mnist_mlp": lambda cfg: KerasMnistMLP(cfg.input_size, cfg.output_size, cfg.hidden_size or 512,
                                                 0.2 if cfg.dropout is None else cfg.dropout),
    "cifar_resnet": lambda cfg: CifarResNet(depth=cfg.depth or 20, output_size=cfg.output_size),
    "cifar10_fast_resnet9": lambda cfg: ResNet9(output_size=cfg.output_size),  # replicate/cifar10_fast.py
    "theano_logreg": lambda cfg: TheanoLogisticRegression(cfg.input_size, cfg.output_size),  # replicate.theano_tutorials
    "cudaconvnet_18pct": lambda cfg: CudaConvnet18pct(output_size=cfg.output_size),
    "airbench94": lambda cfg: Airbench94Net(output_size=cfg.output_size),
    "zaremba_lstm": lambda cfg: ZarembaLSTM(cfg.input_size, cfg.hidden_size or 200, dropout=cfg.dropout or 0.0),
}
