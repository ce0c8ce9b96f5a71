"""The published model definitions, and the initialisations their code used.

    model = build_model(cfg.model)                      # PyTorch default init from the global seed
    initialize_like_sklearn(model, np.random.RandomState(0))  # scikit-learn MLP init, when asked

Each class cites the source it transcribes; the architecture is the paper's, the code is ours.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from replicate.errors import ConfigError

# the model names a config may use (model.name); a new model: its name here and its branch in build_model
MODELS = ("logistic", "mlp", "mlp2", "residual_mlp", "cnn1d", "cnn1d_pool", "cnn2d", "gru",  # mlp and logistic also map (…, T, d) → (…, T, classes)
          "caffe_lenet", "caffe_cifar10_quick", "keras_mnist_mlp", "cifar_resnet",  # these four: replicate.paper_models
          "cifar10_fast_resnet9",  # replicate.cifar10_fast, through replicate.paper_models
          "theano_logreg",  # replicate.theano_tutorials, through replicate.paper_models
          "cudaconvnet_18pct",  # replicate.cuda_convnet, through replicate.paper_models
          "airbench94",  # replicate.airbench, through replicate.paper_models
          "zaremba_lstm")  # replicate.zaremba_lstm, through replicate.paper_models
CONV2D_MODELS = ("cnn2d", "caffe_lenet", "caffe_cifar10_quick", "cifar_resnet", "cifar10_fast_resnet9", "cudaconvnet_18pct",
                 "airbench94")  # 4-D convolution weights: train.channels_last applies
INITS = ("pytorch", "sklearn_glorot")  # model.init: PyTorch's default, or initialize_like_sklearn


class Logistic(nn.Module):
    """Multinomial logistic regression (greydanus/mnist1d notebooks/models.py `LinearBase`)."""

    linear_and_elementwise_only = True  # forward takes a leading seed axis once its Linear layers carry one

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        self.linear = nn.Linear(input_size, output_size)

    def forward(self, x):
        return self.linear(x)


class ResidualMLP(nn.Module):
    """MNIST-1D `MLPBase`: h = relu(W1 x); h = h + relu(W2 h); out = W3 h.

    Note the residual connection around the second layer. The notebook constructs it as
    `MLPBase(input_size, output_size)`, so hidden_size is the class default 100, not the
    256 of `get_model_args`.
    """

    linear_and_elementwise_only = True  # forward takes a leading seed axis once its Linear layers carry one

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 100):
        super().__init__()
        self.linear1 = nn.Linear(input_size, hidden_size)
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.linear3 = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        h = self.linear1(x).relu_()  # in place: the linear output is needed by nothing else
        h = h + self.linear2(h).relu_()
        return self.linear3(h)


class TwoHiddenLayerMLP(nn.Module):
    """MNIST-1D double-descent `get_model(n_hidden)` (greydanus/mnist1d notebooks/deep-double-descent.ipynb,
    cell 5): Linear(40, n) → ReLU → Linear(n, n) → ReLU → Linear(n, 10). `ResidualMLP` without the residual."""

    linear_and_elementwise_only = True  # forward takes a leading seed axis once its Linear layers carry one

    def __init__(self, input_size: int, output_size: int, hidden_size: int):
        super().__init__()
        self.linear1 = nn.Linear(input_size, hidden_size)
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.linear3 = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        return self.linear3(self.linear2(self.linear1(x).relu()).relu())


class MLP(nn.Module):
    """One hidden ReLU layer (scikit-learn MLPClassifier with hidden_layer_sizes=(hidden_size,))."""

    linear_and_elementwise_only = True  # forward takes a leading seed axis once its Linear layers carry one

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 100):
        super().__init__()
        self.hidden = nn.Linear(input_size, hidden_size)
        self.output = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        return self.output(self.hidden(x).relu_())


class Conv1dNet(nn.Module):
    """MNIST-1D `ConvBase`: three strided Conv1d+ReLU layers (25 channels), then a linear layer on 125 features."""

    def __init__(self, input_size: int, output_size: int, channels: int = 25):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        length = input_size
        for kernel in (5, 3, 3):
            length = (length + 2 - kernel) // 2 + 1
        self.linear = nn.Linear(channels * length, output_size)

    def forward(self, x):
        h = x.reshape(-1, 1, x.shape[-1])
        h = self.conv3(self.conv2(self.conv1(h).relu()).relu()).relu()
        return self.linear(h.flatten(1))


class PoolingConv1dNet(nn.Module):
    """MNIST-1D pooling benchmark `ConvPooling` (greydanus/mnist1d notebooks/benchmark-pooling.ipynb,
    cell 7): two Conv1d(kernel 3, padding 1)+ReLU layers of 20 channels, each followed by `pool`
    (none, or max/avg/L2 pooling over windows of 2), then a linear layer on the flattened features.

    The notebook's variants: no_pool (stride 1, no pooling: 20 × 40 = 800 features), stride_2 (stride 2,
    no pooling: 200) and max_pool / avg_pool / l2_pool (stride 1, pooling: 200). Layers are built in the
    notebook's order, so `torch.manual_seed(0)` before construction gives the notebook's initialisation.
    """

    POOLS = ("none", "max", "avg", "l2")

    def __init__(self, input_size: int, output_size: int, channels: int = 20, stride: int = 1, pool: str = "max"):
        super().__init__()
        if pool not in self.POOLS:
            raise ConfigError(f"unknown model.pool {pool!r}; allowed: {', '.join(self.POOLS)}")
        self.pool = pool
        self.conv1 = nn.Conv1d(1, channels, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=stride, padding=1)
        length = input_size
        for _ in range(2):
            length = (length - 1) // stride + 1  # kernel 3, padding 1
            length = length if pool == "none" else length // 2
        self.linear = nn.Linear(channels * length, output_size)

    def _pool(self, h):
        if self.pool == "max":
            return F.max_pool1d(h, 2)
        if self.pool == "avg":
            return F.avg_pool1d(h, 2)
        if self.pool == "l2":
            return F.lp_pool1d(h, norm_type=2, kernel_size=2)
        return h

    def forward(self, x):
        h = x.reshape(-1, 1, x.shape[-1])
        h = self._pool(self.conv1(h).relu())
        h = self._pool(self.conv2(h).relu())
        return self.linear(h.flatten(1))


class Conv2dNet(nn.Module):
    """Two 3×3 Conv2d+ReLU layers on square single-channel images given as flat vectors (input_size =
    side²), then a linear layer. No catalog entry uses it yet: it is the catalog's 2-D convolution, on
    which the image-model switches (train.channels_last) are tested with the 8×8 scikit-learn digits."""

    def __init__(self, input_size: int, output_size: int, channels: int = 8):
        super().__init__()
        self.side = int(round(input_size ** 0.5))
        if self.side * self.side != input_size:
            raise ConfigError(f"model cnn2d needs square images: input_size={input_size} is not a square")
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.linear = nn.Linear(channels * self.side * self.side, output_size)

    def forward(self, x):
        h = x.reshape(-1, 1, self.side, self.side)
        h = self.conv2(self.conv1(h).relu()).relu()
        return self.linear(h.flatten(1))


class BidirectionalGRU(nn.Module):
    """MNIST-1D `GRUBase`: a GRU over the 40 time steps (1 feature each), all outputs flattened into a linear layer.

    The original draws its zero initial state as `0*torch.randn(...)`, which consumes random numbers
    but is exactly zero; we pass no initial state (PyTorch's default is zeros), the same values.
    """

    gru_linear_and_elementwise_only = True  # forward takes a leading seed axis once its GRU and Linear layers carry one

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 6, bidirectional: bool = True):
        super().__init__()
        self.gru = nn.GRU(input_size=1, hidden_size=hidden_size, batch_first=True, bidirectional=bidirectional)
        directions = 2 if bidirectional else 1
        self.linear = nn.Linear(directions * hidden_size * input_size, output_size)

    def forward(self, x):
        output, _ = self.gru(x.unsqueeze(-1))
        return self.linear(output.flatten(-2))  # (…, batch, steps, features) → (…, batch, steps·features)


def is_recurrent(model_cfg) -> bool:
    """Whether the model steps through time (its step is a chain of small ops: replicate.cpu.intra_op_threads)."""
    return model_cfg.name == "gru"


def build_model(model_cfg) -> nn.Module:
    name = model_cfg.name
    size = dict(input_size=model_cfg.input_size, output_size=model_cfg.output_size)
    if name == "logistic":
        return Logistic(**size)
    if name == "residual_mlp":
        return ResidualMLP(**size, hidden_size=model_cfg.hidden_size or 100)
    if name == "mlp":
        return MLP(**size, hidden_size=model_cfg.hidden_size or 100)
    if name == "mlp2":
        if not model_cfg.hidden_size:
            raise ConfigError("model mlp2 needs model.hidden_size (the width of both hidden layers), e.g. model.hidden_size=300")
        return TwoHiddenLayerMLP(**size, hidden_size=model_cfg.hidden_size)
    if name == "cnn1d":
        return Conv1dNet(**size, channels=model_cfg.channels or 25)
    if name == "cnn1d_pool":
        return PoolingConv1dNet(**size, channels=model_cfg.channels or 20, stride=model_cfg.stride, pool=model_cfg.pool)
    if name == "cnn2d":
        return Conv2dNet(**size, channels=model_cfg.channels or 8)
    if name == "gru":
        return BidirectionalGRU(**size, hidden_size=model_cfg.hidden_size or 6, bidirectional=model_cfg.bidirectional)
    from replicate.paper_models import PAPER_MODELS

    if name in PAPER_MODELS:
        return PAPER_MODELS[name](model_cfg)
    raise ConfigError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")


def initialize_like_sklearn(model: nn.Module, random_state: np.random.RandomState) -> None:
    """scikit-learn MLP initialisation (sklearn/neural_network/_multilayer_perceptron.py `_init_coef`).

    For each layer in order: bound = sqrt(6 / (fan_in + fan_out)) for ReLU, then
    coef = U(-bound, bound) of shape (fan_in, fan_out) and intercept = U(-bound, bound) of shape
    (fan_out,), both drawn from the model's single RandomState (the same stream later shuffles the data).
    """
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if len(linears) != sum(1 for _ in model.parameters()) // 2:
        raise ConfigError("model.init=sklearn_glorot needs a model made only of Linear layers (mlp, logistic)")
    with torch.no_grad():
        for layer in linears:
            fan_out, fan_in = layer.weight.shape
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            coef = random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = random_state.uniform(-bound, bound, fan_out)
            layer.weight.copy_(torch.from_numpy(coef.T.copy()))
            layer.bias.copy_(torch.from_numpy(intercept))


def check_model_fits(cfg, data, n_seeds: int) -> None:
    """The model's sizes fit the data, and its parameters fit in memory: checked on PyTorch's meta device,
    which builds the model and runs a forward pass with shapes only (no memory, no random numbers)."""
    from replicate.language_model import is_language_model

    with torch.device("meta"):
        model = build_model(cfg.model)
    takes_word_ids = is_language_model(model)
    if not data.x_train.is_floating_point() and not takes_word_ids:  # ptb: word ids, for a model with an embedding
        raise ConfigError(f"dataset {data.name} holds word ids, which model {cfg.model.name} cannot take (it reads "
                          "real-valued features); use model.name=zaremba_lstm")
    if takes_word_ids and (data.x_train.is_floating_point() or data.x_train.dim() != 2):
        raise ConfigError(f"model {cfg.model.name} reads windows of word ids; dataset {data.name} with these settings "
                          "has none: use data.name=ptb with data.seq_len and data.rows")
    if takes_word_ids and cfg.model.input_size != data.num_classes:
        raise ConfigError(f"model.input_size={cfg.model.input_size} but the vocabulary has {data.num_classes} words; "
                          f"set model.input_size={data.num_classes}")
    if cfg.model.output_size != data.num_classes:
        raise ConfigError(f"model.output_size={cfg.model.output_size} but dataset {data.name} has "
                          f"{data.num_classes} classes; set model.output_size={data.num_classes}")
    with torch.device("meta"):
        example = torch.empty(2, *data.x_train.shape[1:], dtype=data.x_train.dtype)
        try:
            (model if takes_word_ids else model.to(data.x_train.dtype))(example)
        except (RuntimeError, ValueError) as error:
            raise ConfigError(f"model {cfg.model.name} with model.input_size={cfg.model.input_size} does not fit "
                              f"the data's examples of shape {list(data.x_train.shape[1:])} "
                              f"({str(error).splitlines()[0][:100]}); set model.input_size to match") from None
    # parameters, gradients and up to two optimizer buffers per seed: a lower bound on what training needs
    numbers = data.x_train if data.x_train.is_floating_point() else next(model.parameters())  # word ids: the weights' size
    needed = 4 * n_seeds * sum(p.numel() for p in model.parameters()) * numbers.element_size()
    device = data.x_train.device
    try:
        available = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
                     else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return
    if needed > available:
        raise ConfigError(f"the model needs at least {needed / 2**30:.1f} GiB for {n_seeds} seed(s) (parameters, "
                          f"gradients, optimizer state); the {device.type} has {available / 2**30:.1f} GiB; reduce "
                          "model.hidden_size or model.channels, or seeds")
