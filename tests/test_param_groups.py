"""optimizer.param_groups: per-parameter lr multipliers and weight decays, first match wins, converted like the global
decay, trained as asked, seeds together equal to seeds alone."""
import pytest
import torch

from replicate.config import compose
from replicate.config_checks import check_config
from replicate.data import load_dataset
from replicate.errors import ConfigError
from replicate.hyperparameters import make_plan
from replicate.optim import parameter_groups
from replicate.train import make_optimizer, seed_stack, train_seeds

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["conv.weight", "conv.bias", "ip.weight", "ip.bias"]
SGD = ["paper=mnist1d_mlp", "optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9", "train.dtype=float64"]


def groups(*entries: str) -> str:
    return f"optimizer.param_groups=[{','.join(entries)}]"


def test_first_match_wins_and_the_defaults_stay_for_the_rest():
    overrides = (("ip.*", 3.0, 1e-2), ("*.weight", 1.0, 0.0))
    # conv.weight: the second pattern (no decay); conv.bias: no pattern, so decay_biases (not decayed here) and
    # bias_lr_mult 2 apply; ip.*: the first pattern, over the weight-only decay and the bias multiplier
    assert parameter_groups(NAMES, ["conv.weight", "ip.weight"], 5e-4, 2.0, overrides) == [
        (["conv.weight"], 0.0, 1.0), (["conv.bias"], 0.0, 2.0), (["ip.weight", "ip.bias"], 1e-2, 3.0)]
    assert parameter_groups(NAMES, NAMES, 5e-4, 1.0, (("*", 1.0, 5e-4),)) == [(NAMES, 5e-4, 1.0)]


@pytest.mark.parametrize("patterns, says", [
    ((("conv9.*", 1.0, 0.0),), "matches no parameter"),
    ((("conv.*", 1.0, 0.0), ("conv.bias", 2.0, 0.0)), "taken by an earlier group"),
])
def test_a_pattern_that_takes_no_parameter_is_refused_naming_the_parameters(patterns, says):
    with pytest.raises(ValueError, match=says) as error:
        parameter_groups(NAMES, NAMES, 0.0, 1.0, patterns)
    assert "conv.weight, conv.bias, ip.weight, ip.bias" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("entry, says", [
    ("{match:'layer1.*'}", "param_groups[0].match 'layer1.*' matches no parameter; the model's parameters: linear1.weight"),
    ("{match:'*',lr_mult:-1}", "param_groups[0].lr_mult must be a finite number > 0"),
    ("{match:'*',weight_decay:-1e-3}", "param_groups[0].weight_decay must be a finite number >= 0"),
])
def test_config_check_names_the_entry(entry, says):
    with pytest.raises(ConfigError) as error:
        check_config(compose(["paper=mnist1d_mlp", groups(entry)]))
    assert says in str(error.value)


@pytest.mark.parametrize("form, convention", [("grad", "sum"), ("coupled_lr_independent", "mean"),
                                              ("grad", "cuda_convnet"), ("decoupled", "mean")])
def test_a_group_decay_converts_as_the_global_one_at_the_groups_lr(form, convention):
    """The group's applied decay is what a run whose global lr and decay were the group's would apply: the same
    rules, including those that involve lr (coupled_lr_independent: λ_grad = λ / lr)."""
    base = [*SGD, f"conventions.weight_decay_form={form}", f"train.convention={convention}"]
    grouped = make_plan(compose([*base, "optimizer.weight_decay=1e-4",
                                 groups("{match:'linear1.*',lr_mult:0.5,weight_decay:3e-3}",
                                        "{match:'*.bias',lr_mult:2,weight_decay_mult:0}")]), n_train=4000)
    alone = make_plan(compose([*base, "optimizer.lr=0.025", "optimizer.weight_decay=3e-3"]), n_train=4000)
    first, second = grouped.update.param_groups
    assert (first.lr_mult, first.native_weight_decay) == (0.5, 3e-3)
    assert first.weight_decay == alone.update.optimizer.weight_decay and first.exact == alone.exact
    assert first.executed_weight_decay == alone.executed["weight_decay"]
    assert (second.native_weight_decay, second.weight_decay) == (0.0, 0.0)
    if form == "coupled_lr_independent":  # per-step decay λ = lr·λ_grad with lr the group's 0.05 × 0.5
        assert first.weight_decay == pytest.approx(3e-3 / 0.025, rel=1e-15)
    assert grouped.summary()["param_groups"][0]["rule"] == next(
        (rule["formula"] for rule in alone.summary()["rules"] if rule["field"] == "weight_decay"), "unchanged")


def test_a_group_decay_in_the_loss_is_refused_in_one_line():
    cfg = compose([*SGD, "conventions.weight_decay_form=l2_half", groups("{match:'*',weight_decay:1e-3}")])
    with pytest.raises(ConfigError, match="cannot set a weight decay of its own when the decay is written into the loss"):
        make_plan(cfg, n_train=4000)


def setup(overrides, steps=12):
    cfg = compose([*overrides, f"train.steps={steps}"])
    data = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
    return cfg, data, make_plan(cfg, n_train=len(data.y_train))


GROUPED = [*SGD, "optimizer.weight_decay=1e-4", "conventions.momentum_form=lr_inside",
           groups("{match:'linear1.*',lr_mult:0.5,weight_decay:3e-3}", "{match:'*.bias',lr_mult:2,weight_decay:0}")]


def test_each_optimizer_group_holds_the_lr_and_decay_asked_for():
    cfg, data, plan = setup(GROUPED)
    stack, _ = seed_stack(cfg, data, [0], vectorize=False)
    optimizer = make_optimizer(stack, stack.decayed(True), plan.update, "fp32")
    asked = {"linear1.weight": (0.025, 3e-3), "linear1.bias": (0.025, 3e-3), "linear2.weight": (0.05, 1e-4),
             "linear3.weight": (0.05, 1e-4), "linear2.bias": (0.1, 0.0), "linear3.bias": (0.1, 0.0)}
    for group in optimizer.param_groups:
        (buffer,) = group["params"]
        members = [name for name, leaf in stack.leaves.items() if leaf.data_ptr() >= buffer.data_ptr()
                   and leaf.data_ptr() < buffer.data_ptr() + buffer.numel() * buffer.element_size()]
        assert members and {asked[name] for name in members} == {(group["lr"], group["weight_decay"])}, members


def test_groups_train_as_the_same_lr_and_decay_given_globally():
    """One group over every parameter, lr × 0.5 and its own decay, is bit for bit the run whose global lr and decay are
    those; a group at lr × 1e-300 leaves its parameters where they started (each step below half an ulp)."""
    grouped = train_seeds(*setup([*SGD, "optimizer.weight_decay=1e-4", groups("{match:'*',lr_mult:0.5,weight_decay:3e-3}")]),
                          [0], vectorize=False)[0]
    alone = train_seeds(*setup([*SGD, "optimizer.lr=0.025", "optimizer.weight_decay=3e-3"]), [0], vectorize=False)[0]
    assert all(torch.equal(grouped.parameters[name], alone.parameters[name]) for name in alone.parameters)
    cfg, data, plan = setup([*SGD, groups("{match:'linear2.*',lr_mult:1e-300}")])
    frozen = train_seeds(cfg, data, plan, [0], vectorize=False)[0]
    start, _ = seed_stack(cfg, data, [0], vectorize=False)
    for name, value in frozen.parameters.items():
        assert torch.equal(value, start.param(name)[0].detach()) == name.startswith("linear2."), name


def test_seeds_together_equal_seeds_alone_with_groups():
    cfg, data, plan = setup(GROUPED, steps=20)
    together = train_seeds(cfg, data, plan, [0, 1], vectorize=True)
    alone = [train_seeds(cfg, data, plan, [seed], vectorize=False)[0] for seed in (0, 1)]
    assert [result.path for result in together] == ["batched", "batched"]
    assert all(torch.equal(a.parameters[name], b.parameters[name]) for a, b in zip(together, alone) for name in a.parameters)


def test_convert_shows_each_groups_lr_and_decay_by_the_global_rules():
    from replicate.conventions import convert, get_convention
    from replicate.convert import group_rules

    source, target = get_convention("cuda_convnet", "sgd"), get_convention("sum", "sgd")
    hparams = {"lr": 0.001, "momentum": 0.9, "weight_decay": 0.004}
    request = {"source": source, "optimizer": "sgd", "batch_size": 128, "hparams": hparams,
               "constant_batch": True, "constant_lr": True}
    rules = {rule.field: rule for rule in group_rules(request, target, ("fc10.weight", 2.0, 1.0), None)}
    alone = convert({**hparams, "lr": 0.002, "weight_decay": 1.0}, source, target, optimizer="sgd", batch_size=128)
    assert set(rules) == {"lr[fc10.weight]", "weight_decay[fc10.weight]"}
    assert rules["lr[fc10.weight]"].target_value == alone.hparams["lr"] == pytest.approx(0.002 / 128, rel=1e-15)  # sum: B × the gradient
    assert rules["weight_decay[fc10.weight]"].target_value == alone.hparams["weight_decay"] == pytest.approx(1.0 * 128, rel=1e-15)
    assert all(rule.exact for rule in rules.values())
