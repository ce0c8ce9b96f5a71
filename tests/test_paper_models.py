"""The classic recipes' models and the optimizer pieces they need, checked against their sources' own rules."""
import math

import pytest
import torch
import torch.nn.functional as F

from replicate.optim import OptimizerSettings, build_optimizer, parameter_groups
from replicate.paper_models import CaffeCifar10Quick, CaffeLeNet, CifarResNet, KerasMnistMLP


@pytest.mark.parametrize("model, shape, parameters", [
    (CaffeLeNet, (2, 1, 28, 28), 431_080),  # Caffe's LeNet: 20·25+20 + 50·500+50 + 800·500+500 + 500·10+10
    (CaffeCifar10Quick, (2, 3, 32, 32), 145_578),
    (KerasMnistMLP, (2, 784), 669_706),  # the parameter count Keras's model.summary() prints for mnist_mlp.py
    (CifarResNet, (2, 3, 32, 32), 269_722),  # He et al. 2016 Table 6: ResNet-20 "0.27M"
])
def test_models_have_their_sources_sizes(model, shape, parameters):
    torch.manual_seed(0)
    net = model()
    assert net(torch.randn(shape)).shape == (2, 10)
    assert net(torch.randn(shape).flatten(1)).shape == (2, 10)  # flat examples are reshaped to images
    assert sum(p.numel() for p in net.parameters()) == parameters


def test_caffe_fillers():
    torch.manual_seed(0)
    lenet = CaffeLeNet()
    bound = math.sqrt(3 / 800)  # xavier FAN_IN for ip1: fan_in = 50·4·4
    assert 0.95 * bound < lenet.ip1.weight.abs().max() <= bound and not lenet.ip1.bias.any()
    quick = CaffeCifar10Quick()
    assert abs(quick.conv1.weight.std().item() - 1e-4) < 1e-5 and abs(quick.ip1.weight.std().item() - 0.1) < 0.01


def test_caffe_average_pooling_divides_by_the_clipped_window():
    """BVLC/caffe src/caffe/layers/pooling_layer.cpp lines 212–217: hend = min(hstart + k, H + pad) gives the divisor
    before clipping to the image; with pad 0 that is the window inside the image, as PyTorch's ceil_mode pooling."""
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    size = math.ceil((8 - 3) / 2) + 1
    caffe = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for j in range(size):
            window = x[0, 0, 2 * i:min(2 * i + 3, 8), 2 * j:min(2 * j + 3, 8)]
            caffe[i, j] = window.sum() / window.numel()
    assert torch.allclose(F.avg_pool2d(x, 3, 2, ceil_mode=True)[0, 0], caffe, rtol=0, atol=1e-15)


def test_dropout_and_batchnorm_act_only_in_training():
    torch.manual_seed(0)
    for net, shape in ((KerasMnistMLP(), (8, 784)), (CifarResNet(), (8, 3, 32, 32))):
        x = torch.randn(shape)
        net.eval()
        assert torch.equal(net(x), net(x))
        net.train()
        before = net(x)
        assert not torch.equal(before, net.eval()(x))


def test_parameter_groups():
    names = ["conv.weight", "conv.bias", "ip.weight", "ip.bias"]
    assert parameter_groups(names, names, 0.0) == [(names, 0.0, 1.0)]
    assert parameter_groups(names, names, 5e-4, 2.0) == [(["conv.weight", "ip.weight"], 5e-4, 1.0),
                                                         (["conv.bias", "ip.bias"], 5e-4, 2.0)]
    weights = ["conv.weight", "ip.weight"]
    assert parameter_groups(names, weights, 5e-4) == [(weights, 5e-4, 1.0), (["conv.bias", "ip.bias"], 0.0, 1.0)]
    assert parameter_groups(names, [], 5e-4) == [(names, 0.0, 1.0)]  # nothing decayed: no decay on anything


def test_bias_lr_mult_steps_as_caffe():
    """Caffe's SGD with lr_mult 2 on a bias (sgd_solver.cpp: diff += decay·w; history = local_rate·diff +
    momentum·history, local_rate = rate·lr_mult; w -= history), written out, against the optimizer's groups."""
    torch.manual_seed(0)
    weight, bias = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    params = [weight.clone().requires_grad_(), bias.clone().requires_grad_()]
    optimizer = build_optimizer([{"params": [params[0]], "weight_decay": 5e-4, "lr": 0.01},
                                 {"params": [params[1]], "weight_decay": 5e-4, "lr": 0.02}],
                                OptimizerSettings("sgd", lr=0.01, momentum=0.9, momentum_form="lr_inside"))
    history = [torch.zeros(5, dtype=torch.float64) for _ in range(2)]
    expected = [weight.clone(), bias.clone()]
    for step in range(3):
        grads = [torch.randn(5, dtype=torch.float64) for _ in range(2)]
        rate = 0.01 * (1 + 1e-4 * step) ** -0.75  # lr_policy "inv"
        for group, multiplier in zip(optimizer.param_groups, (1, 2)):
            group["lr"] = rate * multiplier
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
        for k, multiplier in enumerate((1, 2)):
            diff = grads[k] + 5e-4 * expected[k]
            history[k] = rate * multiplier * diff + 0.9 * history[k]
            expected[k] = expected[k] - history[k]
    for p, e in zip(params, expected):
        assert torch.allclose(p.detach(), e, rtol=0, atol=1e-15)


def test_cycle_order_reads_round_and_round_like_caffes_data_layer():
    from replicate.data import BatchOrder

    order = BatchOrder(10, batch_size=4, order="cycle", seeds=[0, 1])
    assert order.indices(0).tolist() == [[0, 1, 2, 3]] * 2
    assert order.indices(2).tolist() == [[8, 9, 0, 1]] * 2  # runs on across the end of the epoch, always 4 examples
    assert order.indices(5).tolist() == [[0, 1, 2, 3]] * 2  # 20 examples later the database is back at its start
