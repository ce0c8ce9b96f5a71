"""On a GPU, the training computes what it computes on the CPU: every optimizer rule, batched seeds and
whole runs agree with the CPU in float64, and seeds batched in fp16 equal each seed alone. Skipped
without CUDA; scripts/gpu_check.sh runs them (REPLICATE_TEST_DEVICE=cpu runs them on the CPU, to check
that they compose). Tolerances, float64 (unit roundoff u = 1.1e-16): a GPU kernel may contract a·b + c
into one fused multiply-add and may sum a product in another order, so each elementwise op may differ
by about one rounding; over 20-50 steps of a few tens of ops that is ≲ 1e-13 relative, and 1e-10
leaves three orders of magnitude for the amplification of a short well-conditioned run."""
import os

import pytest
import torch

from replicate.config import compose
from replicate.data import load_dataset
from replicate.optim import OPTIMIZERS, OptimizerSettings, build_optimizer, native_forms
from replicate.hyperparameters import make_plan
from replicate.train import train_seeds

DEVICE = torch.device(os.environ.get("REPLICATE_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")
RELATIVE = 1e-10  # see the module docstring


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-300))


def every_rule():
    for name in OPTIMIZERS:
        forms = native_forms(name)
        for momentum_form in forms["momentum_form"]:
            for eps_placement in forms["eps_placement"]:
                for weight_decay_form in forms["weight_decay_form"]:
                    if name == "rmsprop" and (momentum_form == "lr_inside") != (eps_placement == "inside_sqrt"):
                        continue  # RMSprop's momentum form follows its eps placement (PyTorch's or TF1's kernel)
                    yield name, momentum_form, eps_placement, weight_decay_form


@pytest.mark.parametrize("rule", list(every_rule()), ids=lambda rule: "-".join(rule))
def test_every_optimizer_rule_on_the_device_equals_the_cpu_in_float64(rule):
    name, momentum_form, eps_placement, weight_decay_form = rule
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(32, 16, generator=generator, dtype=torch.float64), torch.randn(32, generator=generator, dtype=torch.float64)
    start = torch.randn(3, 16, generator=generator, dtype=torch.float64)  # three seeds' rows
    momentum = 0.9 if name in ("sgd", "rmsprop") else 0.0
    options = dict(lr=0.01, momentum=momentum, momentum_form=momentum_form, eps_placement=eps_placement,
                   weight_decay_form=weight_decay_form)
    final = {}
    for device in (torch.device("cpu"), DEVICE):
        weights = start.to(device).requires_grad_(True)
        optimizer = build_optimizer([{"params": [weights], "weight_decay": 1e-3}], OptimizerSettings(name, **options))
        for _ in range(20):  # least squares; the gradient is computed on the CPU for both devices
            host = weights.detach().cpu()
            weights.grad = (((host @ inputs.T - targets) @ inputs) / len(targets)).to(device)
            optimizer.step()
        final[device.type] = weights
    assert relative_difference(final[DEVICE.type], final["cpu"]) <= RELATIVE


def short_run(overrides, device, seeds, vectorize, dtype="float64"):
    cfg = compose([f"device={device.type}", f"train.dtype={dtype}", "logger=none", *overrides])
    data = load_dataset(cfg.data, dtype=getattr(torch, dtype), device=device)
    plan = make_plan(cfg, n_train=len(data.y_train))
    return train_seeds(cfg, data, plan, seeds, vectorize=vectorize)


MODELS = {"linear layers": ["paper=mnist1d_mlp", "train.steps=50"],
          "vmap (convolutions)": ["paper=mnist1d_cnn", "train.steps=20"]}


@pytest.mark.parametrize("model", list(MODELS))
def test_seeds_batched_on_the_device_equal_each_seed_alone_in_float64(model):
    together = short_run(MODELS[model], DEVICE, [0, 1, 2], vectorize=True)
    for result in together:
        alone = short_run(MODELS[model], DEVICE, [result.seed], vectorize=False)[0]
        for name, value in alone.parameters.items():
            assert relative_difference(result.parameters[name], value) <= RELATIVE, (result.seed, name)


@pytest.mark.parametrize("model", list(MODELS))
def test_a_run_on_the_device_equals_the_same_run_on_the_cpu_in_float64(model):
    on_device = short_run(MODELS[model], DEVICE, [0, 1], vectorize=True)
    on_cpu = short_run(MODELS[model], torch.device("cpu"), [0, 1], vectorize=True)
    for a, b in zip(on_device, on_cpu):
        for name, value in b.parameters.items():
            assert relative_difference(a.parameters[name], value) <= RELATIVE, (a.seed, name)


def test_the_fp16_divergence_case_batched_on_the_device_equals_each_seed_alone():
    # the case (SGD at lr 3: some seeds overflow, some diverge) with one loss scale per seed;
    # bit for bit on the CPU (tests/test_precision.py); on a GPU the batched and the single-seed
    # products may run different cuBLAS kernels, which this test would show
    overrides = ["train.precision=fp16", "optimizer.name=sgd", "optimizer.lr=3", "train.steps=300"]
    together = short_run(overrides, DEVICE, [0, 1, 2, 3], vectorize=True, dtype="float32")
    for result in together:
        alone = short_run(overrides, DEVICE, [result.seed], vectorize=False, dtype="float32")[0]
        assert result.diverged_at == alone.diverged_at, result.seed
        for name, value in alone.parameters.items():
            assert torch.equal(result.parameters[name], value), (result.seed, name)
