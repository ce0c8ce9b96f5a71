"""cuda-convnet's layers-18pct against its source: the rnorm formula by hand, the net's sizes and initialisation, and
its update (per-layer epsW/epsB/wc, lr inside momentum) against a hand-written cuda-convnet update loop."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replicate.config import compose
from replicate.cuda_convnet import CudaConvnet18pct, response_norm
from replicate.hyperparameters import make_plan
from replicate.seed_stack import SeedStack
from replicate.train import make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def response_norm_by_hand(x: torch.Tensor, size: int, scale: float, power: float) -> torch.Tensor:
    """src/cudaconv2/conv_util.cu kCNorm_manyfilter (lines 842–889), written out: the window starts at p − size/2 (C division),
    is clipped to the image, and 1 + addScale·Σx² with addScale = scale / size² (layer.py line 1043)."""
    out = torch.empty_like(x)
    n, c, height, width = x.shape
    for i in range(n):
        for f in range(c):
            for y in range(height):
                for px in range(width):
                    y0, x0 = y - size // 2, px - size // 2
                    window = x[i, f, max(0, y0):min(height, y0 + size), max(0, x0):min(width, x0 + size)]
                    denom = 1 + scale / size**2 * (window**2).sum()
                    out[i, f, y, px] = x[i, f, y, px] * denom ** -power
    return out


@pytest.mark.parametrize("size", [3, 4])  # layers-18pct uses 3; an even size puts the window's extra pixel before
def test_response_norm_is_cuda_convnets_rnorm(size):
    torch.manual_seed(0)
    x = 40 * torch.randn(2, 3, 6, 5, dtype=torch.float64)  # activations of mean-subtracted 0..255 images
    expected = response_norm_by_hand(x, size, 0.00005, 0.75)
    assert torch.allclose(response_norm(x, size, 0.00005, 0.75), expected, rtol=1e-14, atol=0)
    assert not torch.allclose(expected, x, rtol=1e-3)  # the normalisation is not negligible at this scale
    # torch's LocalResponseNorm normalises across maps, not within one: a different layer
    assert not torch.allclose(torch.nn.LocalResponseNorm(size, 0.00005, 0.75, 1.0)(x), expected, rtol=1e-6)


def test_the_net_has_the_cfg_sizes_and_initialisation():
    torch.manual_seed(0)
    net = CudaConvnet18pct()
    assert net(torch.randn(2, 3072)).shape == (2, 10)
    # conv 5·5·3·32 + 32, 5·5·32·32 + 32, 5·5·32·64 + 64; fc10 over 64 maps of 4 × 4 pixels: 1024·10 + 10
    assert sum(p.numel() for p in net.parameters()) == 2432 + 25632 + 51264 + 10250
    for layer, init_w in ((net.conv1, 1e-4), (net.conv2, 0.01), (net.conv3, 0.01), (net.fc10, 0.01)):
        assert abs(layer.weight.std().item() / init_w - 1) < 0.1 and not layer.bias.any()


# layer-params-18pct.cfg lines 6–32: every layer epsW 0.001, epsB 0.002, momW = momB = 0.9; wc 0.004, fc10 wc 1;
# biases decay with wc 0 (src/layer.cu line 310: `new Weights(hBiases, hBiasesInc, epsB, 0, momB, true)`)
EPS_W, EPS_B, MOMENTUM = 0.001, 0.002, 0.9
WC = {"conv1.weight": 0.004, "conv2.weight": 0.004, "conv3.weight": 0.004, "fc10.weight": 1.0}


def test_the_entry_steps_as_cuda_convnets_update_loop():
    """include/weights.cuh Weights::update (lines 150–162) after bpropWeights's `eps / numCases` scale (src/layer.cu
    lines 398–403, 499): inc = mom·inc + eps/numCases·Σ ∂log p/∂w − wc·eps·w; w += inc, with every eps ÷ 10 at a
    schedule milestone, written out against the entry's optimizer as the trainer builds it (param_groups included)."""
    cfg = compose(["paper=cudaconvnet_cifar10_18pct", "train.dtype=float64", "schedule.milestones=[3]"])
    plan = make_plan(cfg, n_train=50000)
    stack = SeedStack(cfg.model, [0], dtype=torch.float64, device=torch.device("cpu"),
                      numpy_streams=[np.random.RandomState(0)], vectorize=False)
    optimizer = make_optimizer(stack, stack.decayed(plan.update.decay_biases), plan.update, "fp32")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    weights = {name: leaf.detach().clone() for name, leaf in stack.leaves.items()}
    start = dict(weights)
    increments = {name: torch.zeros_like(value) for name, value in weights.items()}
    generator = torch.Generator().manual_seed(1)
    for step in range(6):
        x = 60 * torch.randn(8, 3, 32, 32, dtype=torch.float64, generator=generator)
        y = torch.randint(0, 10, (8,), generator=generator)
        factor = 0.1 if step >= 3 else 1.0
        # cuda-convnet: the gradient of Σ log p over the minibatch (the logreg cost's delta, ascent), per weight matrix
        params = {name: value.clone().requires_grad_() for name, value in weights.items()}
        log_probability = -F.cross_entropy(torch.func.functional_call(stack.module, params, (x,)), y, reduction="sum")
        ascent = dict(zip(params, torch.autograd.grad(log_probability, list(params.values()))))
        for name in weights:
            eps = factor * (EPS_B if name.endswith("bias") else EPS_W)
            increments[name] = MOMENTUM * increments[name] + eps / 8 * ascent[name] - WC.get(name, 0.0) * eps * weights[name]
            weights[name] = weights[name] + increments[name]
        # the trainer's step: the mean loss (the entry's convention) and each group's lr × the schedule's factor
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * factor
        F.cross_entropy(stack(x.unsqueeze(0))[0], y).backward()
        optimizer.step()
        stack.zero_grad()
    for name, value in weights.items():
        assert torch.allclose(stack.leaves[name].detach(), value, rtol=1e-10, atol=1e-15), name
        assert not torch.equal(value, start[name]), name  # every parameter moved: the comparison is not vacuous


def test_convert_shows_native_and_executed_hyperparameters_with_the_groups():
    from replicate.convert import convert_request

    result = convert_request({"paper": "cudaconvnet_cifar10_18pct", "to": "mean"})
    fields = {rule["field"]: rule for rule in result["rules"]}
    assert {"lr", "weight_decay", "momentum", "weight_decay[fc10.weight]", "lr[fc10.weight]"} <= set(fields)
    assert fields["weight_decay[fc10.weight]"]["source_value"] == 1.0 == fields["weight_decay[fc10.weight]"]["target_value"]
    assert result["hparams"] == {"lr": 0.001, "momentum": 0.9, "nesterov": False, "weight_decay": 0.004}
    # cuda-convnet keeps lr inside the momentum increment; PyTorch's form agrees only at constant lr, and this schedule
    # divides lr twice: the conversion says so instead of pretending (the trainer runs lr_inside natively)
    assert not result["exact"] and "lr_inside" in fields["lr"]["reason"]


def test_file_batches_walk_each_data_file_in_order_ending_in_its_own_short_batch():
    from replicate.data import BatchOrder
    from replicate.errors import ConfigError
    from replicate.hyperparameters import has_constant_batch

    order = BatchOrder(25, batch_size=4, order="file_batches", seeds=[0, 1], file_batch_size=10)
    assert order.steps_per_epoch == 8  # files of 10, 10 and 5 examples: 3 + 3 + 2 batches
    walked = [order.indices(step)[1].tolist() for step in range(9)]
    assert walked[:8] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11, 12, 13], [14, 15, 16, 17], [18, 19],
                          [20, 21, 22, 23], [24]]
    assert walked[8] == walked[0] and torch.equal(order.indices(5)[0], order.indices(5)[1])  # each epoch, each seed alike
    cifar = BatchOrder(50000, batch_size=128, order="file_batches", seeds=[0], file_batch_size=10000)
    assert cifar.steps_per_epoch == 395 and cifar.indices(78)[0].tolist() == list(range(9984, 10000))
    with pytest.raises(ConfigError, match="needs data.file_batch_size"):
        BatchOrder(25, batch_size=4, order="file_batches", seeds=[0])
    entry = compose(["paper=cudaconvnet_cifar10_18pct"])
    assert not has_constant_batch(entry, 50000)  # 16-image minibatches: a batch-size conversion is not exact
    assert has_constant_batch(compose(["paper=cudaconvnet_cifar10_18pct", "train.batch_size=100"]), 50000)
