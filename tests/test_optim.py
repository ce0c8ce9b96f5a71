"""Contracts for replicate.optim: each native form against an independent oracle, stacked seeds,
checkpoint round trips and user-facing errors. Float64 on a small least-squares problem."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

from replicate.optim import OPTIMIZERS, OptimizerSettings, build_optimizer, native_forms

DIMENSION, EXAMPLES, SEEDS, STEPS = 5, 20, 3, 50
TOLERANCE = 1e-12

_generator = torch.Generator().manual_seed(0)
# one least-squares problem per seed: loss = 0.5 * mean((X w - y)^2)
INPUTS = torch.randn(SEEDS, EXAMPLES, DIMENSION, generator=_generator, dtype=torch.float64)
TARGETS = torch.randn(SEEDS, EXAMPLES, generator=_generator, dtype=torch.float64)
INITIAL = torch.randn(SEEDS, DIMENSION, generator=_generator, dtype=torch.float64)


def least_squares_gradient(weights: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Gradient of 0.5 * mean((X w - y)^2) for one seed's problem; weights has shape (DIMENSION,)."""
    residual = INPUTS[seed] @ weights - TARGETS[seed]
    return INPUTS[seed].T @ residual / EXAMPLES


def fresh_weights(seed: int = 0) -> torch.Tensor:
    return INITIAL[seed].clone().requires_grad_(True)


def train(optimizer, weights, steps=STEPS, lr_at=None, start=0):
    """Run `steps` updates on a list of (DIMENSION,) or (SEEDS, DIMENSION) tensors; lr_at(step) sets lr."""
    for step in range(start, start + steps):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        for seed, parameter in enumerate(weights):
            if parameter.dim() == 2:  # stacked seeds: each row gets its own problem's gradient
                rows = [least_squares_gradient(row.detach().double(), row_seed) for row_seed, row in enumerate(parameter)]
                parameter.grad = torch.stack(rows).to(parameter.dtype)
            else:
                parameter.grad = least_squares_gradient(parameter.detach().double(), seed).to(parameter.dtype)
        optimizer.step()
    return weights


def build(weights, name, weight_decay=0.0, **options):
    return build_optimizer([{"params": weights, "weight_decay": weight_decay}], OptimizerSettings(name, **options))


def max_difference(first, second) -> float:
    return max((a.detach() - b.detach()).abs().max().item() for a, b in zip(first, second))


def drop_at_half(high, low):
    return lambda step: high if step < STEPS // 2 else low


# --- own forms against scikit-learn's optimizers -------------------------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
def test_lr_inside_matches_sklearn_sgd_under_invscaling_schedule(nesterov):
    weights = [fresh_weights()]
    optimizer = build(weights, "sgd", lr=0.1, momentum=0.9, nesterov=nesterov, momentum_form="lr_inside")
    invscaling = lambda step: 0.1 / (step + 1) ** 0.5  # noqa: E731  sklearn: lr_init / (t + 1) ** power_t
    reference = [INITIAL[0].numpy().copy()]
    oracle = SGDOptimizer(reference, learning_rate_init=0.1, lr_schedule="invscaling", momentum=0.9,
                          nesterov=nesterov, power_t=0.5)
    for step in range(STEPS):
        train(optimizer, weights, steps=1, lr_at=invscaling, start=step)
        oracle.update_params(reference, [least_squares_gradient(torch.from_numpy(reference[0])).numpy()])
        oracle.iteration_ends(step + 1)
    assert abs(oracle.learning_rate - invscaling(STEPS)) < 1e-15
    assert max_difference(weights, [torch.from_numpy(reference[0])]) <= TOLERANCE


def test_eps_hat_adam_matches_sklearn_adam_with_lr_change():
    weights = [fresh_weights()]
    optimizer = build(weights, "adam", lr=0.05, eps_placement="eps_hat")
    reference = [INITIAL[0].numpy().copy()]
    oracle = AdamOptimizer(reference, learning_rate_init=0.05)
    for step in range(STEPS):
        if step == STEPS // 2:  # sklearn's Adam derives its step size from learning_rate_init
            oracle.learning_rate_init = optimizer.param_groups[0]["lr"] = 0.01
        train(optimizer, weights, steps=1)
        oracle.update_params(reference, [least_squares_gradient(torch.from_numpy(reference[0])).numpy()])
    assert max_difference(weights, [torch.from_numpy(reference[0])]) <= TOLERANCE


# --- own forms against PyTorch's forms -----------------------------------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
def test_lr_inside_equals_pytorch_sgd_at_constant_lr(nesterov):
    options = dict(lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    inside_optimizer = build([fresh_weights()], "sgd", momentum_form="lr_inside", **options)
    outside_optimizer = build([fresh_weights()], "sgd", momentum_form="lr_outside", **options)
    inside = train(inside_optimizer, inside_optimizer.param_groups[0]["params"])
    outside = train(outside_optimizer, outside_optimizer.param_groups[0]["params"])
    assert max_difference(inside, outside) <= TOLERANCE


def test_lr_inside_differs_from_pytorch_sgd_when_lr_changes():
    lr_at = drop_at_half(0.05, 0.005)
    inside_optimizer = build([fresh_weights()], "sgd", lr=0.05, momentum=0.9, momentum_form="lr_inside")
    outside_optimizer = build([fresh_weights()], "sgd", lr=0.05, momentum=0.9)
    inside = train(inside_optimizer, inside_optimizer.param_groups[0]["params"], lr_at=lr_at)
    outside = train(outside_optimizer, outside_optimizer.param_groups[0]["params"], lr_at=lr_at)
    assert max_difference(inside, outside) > 1e-6


def test_unit_gain_equals_pytorch_sgd_with_lr_times_one_minus_momentum():
    momentum, lr_at = 0.9, drop_at_half(0.5, 0.1)
    unit_gain = build([fresh_weights()], "sgd", lr=0.5, momentum=momentum, momentum_form="unit_gain")
    scaled = build([fresh_weights()], "sgd", lr=0.5 * (1 - momentum), momentum=momentum)
    dampened = torch.optim.SGD([fresh_weights()], lr=0.5, momentum=momentum, dampening=momentum)
    train(unit_gain, unit_gain.param_groups[0]["params"], lr_at=lr_at)
    train(scaled, scaled.param_groups[0]["params"], lr_at=lambda step: lr_at(step) * (1 - momentum))
    train(dampened, dampened.param_groups[0]["params"], lr_at=lr_at)
    first = unit_gain.param_groups[0]["params"]
    assert max_difference(first, scaled.param_groups[0]["params"]) <= TOLERANCE
    # PyTorch's dampening skips (1 - momentum) on the first step, so it is not unit gain
    assert max_difference(first, dampened.param_groups[0]["params"]) > 1e-6


# --- own forms against direct numpy transcriptions -----------------------------------------------


def numpy_gradient(weights: np.ndarray) -> np.ndarray:
    return least_squares_gradient(torch.from_numpy(weights)).numpy()


@pytest.mark.parametrize("centered, momentum, initial_square",
                         [(False, 0.0, 0.0), (False, 0.9, 1.0), (True, 0.5, 1.0)])
def test_inside_sqrt_rmsprop_matches_tensorflow_formula(centered, momentum, initial_square):
    alpha, eps, lr_at = 0.9, 1e-6, drop_at_half(0.01, 0.002)
    weights = [fresh_weights()]
    optimizer = build(weights, "rmsprop", lr=0.01, alpha=alpha, eps=eps, momentum=momentum,
                      centered=centered, eps_placement="inside_sqrt", momentum_form="lr_inside",
                      rmsprop_initial_square=initial_square)
    train(optimizer, weights, lr_at=lr_at)
    w = INITIAL[0].numpy().copy()
    mean_square, mean_gradient, velocity = np.full_like(w, initial_square), np.zeros_like(w), np.zeros_like(w)
    for step in range(STEPS):
        g = numpy_gradient(w)
        mean_square = alpha * mean_square + (1 - alpha) * g**2
        mean_gradient = alpha * mean_gradient + (1 - alpha) * g
        denominator = mean_square - mean_gradient**2 if centered else mean_square
        velocity = momentum * velocity + lr_at(step) * g / np.sqrt(denominator + eps)
        w = w - velocity
    assert max_difference(weights, [torch.from_numpy(w)]) <= TOLERANCE


def test_inside_sqrt_adam_matches_formula():
    (beta1, beta2), eps, lr_at = (0.9, 0.99), 1e-4, drop_at_half(0.05, 0.01)
    weights = [fresh_weights()]
    optimizer = build(weights, "adam", lr=0.05, betas=(beta1, beta2), eps=eps, eps_placement="inside_sqrt")
    train(optimizer, weights, lr_at=lr_at)
    w = INITIAL[0].numpy().copy()
    m, v = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, STEPS + 1):
        g = numpy_gradient(w)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        w = w - lr_at(step - 1) * (m / (1 - beta1**step)) / np.sqrt(v / (1 - beta2**step) + eps)
    assert max_difference(weights, [torch.from_numpy(w)]) <= TOLERANCE


# --- weight decay forms --------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", [
    ("sgd", dict(momentum=0.9, momentum_form="lr_inside")),
    ("sgd", dict(momentum=0.9)),
    ("adam", dict(eps_placement="eps_hat")),
    ("adam", dict()),  # decoupled_lr runs PyTorch's AdamW; decoupled runs Adam plus the pre-hook
    ("rmsprop", dict(momentum=0.5)),
])
def test_decoupled_with_lr_times_decay_equals_decoupled_lr(name, options):
    lr, decay = 0.02, 0.3
    runs = {}
    for form, coefficient in [("decoupled", lr * decay), ("decoupled_lr", decay), ("grad", 0.0)]:
        optimizer = build([fresh_weights()], name, weight_decay=coefficient, lr=lr,
                          weight_decay_form=form, **options)
        runs[form] = train(optimizer, optimizer.param_groups[0]["params"])
    assert max_difference(runs["decoupled"], runs["decoupled_lr"]) <= TOLERANCE
    assert max_difference(runs["decoupled"], runs["grad"]) > 1e-6  # the decay did act


# --- stacked seeds, checkpoints ------------------------------------------------------------------

# forms run by this module's own rules
OWN_CLASS_CONFIGURATIONS = [
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, momentum_form="lr_inside", weight_decay=0.01,
                 weight_decay_form="decoupled")),
    ("sgd", dict(lr=0.5, momentum=0.9, momentum_form="unit_gain", weight_decay=0.01,
                 weight_decay_form="decoupled_lr")),
    ("adam", dict(lr=0.05, eps_placement="eps_hat", weight_decay=0.001, weight_decay_form="decoupled")),
    ("adam", dict(lr=0.05, eps_placement="inside_sqrt", weight_decay=0.01)),
    ("rmsprop", dict(lr=0.01, momentum=0.5, centered=True, eps_placement="inside_sqrt",
                     momentum_form="lr_inside", rmsprop_initial_square=1.0, eps=1e-10)),
]
# forms run by PyTorch's own update functions, each with the torch.optim class that must give the same numbers
PYTORCH_FORMS = [
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
     torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd", dict(lr=0.05), torch.optim.SGD, dict(lr=0.05)),
    ("adam", dict(lr=0.05, weight_decay=0.01), torch.optim.Adam, dict(lr=0.05, weight_decay=0.01)),
    ("adamw", dict(lr=0.05, weight_decay=0.1, weight_decay_form="decoupled_lr"),
     torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
    ("rmsprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01),
     torch.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
    ("adagrad", dict(lr=0.1, initial_accumulator_value=0.1, weight_decay=0.01, eps=1e-10),
     torch.optim.Adagrad, dict(lr=0.1, initial_accumulator_value=0.1, weight_decay=0.01, eps=1e-10)),
    ("adadelta", dict(lr=1.0, eps_placement="inside_sqrt", eps=1e-6), torch.optim.Adadelta, dict(lr=1.0, eps=1e-6)),
]
PYTORCH_CONFIGURATIONS = [(name, options) for name, options, _, _ in PYTORCH_FORMS]
CONFIGURATIONS = OWN_CLASS_CONFIGURATIONS + PYTORCH_CONFIGURATIONS


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name, options, pytorch_class, pytorch_options", PYTORCH_FORMS)
def test_pytorch_forms_equal_the_torch_optim_classes_bit_for_bit(name, options, pytorch_class, pytorch_options, dtype):
    """Our optimizer calls torch.optim's update functions with the state its classes keep: same numbers,
    fused kernel or for-loop alike, through a change of lr."""
    options = dict(options)
    decay = options.pop("weight_decay", 0.0)
    ours = build([INITIAL.to(dtype, copy=True).requires_grad_(True)], name, decay, **options)
    fused = ours.param_groups[0].get("fused")
    theirs = pytorch_class([INITIAL.to(dtype, copy=True).requires_grad_(True)], **pytorch_options, **({"fused": True} if fused else {}))
    lr_at = drop_at_half(options["lr"], options["lr"] / 5)
    (mine,) = train(ours, ours.param_groups[0]["params"], lr_at=lr_at)
    (reference,) = train(theirs, theirs.param_groups[0]["params"], lr_at=lr_at)
    assert torch.equal(mine, reference)
    assert max_difference([mine], [INITIAL.to(dtype)]) > 1e-3  # training moved the weights


def test_building_and_stepping_does_not_import_torch_dynamo():
    """torch.optim's classes import torch._dynamo (seconds of start-up) when built; ours must not."""
    script = ("import sys, torch; from replicate.optim import build_optimizer, OptimizerSettings, OPTIMIZERS\n"
              "for name in OPTIMIZERS:\n"
              "    p = torch.zeros(3, requires_grad=True); p.grad = torch.ones(3)\n"
              "    form = 'decoupled_lr' if name == 'adamw' else 'grad'\n"
              "    eps = 'inside_sqrt' if name == 'adadelta' else 'outside'\n"
              "    o = build_optimizer([{'params': [p], 'weight_decay': 0.1}], OptimizerSettings(name, lr=0.1, weight_decay_form=form, eps_placement=eps))\n"
              "    o.step(); o.load_state_dict(o.state_dict())\n"
              "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name, options", CONFIGURATIONS)
def test_stacked_seeds_train_exactly_like_separate_seeds(name, options):
    options = dict(options)
    decay = options.pop("weight_decay", 0.0)
    stacked_optimizer = build([INITIAL.clone().requires_grad_(True)], name, decay, **options)
    separate_optimizer = build([fresh_weights(seed) for seed in range(SEEDS)], name, decay, **options)
    lr_at = drop_at_half(options["lr"], options["lr"] / 5)
    (stacked,) = train(stacked_optimizer, stacked_optimizer.param_groups[0]["params"], lr_at=lr_at)
    separate = train(separate_optimizer, separate_optimizer.param_groups[0]["params"], lr_at=lr_at)
    assert max_difference(list(stacked), separate) <= TOLERANCE
    assert max_difference([stacked], [INITIAL]) > 1e-3  # training moved the weights


@pytest.mark.parametrize("name, options", CONFIGURATIONS)
def test_state_dict_round_trip_continues_bit_identically(name, options):
    options = dict(options)
    decay = options.pop("weight_decay", 0.0)
    optimizer = build([fresh_weights()], name, decay, **options)
    (weights,) = train(optimizer, optimizer.param_groups[0]["params"], steps=20)
    optimizer.param_groups[0]["lr"] *= 0.5  # a scheduler's change must travel with the checkpoint
    checkpoint = io.BytesIO()
    torch.save({"weights": weights.detach().clone(), "optimizer": optimizer.state_dict()}, checkpoint)
    (expected,) = train(optimizer, [weights], steps=20, start=20)

    checkpoint.seek(0)
    saved = torch.load(checkpoint, weights_only=True)
    restored_weights = saved["weights"].requires_grad_(True)
    restored = build([restored_weights], name, decay, **options)
    restored.load_state_dict(saved["optimizer"])
    train(restored, [restored_weights], steps=20, start=20)
    assert torch.equal(restored_weights, expected)
    assert type(restored).__module__ == "replicate.optim"


def test_own_classes_keep_state_per_parameter():
    weights = [fresh_weights()]
    optimizer = build(weights, "sgd", lr=0.1, momentum=0.9, momentum_form="lr_inside")
    train(optimizer, weights, steps=2)
    assert set(optimizer.state_dict()["state"][0]) == {"velocity"}


# --- construction and errors ---------------------------------------------------------------------


def test_every_native_form_builds_and_steps():
    for name in OPTIMIZERS:
        forms = native_forms(name)
        for momentum_form in forms["momentum_form"]:
            for eps_placement in forms["eps_placement"]:
                for weight_decay_form in forms["weight_decay_form"]:
                    weights = [fresh_weights()]
                    optimizer = build(weights, name, 0.01, lr=0.01, momentum_form=momentum_form,
                                      eps_placement=eps_placement, weight_decay_form=weight_decay_form)
                    train(optimizer, weights, steps=2)
                    assert torch.isfinite(weights[0]).all()


def test_fused_is_used_on_cpu_for_float64_where_pytorch_has_it():
    for name in ("sgd", "adam", "adamw", "adagrad"):
        form = "decoupled_lr" if name == "adamw" else "grad"
        optimizer = build([fresh_weights()], name, lr=0.01, weight_decay_form=form)
        assert optimizer.param_groups[0]["fused"] is True
    assert not build([fresh_weights()], "adam", lr=0.01, fused=False).param_groups[0]["fused"]
    assert "fused" not in build([fresh_weights()], "rmsprop", lr=0.01).param_groups[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_optimizer_builds_and_steps_on_cuda_with_the_fused_kernels_this_torch_has():
    # fused=None picks a fused kernel only where this torch build has one for CUDA (fused Adagrad came
    # to CUDA releases after the others); it must never pick one that is missing
    from replicate.optim import has_fused_kernel

    for name in ("sgd", "adam", "adamw", "adagrad"):
        form = "decoupled_lr" if name == "adamw" else "grad"
        weights = [INITIAL[0].cuda().requires_grad_(True)]
        optimizer = build(weights, name, lr=0.01, weight_decay_form=form)
        assert bool(optimizer.param_groups[0]["fused"]) == has_fused_kernel(optimizer.rule, "cuda")
        for _ in range(2):
            weights[0].grad = least_squares_gradient(weights[0].detach().cpu()).cuda()
            optimizer.step()
        assert torch.isfinite(weights[0]).all()


def test_caller_groups_are_not_modified():
    groups = [{"params": [fresh_weights()], "weight_decay": 0.1}]
    build_optimizer(groups, OptimizerSettings("sgd", lr=0.1, weight_decay_form="decoupled"))
    assert set(groups[0]) == {"params", "weight_decay"} and groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize("name, options, allowed", [
    ("sgdm", dict(), "allowed: sgd, adam, adamw, rmsprop, adagrad, adadelta"),
    ("sgd", dict(eps_placement="inside_sqrt"), "allowed: outside"),
    ("adam", dict(momentum_form="lr_inside"), "allowed: lr_outside"),
    ("sgd", dict(momentum_form="sutskever"), "allowed: lr_outside, lr_inside, unit_gain"),
    ("adamw", dict(), "allowed: decoupled_lr, decoupled"),
    ("adadelta", dict(), "allowed: inside_sqrt"),
    ("sgd", dict(nesterov=True), "momentum > 0"),
    ("sgd", dict(nesterov=True, momentum=0.9, momentum_form="unit_gain"), "allowed: lr_outside, lr_inside"),
    ("sgd", dict(lr=-0.1), ">= 0"),
    ("adam", dict(momentum=0.9), "allowed for: sgd, rmsprop"),
    ("rmsprop", dict(rmsprop_initial_square=1.0), "eps_placement='inside_sqrt'"),
    ("rmsprop", dict(momentum=0.9, eps_placement="inside_sqrt"), "allowed: lr_inside"),
    ("sgd", dict(momentum=0.9, momentum_form="lr_inside", fused=True), "pass fused=None"),
])
def test_bad_input_raises_one_line_error_naming_allowed_values(name, options, allowed):
    options = {"lr": 0.1, **options}
    with pytest.raises(ValueError) as error:
        build([fresh_weights()], name, **options)
    assert allowed in str(error.value) and "\n" not in str(error.value)


def test_native_forms_rejects_unknown_name():
    with pytest.raises(ValueError, match="allowed: sgd"):
        native_forms("lamb")


def test_the_plan_hands_the_trainer_one_frozen_statement_checked_when_it_is_made():
    import dataclasses

    from replicate import conventions
    from replicate.config import ConfigError
    from replicate.hyperparameters import build_plan

    hparams = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
    plan = build_plan(conventions.get_convention("sum"), conventions.get_convention("mean"), hparams,
                      optimizer="sgd", batch_size=32)
    settings = plan.update.optimizer
    assert (settings.lr, settings.weight_decay) == pytest.approx((0.01 * 32, 5e-4 / 32))  # lr × B, λ / B
    assert plan.native == hparams and plan.executed["lr"] == settings.lr == plan.applied["lr"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 1.0
    # PyTorch's RMSprop keeps lr outside its momentum buffer: refused when the plan is made, not in training
    with pytest.raises(ConfigError, match="the executed convention cannot run rmsprop"):
        build_plan(conventions.get_convention("mean", momentum_form="lr_inside"), None,
                   {"lr": 0.01, "momentum": 0.9, "eps": 1e-8}, optimizer="rmsprop", batch_size=32)
