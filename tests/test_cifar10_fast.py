"""cifar10_fast_resnet9: Page's ResNet-9 as his graph computes it, and the trainer's update as his loop ran it.

The oracles are transcriptions of davidcpage/cifar10-fast at 5ca5d10 (the commit of the README's claim: demo.ipynb's
train loop with torch.optim.SGD) and of torch_backend.py's later `nesterov_update` (f79e8b8, lines 242–245)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dataset_files import write_cifar10
from replicate.cifar10_fast import ResNet9
from replicate.config import compose
from replicate.data import BatchOrder, load_dataset
from replicate.hyperparameters import make_plan
from replicate.models import build_model
from replicate.train import train_seeds

PAPER = "paper=cifar10_fast_resnet9"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root, per_batch=4, n_test=4)  # 20 training images: batches of 8, 8 and a short 4
    return root


def test_resnet9_has_the_parameters_of_pages_net():
    """Hand count of net(): 3×3 convolutions 3→64, 64→128, 2×128→128, 128→256, 256→512, 2×512→512 (no biases),
    BatchNorm weight and bias on 64 + 3·128 + 256 + 3·512 channels, linear 512→10 without bias."""
    convolutions = 9 * (3 * 64 + 64 * 128 + 2 * 128 * 128 + 128 * 256 + 256 * 512 + 2 * 512 * 512)
    batch_norm = 2 * (64 + 3 * 128 + 256 + 3 * 512)
    model = ResNet9()
    assert sum(p.numel() for p in model.parameters()) == convolutions + batch_norm + 512 * 10 == 6_573_120
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # utils.py batch_norm(): PyTorch's defaults, weight filled with 1
            assert (module.eps, module.momentum) == (1e-5, 0.1)
            assert torch.equal(module.weight, torch.ones_like(module.weight)) and not module.bias.any()


def pages_graph(model: ResNet9) -> list:
    """demo.ipynb's net() as build_graph flattens it: (name, function, inputs), each node reading the previous one
    unless its inputs are named (the residual's 'add'), in the dict's insertion order."""
    def conv_bn(block):
        conv, bn, _ = block
        return [("conv", conv, None), ("bn", bn, None), ("relu", F.relu, None)]

    def residual(block):
        return [("in", lambda x: x, None), *[(f"res1/{n}", f, i) for n, f, i in conv_bn(block.res1)],
                *[(f"res2/{n}", f, i) for n, f, i in conv_bn(block.res2)], ("add", torch.add, ("in", "res2/relu"))]

    layer1, layer2, layer3 = model.layer1, model.layer2, model.layer3
    nodes = [(f"prep/{n}", f, i) for n, f, i in conv_bn(model.prep)]
    for name, (block, *rest) in (("layer1", layer1), ("layer2", layer2), ("layer3", layer3)):
        nodes += [(f"{name}/{n}", f, i) for n, f, i in conv_bn(block)] + [(f"{name}/pool", lambda x: F.max_pool2d(x, 2), None)]
        if len(rest) == 2:  # res_layers=('layer1', 'layer3'): n[layer]['residual'] comes after the layer's pool
            nodes += [(f"{name}/residual/{n}", f, i and tuple(f"{name}/residual/{x}" for x in i)) for n, f, i in residual(rest[1])]
    return nodes + [("pool", lambda x: F.max_pool2d(x, 4), None), ("flatten", lambda x: x.flatten(1), None),
                    ("linear", model.linear, None), ("logits", lambda x: x * 0.125, None)]


def test_resnet9_computes_pages_graph():
    """The module forward equals a walk of Page's node list (a pool before the ReLU, a residual before the pool, a
    missing × 0.125 would each change the logits), in float64 and in training mode."""
    torch.manual_seed(0)
    model = ResNet9().double()
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    outputs, previous = {}, x
    for name, function, inputs in pages_graph(model):
        previous = outputs[name] = function(*(outputs[i] for i in inputs)) if inputs else function(previous)
    torch.manual_seed(0)
    again = ResNet9().double()  # a fresh copy: the walk above updated the first one's BatchNorm running statistics
    assert torch.allclose(again(x), previous, rtol=0, atol=1e-12)


def nesterov_update(w, dw, v, lr, weight_decay, momentum):
    """torch_backend.py lines 242–245 at f79e8b8, out of place: dw = −lr·(g + λw); v = μv + dw; w += dw + μv."""
    dw = -lr * (dw + weight_decay * w)
    v.mul_(momentum).add_(dw)
    w.add_(dw + momentum * v)


@pytest.mark.parametrize("model, momentum_form", [
    ("caffe_cifar10_quick", "lr_outside"), ("caffe_cifar10_quick", "lr_inside"),  # the update alone, on a small net
    pytest.param("cifar10_fast_resnet9", "lr_outside", marks=pytest.mark.slow)])  # ≈ 90 s: float64 ResNet-9 on the CPU
def test_the_trainer_steps_as_pages_loop(model, momentum_form, data_root):
    """Three float64 steps of 8, 8 and a short 4 images, no augmentation, the lr changing every step (0, then the
    warm-up and decay of a 3-step run): the trainer's parameters equal a loop written from the source. lr_outside is
    demo.ipynb at 5ca5d10 (torch.optim.SGD, lr set per step); lr_inside is the later dawn.py's nesterov_update. Each
    form fails against the other loop, as would a mean loss, a lost weight decay or the lr of the wrong step. The
    update does not depend on the net, so the default run checks it on a small one (ResNet-9 itself under -m slow)."""
    overrides = [PAPER, f"model.name={model}", f"data.root={data_root}", "train.batch_size=8", "train.steps=3",
                 "train.dtype=float64", "seeds=1", "augment.crop_padding=0", "augment.flip=false", "augment.cutout=0",
                 "logger=none", f"conventions.momentum_form={momentum_form}"]
    cfg = compose(overrides)
    data = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    trained = train_seeds(cfg, data, plan, [0], vectorize=False)[0].parameters

    torch.manual_seed(0)  # as SeedStack draws seed 0's init
    network = build_model(cfg.model).double()
    parameters = list(network.parameters())
    lr, weight_decay, momentum = cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.momentum
    torch_sgd = torch.optim.SGD(parameters, lr=0.0, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    velocities = [torch.zeros_like(p) for p in parameters]
    order = BatchOrder(len(data.y_train), batch_size=8, order="shuffle", seeds=[0])
    for step in range(3):
        rows = order.indices(step)[0]
        assert step < 2 or len(rows) == 4  # the short last batch, as demo.ipynb's Batches (no drop_last) ends an epoch
        network.zero_grad()
        F.cross_entropy(network(data.x_train[rows]), data.y_train[rows], reduction="sum").backward()  # size_average=False
        step_lr = lr * np.interp(step / 3, [0, 5 / 24, 1], [0, 1, 0])  # PiecewiseLinear([0, 5, 24], [0, 0.4, 0]) / 512
        if momentum_form == "lr_outside":
            torch_sgd.param_groups[0]["lr"] = step_lr  # demo.ipynb train_epoch: optimizer.param_groups[0]['lr'] = lr
            torch_sgd.step()
        else:
            with torch.no_grad():
                for w, v in zip(parameters, velocities):
                    nesterov_update(w, w.grad, v, step_lr, weight_decay, momentum)
    for name, value in network.named_parameters():
        assert torch.allclose(trained[name].reshape(value.shape), value, rtol=1e-10, atol=1e-13), name


def test_the_entry_run_in_the_mean_convention_equals_the_native_sum_run(data_root):
    """train.convention=mean executes lr × B and λ / B on the batch mean, the lr changing every step: with every batch
    full (20 images, batches of 4) the parameters after 5 float64 steps equal the native summed run's. (The entry's
    own epoch ends in a short batch, where no per-batch-mean restatement is exact: replicate.convert says so.)"""
    overrides = [PAPER, "model.name=caffe_cifar10_quick", f"data.root={data_root}", "train.batch_size=4", "train.steps=5",
                 "train.dtype=float64", "seeds=1", "logger=none"]
    runs = {}
    for convention in ("null", "mean"):
        cfg = compose([*overrides, f"train.convention={convention}"])
        data = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
        plan = make_plan(cfg, n_train=len(data.y_train))
        runs[convention] = (plan, train_seeds(cfg, data, plan, [0], vectorize=False)[0].parameters)
    mean_plan, mean_parameters = runs["mean"]
    assert mean_plan.executed["lr"] == pytest.approx(0.4 / 512 * 4) and mean_plan.executed["weight_decay"] == pytest.approx(0.256 / 4)
    assert mean_plan.conversion.exact
    for name, value in runs["null"][1].items():
        assert torch.allclose(mean_parameters[name], value, rtol=1e-9, atol=1e-13), name


def test_a_piecewise_linear_schedule_needs_a_value_per_knot():
    """config_checks reads schedule["values"]: `schedule.values` on a DictConfig is the Mapping method, not the list."""
    from replicate.config import ConfigError
    from replicate.config_checks import check_config

    check_config(compose([PAPER]))
    with pytest.raises(ConfigError, match="equal length, got 3 and 2"):
        check_config(compose([PAPER, "schedule.values=[0,1]"]))
