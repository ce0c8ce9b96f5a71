"""Optimizers that run an original paper's update rule in the form its code used.

This module owns the update rules: which momentum form, where epsilon sits, and how weight decay
enters. The forms PyTorch implements run PyTorch's own update functions (`torch.optim.adam.adam` and
its siblings: the very code, fused kernels included, that the torch.optim classes call, with the
same state); small elementwise rules run the rest (Sutskever/Caffe/Keras/scikit-learn momentum,
CNTK unit-gain momentum, TF1/Keras "epsilon hat" Adam, TF1 RMSprop), so a replication never converts
one form into another approximately. The rules themselves are in replicate/update_rules.py. Every rule is elementwise, so a "stacked" parameter of shape
(n_seeds, ...) trains each seed exactly as if it were alone.

`Optimizer` keeps torch.optim's interface (param_groups, state, step, zero_grad, state_dict,
load_state_dict) without being a torch.optim.Optimizer: building or stepping one of those imports
torch._dynamo (about 2.4 s on a 2-core machine, most of a short run's start-up), and its per-step
bookkeeping costs about 12 µs per tensor. torch.optim.lr_scheduler needs the real class; the trainer
sets group["lr"] itself.

Parameter groups keep the coupled (L2-in-the-gradient) coefficient in "weight_decay", which is what
PyTorch's update functions read, and a decoupled coefficient in "decoupled_weight_decay", applied
before the update; "weight_decay_form" records which. The one exception is PyTorch's AdamW form,
whose own "weight_decay" is already decoupled_lr.

Usage:
    settings = OptimizerSettings("sgd", lr=0.01, momentum=0.9, momentum_form="lr_inside", weight_decay=5e-4)
    optimizer = build_optimizer([{"params": model.parameters()}], settings)
    loss.backward(); optimizer.step(); optimizer.zero_grad()
"""

import math
from collections import defaultdict
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch

from replicate.conventions import convention
from replicate.update_rules import (
    FUSED_RULES, PYTORCH_RULES, epsilon_hat_adam_rule, epsilon_inside_sqrt_adam_rule, epsilon_inside_sqrt_rmsprop_rule,
    has_fused_kernel, pytorch_adadelta_rule, pytorch_adagrad_rule, pytorch_adam_rule, pytorch_rmsprop_rule,
    pytorch_sgd_rule, sutskever_sgd_rule, unit_gain_sgd_rule,
)

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
# PyTorch's default ε of each optimizer class (torch.optim.Adam(eps=1e-8), Adagrad 1e-10, Adadelta 1e-6, ...)
DEFAULT_EPS = {"adam": 1e-8, "adamw": 1e-8, "rmsprop": 1e-8, "adagrad": 1e-10, "adadelta": 1e-6}

# the conventions' vocabulary (replicate.conventions), every form of which runs natively here
MOMENTUM_FORMS = tuple(convention.MOMENTUM_FORMS)
EPS_PLACEMENTS = tuple(convention.EPS_PLACEMENTS)
# the weight-decay forms an optimizer applies; those written into the loss are the trainer's (replicate.loss)
WEIGHT_DECAY_FORMS = ("grad", "decoupled_lr", "decoupled")

# Forms each optimizer runs natively. A form an optimizer has no use for (SGD has no epsilon, Adam
# no momentum buffer) lists only the default, so passing the defaults always works.
_NATIVE_FORMS = {
    "sgd": {"momentum_form": MOMENTUM_FORMS, "eps_placement": ("outside",)},
    "adam": {"momentum_form": ("lr_outside",), "eps_placement": EPS_PLACEMENTS},
    "adamw": {"momentum_form": ("lr_outside",), "eps_placement": EPS_PLACEMENTS},
    # TF1's kernel puts epsilon inside the square root and the learning rate inside momentum.
    "rmsprop": {"momentum_form": ("lr_outside", "lr_inside"), "eps_placement": ("outside", "inside_sqrt")},
    "adagrad": {"momentum_form": ("lr_outside",), "eps_placement": ("outside",)},
    # PyTorch's Adadelta computes sqrt(v + eps), as Zeiler's RMS does: epsilon is inside.
    "adadelta": {"momentum_form": ("lr_outside",), "eps_placement": ("inside_sqrt",)},
}


def native_forms(name: str) -> dict[str, tuple[str, ...]]:
    """Return the momentum_form / eps_placement / weight_decay_form values `name` runs natively."""
    if name not in _NATIVE_FORMS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    # AdamW means decoupled decay; Adam with coupled decay is name="adam".
    decay_forms = WEIGHT_DECAY_FORMS[1:] if name == "adamw" else WEIGHT_DECAY_FORMS
    return {**_NATIVE_FORMS[name], "weight_decay_form": decay_forms}


class Optimizer:
    """Parameter groups stepped by one update rule, with torch.optim's interface.

    rule(optimizer, group, params) updates `params` (those of `group` that have a gradient) in place,
    keeping per-parameter state in optimizer.state[param]. Decoupled weight decay, if the group has
    any, is applied first: p <- p - c*p, with c = decoupled_weight_decay, times the current lr for
    the "decoupled_lr" form."""

    def __init__(self, param_groups: list[dict], rule, defaults: dict):
        self.rule, self.defaults = rule, defaults
        self.param_groups = [{**defaults, **group} for group in param_groups]
        self.state: dict[torch.Tensor, dict] = defaultdict(dict)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rule.__name__}, {len(self.param_groups)} group(s))"

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [parameter for parameter in group["params"] if parameter.grad is not None]
            if not params:
                continue
            if any(parameter.grad.is_sparse for parameter in params):
                raise ValueError(f"{self.rule.__name__} needs dense gradients")
            coefficient = group.get("decoupled_weight_decay", 0.0)
            if group.get("weight_decay_form") == "decoupled_lr":
                coefficient = group["lr"] * coefficient
            if coefficient != 0:
                for parameter in params:
                    parameter.mul_(1 - coefficient)
            self.rule(self, group, params)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                if set_to_none:
                    parameter.grad = None
                else:
                    parameter.grad.detach_().zero_()

    def state_dict(self) -> dict:
        """torch.optim's layout: state by parameter index, groups with their parameters as indices."""
        index = {}
        groups = []
        for group in self.param_groups:
            for parameter in group["params"]:
                index.setdefault(id(parameter), len(index))
            groups.append({**{key: value for key, value in group.items() if key != "params"},
                           "params": [index[id(parameter)] for parameter in group["params"]]})
        state = {index[id(parameter)]: dict(values) for parameter, values in self.state.items() if id(parameter) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
                len(saved["params"]) != len(group["params"]) for saved, group in zip(saved_groups, self.param_groups)):
            raise ValueError("the saved optimizer state has different parameter groups than this optimizer")
        by_index = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for saved_index, parameter in zip(saved["params"], group["params"]):
                by_index[saved_index] = (parameter, group)
        self.state = defaultdict(dict)
        for saved_index, values in state_dict["state"].items():
            parameter, group = by_index[saved_index]
            self.state[parameter] = {key: _placed(value, parameter, key, group) for key, value in values.items()}
        for saved, group in zip(saved_groups, self.param_groups):
            group.update({key: value for key, value in saved.items() if key != "params"})


def _placed(value, parameter: torch.Tensor, key: str, group: dict):
    """A saved state value on the parameter's device: moments in its dtype; step counters as PyTorch keeps them."""
    if not isinstance(value, torch.Tensor):
        return value
    if key == "step":  # fused kernels read the counter on the device, in float32; otherwise it lives on the host
        return value.to(dtype=torch.float32, device=parameter.device) if group.get("fused") else value.clone()
    if value.is_floating_point():
        return value.to(dtype=parameter.dtype, device=parameter.device)
    return value.to(device=parameter.device)


def _check_choice(what: str, value: str, allowed: tuple[str, ...], name: str | None = None) -> None:
    if value not in allowed:
        where = f" for {name}" if name else ""
        raise ValueError(f"{what}={value!r} is not allowed{where}; allowed: {', '.join(allowed)}")


def _choose_fused(requested: bool | None, rule, parameters: list) -> bool | None:
    """True to pass fused=True, None to let PyTorch pick foreach or its for-loop."""
    eligible = rule in FUSED_RULES and all(
        parameter.is_floating_point() and has_fused_kernel(rule, parameter.device.type) for parameter in parameters
    )
    if requested and not eligible:
        devices = sorted({parameter.device.type for parameter in parameters})
        raise ValueError(
            f"fused=True is not available for {rule.__name__.removesuffix('_rule')} on these parameters; fused kernels "
            f"exist for SGD/Adam/AdamW/Adagrad with floating-point parameters where torch {torch.__version__} built them "
            f"({'/'.join(devices)}: not for this rule); pass fused=None"
        )
    # fused=False must reach PyTorch as None: its own fused=False forces the slow for-loop
    use_fused = eligible if requested is None else requested
    return True if use_fused else None


@dataclass(frozen=True)
class OptimizerSettings:
    """What the optimizer executes: `name` in the given forms, with numbers in the units its update
    applies them (lr per step on the gradient of the loss as reduced; the caller converts from the
    paper's units, see replicate.hyperparameters). Checked once, here; build_optimizer takes it as is.

    weight_decay: the coefficient of the parameter groups that decay (a group's own "weight_decay"
        overrides it: 0.0 for the groups that must not decay).
    weight_decay_form: "grad" (g += λp), "decoupled_lr" (p -= lr*λ*p, PyTorch AdamW),
        "decoupled" (p -= λ*p each step, TensorFlow-Addons SGDW/AdamW; not scaled by lr).
    rmsprop_initial_square: starting value of RMSprop's mean square, only for
        eps_placement="inside_sqrt"; TF1's tf.train.RMSPropOptimizer used 1.0.
    fused: None uses PyTorch's fused kernel where it exists for the parameters' device and dtype.
    """

    name: str
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99
    rho: float = 0.9
    centered: bool = False
    initial_accumulator_value: float = 0.0
    weight_decay: float = 0.0
    momentum_form: str = "lr_outside"
    eps_placement: str = "outside"
    weight_decay_form: str = "grad"
    fused: bool | None = None
    rmsprop_initial_square: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(self.betas))
        name, momentum, nesterov = self.name, self.momentum, self.nesterov
        momentum_form, eps_placement = self.momentum_form, self.eps_placement
        forms = native_forms(name)
        _check_choice("momentum_form", momentum_form, MOMENTUM_FORMS)
        _check_choice("eps_placement", eps_placement, EPS_PLACEMENTS)
        _check_choice("weight_decay_form", self.weight_decay_form, WEIGHT_DECAY_FORMS)
        for what in ("momentum_form", "eps_placement", "weight_decay_form"):
            _check_choice(what, getattr(self, what), forms[what], name)
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number >= 0, got {self.lr}")
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if momentum != 0 and name not in ("sgd", "rmsprop"):
            raise ValueError(f"{name} has no momentum; momentum is allowed for: sgd, rmsprop")
        if nesterov and (name != "sgd" or momentum == 0):
            raise ValueError("nesterov=True needs name='sgd' and momentum > 0")
        if nesterov and momentum_form == "unit_gain":
            raise ValueError("nesterov is not available with momentum_form='unit_gain'; "
                             "allowed: lr_outside, lr_inside")
        if name in ("adam", "adamw") and not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"Adam betas must lie in [0, 1), got {self.betas}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.centered and name != "rmsprop":
            raise ValueError("centered=True applies only to name='rmsprop'")
        if self.initial_accumulator_value != 0 and name != "adagrad":
            raise ValueError("initial_accumulator_value applies only to name='adagrad'")
        if self.rmsprop_initial_square != 0 and (name, eps_placement) != ("rmsprop", "inside_sqrt"):
            raise ValueError("rmsprop_initial_square applies only to name='rmsprop' "
                             "with eps_placement='inside_sqrt'")
        if name == "rmsprop" and momentum != 0:
            # PyTorch's RMSprop keeps lr outside its momentum buffer; TF1's kernel keeps it inside.
            expected = "lr_inside" if eps_placement == "inside_sqrt" else "lr_outside"
            _check_choice("momentum_form", momentum_form, (expected,),
                          f"rmsprop with eps_placement={eps_placement!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


def build_optimizer(param_groups: list[dict], settings: OptimizerSettings) -> Optimizer:
    """The optimizer that runs `settings` natively over param_groups: [{"params": [...]}, ...], each
    group with an optional "weight_decay" of its own (default: settings.weight_decay)."""
    name, form, eps = settings.name, settings.weight_decay_form, settings.eps
    groups, parameters = [], []
    # PyTorch's AdamW is the one class whose own weight_decay is the decoupled_lr form.
    native_decoupled = name in ("adam", "adamw") and settings.eps_placement == "outside" and form == "decoupled_lr"
    for group in param_groups:
        params = group["params"]
        group = dict(group, params=[params] if isinstance(params, torch.Tensor) else list(params))
        decay = float(group.get("weight_decay", settings.weight_decay))
        if decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {decay}")
        if form != "grad" and not native_decoupled:
            group["decoupled_weight_decay"], decay = decay, 0.0
        group["weight_decay"] = decay
        group["weight_decay_form"] = form
        groups.append(group)
        parameters.extend(group["params"])

    momentum, nesterov, momentum_form = settings.momentum, settings.nesterov, settings.momentum_form
    if name == "sgd" and momentum_form == "lr_outside":
        rule, options = pytorch_sgd_rule, dict(momentum=momentum, nesterov=nesterov)
    elif name == "sgd" and momentum_form == "lr_inside":
        rule, options = sutskever_sgd_rule, dict(momentum=momentum, nesterov=nesterov)
    elif name == "sgd":
        rule, options = unit_gain_sgd_rule, dict(momentum=momentum)
    elif settings.eps_placement == "outside" and name in ("adam", "adamw"):
        rule, options = pytorch_adam_rule, dict(betas=settings.betas, eps=eps, decoupled=native_decoupled)
    elif name in ("adam", "adamw"):
        rule = epsilon_hat_adam_rule if settings.eps_placement == "eps_hat" else epsilon_inside_sqrt_adam_rule
        options = dict(betas=settings.betas, eps=eps)
    elif name == "rmsprop" and settings.eps_placement == "outside":
        rule, options = pytorch_rmsprop_rule, dict(alpha=settings.alpha, eps=eps, momentum=momentum,
                                                   centered=settings.centered)
    elif name == "rmsprop":
        rule = epsilon_inside_sqrt_rmsprop_rule
        options = dict(alpha=settings.alpha, eps=eps, momentum=momentum, centered=settings.centered,
                       initial_square=settings.rmsprop_initial_square)
    elif name == "adagrad":
        rule, options = pytorch_adagrad_rule, dict(eps=eps, initial_accumulator_value=settings.initial_accumulator_value)
    else:
        rule, options = pytorch_adadelta_rule, dict(rho=settings.rho, eps=eps)

    use_fused = _choose_fused(settings.fused, rule, parameters)  # raises where fused=True has no kernel
    if rule in FUSED_RULES:
        options["fused"] = use_fused
    if rule in PYTORCH_RULES:
        options["foreach"] = None  # PyTorch's choice: foreach on accelerators, its for-loop on the CPU
    return Optimizer(groups, rule, dict(lr=settings.lr, **options))


def is_bias(name: str) -> bool:
    """A bias by its parameter name (`ip1.bias`, `bn1.bias`), the rule decay_biases=false uses."""
    return name.rsplit(".", 1)[-1].startswith("bias")


def match_parameter_groups(names: list[str], patterns: list[str]) -> list[int | None]:
    """For each parameter name, the index of the first pattern (an fnmatch glob: `conv1.*`, `*.bias`) that
    matches it, or None. Every pattern must be the first match of at least one parameter: one that matches
    nothing, or only parameters an earlier pattern took, is a mistake, named with the parameters there are."""
    first = [next((index for index, pattern in enumerate(patterns) if fnmatchcase(name, pattern)), None) for name in names]
    for index, pattern in enumerate(patterns):
        if index not in first:
            taken = " (every parameter it matches is taken by an earlier group)" if any(
                fnmatchcase(name, pattern) for name in names) else ""
            raise ValueError(f"optimizer.param_groups[{index}].match {pattern!r} matches no parameter{taken}; "
                             f"the model's parameters: {', '.join(names)}")
    return first


def parameter_groups(names: list[str], decayed: list[str], weight_decay: float, bias_lr_mult: float = 1.0,
                     overrides: tuple = ()) -> list[tuple[list[str], float, float]]:
    """Parameter names grouped as (names, weight decay, lr multiplier): the decayed ones with `weight_decay`, the
    rest with none, and biases at lr × bias_lr_mult where that is not 1 (Caffe's per-blob `lr_mult`: local_rate =
    rate · lr_mult, BVLC/caffe src/caffe/solvers/sgd_solver.cpp line 228 at 9b89154; `decay_mult` stays 1, so
    Caffe's biases decay at the full weight_decay unless a prototxt says otherwise). Without weight decay or
    multiplier, one group: the optimizer then steps one buffer.

    overrides: (fnmatch pattern, lr multiplier, weight decay) per optimizer.param_groups entry, in order; a
    parameter takes the first that matches it, in place of the defaults above (decay_biases, bias_lr_mult,
    weight_decay), which stay for the parameters no pattern matches. Parameters with equal (decay, multiplier)
    share a group, in the order they first appear."""
    if overrides:
        first = match_parameter_groups(names, [pattern for pattern, _, _ in overrides])
        keyed: dict[tuple[float, float], list[str]] = {}
        for name, index in zip(names, first):
            if index is not None:
                key = (overrides[index][2], overrides[index][1])
            else:
                key = (weight_decay if name in decayed else 0.0, bias_lr_mult if is_bias(name) else 1.0)
            keyed.setdefault(key, []).append(name)
        return [(members, decay, multiplier) for (decay, multiplier), members in keyed.items()]
    undecayed = [name for name in names if name not in decayed]
    if weight_decay and decayed and undecayed:
        by_decay = [(decayed, weight_decay), (undecayed, 0.0)]
    else:
        by_decay = [(decayed + undecayed, weight_decay if decayed else 0.0)]
    if bias_lr_mult == 1:
        return [(group, decay, 1.0) for group, decay in by_decay]
    groups = []
    for group, decay in by_decay:
        for multiplier, members in ((1.0, [n for n in group if not is_bias(n)]), (bias_lr_mult, [n for n in group if is_bias(n)])):
            if members:
                groups.append((members, decay, multiplier))
    return groups
