"""The airbench94 network (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv 2404.00498),
transcribed from KellerJordan/cifar10-airbench legacy/airbench94.py at f1c599c4af24aca803e3e65a6a7e52a502e09d0e.
Line numbers below refer to that file.

    model = Airbench94Net()
    model.initialize_from_training_data(x_train)   # the whitening layer, from the first 5000 training images
    logits = model(images)                          # images: (batch, 3, 32, 32), normalised

The first layer is a fixed 2×2 "whitening" convolution built from the eigenvectors of the training images' 2×2
patch covariance (its weight is a buffer, never trained; its bias trains, replicate.freezing stops it after 3
epochs as the source does). Three groups of conv → max-pool → BatchNorm → GELU → conv → BatchNorm → GELU follow,
then a 3×3 max-pool, a bias-free linear layer and a fixed output scale of 1/9. BatchNorm weights are fixed at 1
(buffers); only their biases train.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (64, 256, 256)  # hyp['net']['widths'] block1..3, lines 54–58
BATCHNORM_MOMENTUM = 0.6  # hyp['net']['batchnorm_momentum'], line 59: the running statistics keep 0.6 of their value
SCALING_FACTOR = 1 / 9  # hyp['net']['scaling_factor'], line 60: the logits are multiplied by this
WHITEN_KERNEL = 2  # whiten_kernel_size, line 217: 2×2 patches
WHITEN_EPS = 5e-4  # init_whitening_conv eps, line 253, added to each eigenvalue before the square root
WHITEN_IMAGES = 5000  # line 402: the whitening layer is fitted on train_loader.images[:5000], normalised


class BatchNorm(nn.BatchNorm2d):
    """airbench's BatchNorm (lines 171–177): eps 1e-12, PyTorch momentum 1 − 0.6, weight fixed at 1, bias trained.
    The fixed weight is a buffer here, so neither the optimizer nor weight decay ever sees it."""

    def __init__(self, num_features: int, momentum: float = BATCHNORM_MOMENTUM, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        weight = self.weight.detach().clone()  # ones (PyTorch's init)
        del self.weight
        self.register_buffer("weight", weight)


def airbench_conv_(conv: nn.Conv2d) -> nn.Conv2d:
    """airbench's Conv.reset_parameters (lines 183–188): PyTorch's default init, then the first in_channels
    filters set to the identity (torch.nn.init.dirac_), so each group starts close to passing its input on."""
    with torch.no_grad():
        torch.nn.init.dirac_(conv.weight[:conv.weight.size(1)])
    return conv


class ConvGroup(nn.Module):
    """Lines 190–208: conv 3×3 'same' → max-pool 2 → BatchNorm → GELU → conv 3×3 'same' → BatchNorm → GELU."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1 = airbench_conv_(nn.Conv2d(channels_in, channels_out, 3, padding="same", bias=False))
        self.norm1 = BatchNorm(channels_out)
        self.conv2 = airbench_conv_(nn.Conv2d(channels_out, channels_out, 3, padding="same", bias=False))
        self.norm2 = BatchNorm(channels_out)

    def forward(self, x):
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class Airbench94Net(nn.Module):
    """make_net (lines 214–236): whitening conv (3 → 24 channels, 2×2, no padding, bias) → GELU → 3 ConvGroups
    of widths 64, 256, 256 → max-pool 3 → linear 256 → 10 without bias → × 1/9."""

    trains_seeds_alone = True  # BatchNorm keeps running statistics per seed, updated in place

    def __init__(self, output_size: int = 10):
        super().__init__()
        whiten_width = 2 * 3 * WHITEN_KERNEL ** 2  # line 218: eigenvectors and their negatives
        # the whitening weight is computed from the data and never trained (line 230): a buffer, filled by
        # initialize_from_training_data; the bias starts at zero (Conv.reset_parameters, line 186)
        self.register_buffer("whiten_weight", torch.zeros(whiten_width, 3, WHITEN_KERNEL, WHITEN_KERNEL))
        self.whiten_bias = nn.Parameter(torch.zeros(whiten_width))
        self.block1 = ConvGroup(whiten_width, WIDTHS[0])
        self.block2 = ConvGroup(WIDTHS[0], WIDTHS[1])
        self.block3 = ConvGroup(WIDTHS[1], WIDTHS[2])
        self.head = nn.Linear(WIDTHS[2], output_size, bias=False)

    def forward(self, x):
        x = F.gelu(F.conv2d(x.reshape(x.shape[0], 3, 32, 32), self.whiten_weight, self.whiten_bias))
        x = self.block3(self.block2(self.block1(x)))
        return self.head(F.max_pool2d(x, 3).flatten(1)) * SCALING_FACTOR

    @torch.no_grad()
    def initialize_from_training_data(self, x_train: torch.Tensor) -> None:
        """Set the whitening weight from the first WHITEN_IMAGES training images (already normalised), as
        init_whitening_conv does (lines 242–257): the uncentred covariance of every 2×2 patch (stride 1), its
        eigenvectors in descending order of eigenvalue, each divided by √(eigenvalue + 5e-4), and their negatives.
        Deterministic: every seed gets the same weight from the same images."""
        images = x_train[:WHITEN_IMAGES].reshape(-1, 3, 32, 32).float()
        self.whiten_weight.copy_(whitening_weight(images, WHITEN_KERNEL, WHITEN_EPS).to(self.whiten_weight))


def whitening_weight(images: torch.Tensor, kernel: int, eps: float) -> torch.Tensor:
    """(2·C·k², C, k, k): the scaled eigenvectors of the k×k patch covariance of images (N, C, H, W), then their negatives."""
    channels = images.shape[1]
    patches = images.unfold(2, kernel, 1).unfold(3, kernel, 1).transpose(1, 3).reshape(-1, channels, kernel, kernel)
    flat = patches.reshape(len(patches), -1)
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance, UPLO="U")  # ascending
    eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
    eigenvectors = eigenvectors.T.reshape(-1, channels, kernel, kernel).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    return torch.cat((scaled, -scaled))
