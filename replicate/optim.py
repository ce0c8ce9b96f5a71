"""Optimizers that run an original paper's update rule in the form its code used.

This module owns the update rules: which momentum form, where epsilon sits, and how weight decay
enters. PyTorch's own `torch.optim` classes run every form they implement; small elementwise
classes here run the rest (Sutskever/Caffe/Keras/scikit-learn momentum, CNTK unit-gain momentum,
TF1/Keras "epsilon hat" Adam, TF1 RMSprop), so a replication never converts one form into another
approximately. Every rule is elementwise, so a "stacked" parameter of shape (n_seeds, ...) trains
each seed exactly as if it were alone.

Parameter groups of a built optimizer keep the coupled (L2-in-the-gradient) coefficient in
"weight_decay", which is what PyTorch's classes read, and a decoupled coefficient in
"decoupled_weight_decay", applied by a step pre-hook; "weight_decay_form" records which. The one
exception is PyTorch's AdamW, whose own "weight_decay" is already decoupled_lr.

Usage:
    optimizer = build_optimizer([{"params": model.parameters(), "weight_decay": 5e-4}], "sgd",
                                lr=0.01, momentum=0.9, momentum_form="lr_inside")
"""

import math

import torch

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")

MOMENTUM_FORMS = ("lr_outside", "lr_inside", "unit_gain")
EPS_PLACEMENTS = ("outside", "inside_sqrt", "eps_hat")
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

# PyTorch classes that take fused=True, and the devices whose fused kernels we rely on.
_FUSED_CLASSES = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad)
_FUSED_DEVICES = ("cpu", "cuda")


def native_forms(name: str) -> dict[str, tuple[str, ...]]:
    """Return the momentum_form / eps_placement / weight_decay_form values `name` runs natively."""
    if name not in _NATIVE_FORMS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    # AdamW means decoupled decay; Adam with coupled decay is name="adam".
    decay_forms = WEIGHT_DECAY_FORMS[1:] if name == "adamw" else WEIGHT_DECAY_FORMS
    return {**_NATIVE_FORMS[name], "weight_decay_form": decay_forms}


class _ElementwiseOptimizer(torch.optim.Optimizer):
    """Base of the forms PyTorch lacks: adds coupled weight decay, then calls `_update_parameter`."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                if parameter.grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} needs dense gradients")
                gradient = parameter.grad
                if group["weight_decay"] != 0:
                    # coupled L2: g <- g + weight_decay * p (PyTorch / Caffe form)
                    gradient = gradient.add(parameter, alpha=group["weight_decay"])
                self._update_parameter(parameter, gradient, self.state[parameter], group)
        return loss

    def _update_parameter(self, parameter, gradient, state, group):
        raise NotImplementedError


class SutskeverSGD(_ElementwiseOptimizer):
    """SGD with the learning rate inside the velocity (Sutskever 2013, Caffe, cuda-convnet, Keras,
    scikit-learn): v <- momentum*v - lr*g; p <- p + v. Nesterov (Keras / scikit-learn form):
    p <- p + momentum*v - lr*g. A change of lr reaches p only through new gradients, unlike PyTorch."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def _update_parameter(self, parameter, gradient, state, group):
        if not state:
            state["velocity"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        velocity, momentum, lr = state["velocity"], group["momentum"], group["lr"]
        velocity.mul_(momentum).sub_(gradient, alpha=lr)
        if group["nesterov"]:
            parameter.add_(velocity.mul(momentum).sub_(gradient, alpha=lr))
        else:
            parameter.add_(velocity)


class UnitGainSGD(_ElementwiseOptimizer):
    """SGD with unit-gain momentum (CNTK, HIPS autograd): b <- momentum*b + (1-momentum)*g;
    p <- p - lr*b, with b starting at zero. PyTorch's dampening is not this: it skips the
    (1-momentum) factor on the first step."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _update_parameter(self, parameter, gradient, state, group):
        if not state:
            state["momentum_buffer"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        buffer, momentum = state["momentum_buffer"], group["momentum"]
        buffer.mul_(momentum).add_(gradient, alpha=1 - momentum)
        parameter.sub_(buffer, alpha=group["lr"])


class _AdamMoments(_ElementwiseOptimizer):
    """Shared Adam moments: m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2; step counter t."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"Adam betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _advance_moments(self, parameter, gradient, state, group):
        if not state:
            state["step"] = 0  # a Python int: bias corrections are computed on the host
            state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        state["exp_avg"].mul_(beta1).add_(gradient, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        return state["step"], state["exp_avg"], state["exp_avg_sq"]


class EpsilonHatAdam(_AdamMoments):
    """Adam as TF1 / Keras / scikit-learn run it (Kingma & Ba, formula before section 2.1):
    lr_t = lr*sqrt(1-b2^t)/(1-b1^t); p <- p - lr_t*m/(sqrt(v) + eps). Epsilon is "epsilon hat":
    it is added to the uncorrected sqrt(v), so it weighs differently from PyTorch's eps."""

    def _update_parameter(self, parameter, gradient, state, group):
        step, exp_avg, exp_avg_sq = self._advance_moments(parameter, gradient, state, group)
        beta1, beta2 = group["betas"]
        step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        parameter.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size)


class EpsilonInsideSqrtAdam(_AdamMoments):
    """Adam with epsilon inside the square root: p <- p - lr*m_hat/sqrt(v_hat + eps), where
    m_hat = m/(1-b1^t) and v_hat = v/(1-b2^t) are the bias-corrected moments."""

    def _update_parameter(self, parameter, gradient, state, group):
        step, exp_avg, exp_avg_sq = self._advance_moments(parameter, gradient, state, group)
        beta1, beta2 = group["betas"]
        denominator = exp_avg_sq.div(1 - beta2**step).add_(group["eps"]).sqrt_()
        parameter.addcdiv_(exp_avg, denominator, value=-group["lr"] / (1 - beta1**step))


class EpsilonInsideSqrtRMSprop(_ElementwiseOptimizer):
    """RMSprop as TF1's ApplyRMSProp kernel runs it (training_ops.cc):
    ms <- ms + (g^2 - ms)*(1-alpha); mom <- momentum*mom + lr*g/sqrt(ms + eps); p <- p - mom.
    Centered: mg <- mg + (g - mg)*(1-alpha) and the denominator is sqrt(ms - mg^2 + eps).
    ms starts at `initial_square`; TF1's tf.train.RMSPropOptimizer starts it at 1.0, not 0."""

    def __init__(self, params, lr, alpha=0.9, eps=1e-10, momentum=0.0, centered=False,
                 weight_decay=0.0, initial_square=0.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                                      weight_decay=weight_decay, initial_square=initial_square))

    def _update_parameter(self, parameter, gradient, state, group):
        if not state:
            state["mean_square"] = torch.full_like(parameter, group["initial_square"],
                                                   memory_format=torch.preserve_format)
            state["momentum_buffer"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            if group["centered"]:
                state["mean_gradient"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        one_minus_alpha = 1 - group["alpha"]
        mean_square = state["mean_square"]
        mean_square.add_((gradient * gradient - mean_square).mul_(one_minus_alpha))
        denominator = mean_square
        if group["centered"]:
            mean_gradient = state["mean_gradient"]
            mean_gradient.add_((gradient - mean_gradient).mul_(one_minus_alpha))
            denominator = mean_square - mean_gradient * mean_gradient
        denominator = denominator.add(group["eps"]).sqrt_()
        buffer = state["momentum_buffer"]
        buffer.mul_(group["momentum"]).add_(gradient.mul(group["lr"]).div_(denominator))
        parameter.sub_(buffer)


def _decay_weights_decoupled(optimizer, args, kwargs):
    """Step pre-hook: p <- p - coefficient*p for every parameter about to be updated, where the
    coefficient is decoupled_weight_decay, times the current lr for the "decoupled_lr" form."""
    closure = args[1] if len(args) > 1 else kwargs.get("closure")  # args[0] is the optimizer itself
    if closure is not None:
        raise ValueError("decoupled weight decay is applied before step(); call step() without a closure")
    with torch.no_grad():
        for group in optimizer.param_groups:
            coefficient = group.get("decoupled_weight_decay", 0.0)
            if group.get("weight_decay_form") == "decoupled_lr":
                coefficient = group["lr"] * coefficient
            if coefficient == 0:
                continue
            for parameter in group["params"]:
                if parameter.grad is not None:
                    parameter.mul_(1 - coefficient)


def _check_choice(what: str, value: str, allowed: tuple[str, ...], name: str | None = None) -> None:
    if value not in allowed:
        where = f" for {name}" if name else ""
        raise ValueError(f"{what}={value!r} is not allowed{where}; allowed: {', '.join(allowed)}")


def _choose_fused(requested: bool | None, optimizer_class: type, parameters: list) -> bool | None:
    """True to pass fused=True, None to let PyTorch pick foreach or its for-loop."""
    eligible = optimizer_class in _FUSED_CLASSES and all(
        parameter.is_floating_point() and parameter.device.type in _FUSED_DEVICES for parameter in parameters
    )
    if requested and not eligible:
        raise ValueError(
            f"fused=True is not available for {optimizer_class.__name__} on these parameters; fused kernels "
            f"exist for SGD/Adam/AdamW/Adagrad with floating-point parameters on {'/'.join(_FUSED_DEVICES)}; "
            "pass fused=None"
        )
    # fused=False must reach PyTorch as None: its own fused=False forces the slow for-loop
    use_fused = eligible if requested is None else requested
    return True if use_fused else None


def build_optimizer(
    param_groups: list[dict],
    name: str,
    *,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    alpha: float = 0.99,
    rho: float = 0.9,
    centered: bool = False,
    initial_accumulator_value: float = 0.0,
    momentum_form: str = "lr_outside",
    eps_placement: str = "outside",
    weight_decay_form: str = "grad",
    fused: bool | None = None,
    rmsprop_initial_square: float = 0.0,
) -> torch.optim.Optimizer:
    """Build the optimizer that runs `name` in the given forms, natively.

    param_groups: [{"params": [...], "weight_decay": λ}, ...]; λ is 0.0 for groups that must not decay.
    lr: in the units the executed form applies it (the caller converts from the paper's units).
    weight_decay_form: "grad" (g += λp), "decoupled_lr" (p -= lr*λ*p, PyTorch AdamW),
        "decoupled" (p -= λ*p each step, TensorFlow-Addons SGDW/AdamW; not scaled by lr).
    rmsprop_initial_square: starting value of RMSprop's mean square, only for
        eps_placement="inside_sqrt"; TF1's tf.train.RMSPropOptimizer used 1.0.
    fused: None uses PyTorch's fused kernel where it exists for the parameters' device and dtype.
    """
    forms = native_forms(name)
    _check_choice("momentum_form", momentum_form, MOMENTUM_FORMS)
    _check_choice("eps_placement", eps_placement, EPS_PLACEMENTS)
    _check_choice("weight_decay_form", weight_decay_form, WEIGHT_DECAY_FORMS)
    for what, value in (("momentum_form", momentum_form), ("eps_placement", eps_placement),
                        ("weight_decay_form", weight_decay_form)):
        _check_choice(what, value, forms[what], name)
    if not (lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number >= 0, got {lr}")
    if momentum < 0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")
    if momentum != 0 and name not in ("sgd", "rmsprop"):
        raise ValueError(f"{name} has no momentum; momentum is allowed for: sgd, rmsprop")
    if nesterov and (name != "sgd" or momentum == 0):
        raise ValueError("nesterov=True needs name='sgd' and momentum > 0")
    if nesterov and momentum_form == "unit_gain":
        raise ValueError("nesterov is not available with momentum_form='unit_gain'; "
                         "allowed: lr_outside, lr_inside")
    if centered and name != "rmsprop":
        raise ValueError("centered=True applies only to name='rmsprop'")
    if initial_accumulator_value != 0 and name != "adagrad":
        raise ValueError("initial_accumulator_value applies only to name='adagrad'")
    if rmsprop_initial_square != 0 and (name, eps_placement) != ("rmsprop", "inside_sqrt"):
        raise ValueError("rmsprop_initial_square applies only to name='rmsprop' "
                         "with eps_placement='inside_sqrt'")
    if name == "rmsprop" and momentum != 0:
        # PyTorch's RMSprop keeps lr outside its momentum buffer; TF1's kernel keeps it inside.
        expected = "lr_inside" if eps_placement == "inside_sqrt" else "lr_outside"
        _check_choice("momentum_form", momentum_form, (expected,),
                      f"rmsprop with eps_placement={eps_placement!r}")

    groups, parameters = [], []
    # PyTorch's AdamW is the one class whose own weight_decay is the decoupled_lr form.
    native_decoupled = (name in ("adam", "adamw") and eps_placement == "outside"
                        and weight_decay_form == "decoupled_lr")
    for group in param_groups:
        params = group["params"]
        group = dict(group, params=[params] if isinstance(params, torch.Tensor) else list(params))
        decay = float(group.get("weight_decay", 0.0))
        if decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {decay}")
        if weight_decay_form != "grad" and not native_decoupled:
            group["decoupled_weight_decay"], decay = decay, 0.0
        group["weight_decay"] = decay
        group["weight_decay_form"] = weight_decay_form
        groups.append(group)
        parameters.extend(group["params"])

    if name == "sgd" and momentum_form == "lr_outside":
        optimizer_class, options = torch.optim.SGD, dict(momentum=momentum, nesterov=nesterov)
    elif name == "sgd" and momentum_form == "lr_inside":
        optimizer_class, options = SutskeverSGD, dict(momentum=momentum, nesterov=nesterov)
    elif name == "sgd":
        optimizer_class, options = UnitGainSGD, dict(momentum=momentum)
    elif eps_placement == "outside" and name in ("adam", "adamw"):
        optimizer_class = torch.optim.AdamW if native_decoupled else torch.optim.Adam
        options = dict(betas=betas, eps=eps)
    elif name in ("adam", "adamw"):
        optimizer_class = EpsilonHatAdam if eps_placement == "eps_hat" else EpsilonInsideSqrtAdam
        options = dict(betas=betas, eps=eps)
    elif name == "rmsprop" and eps_placement == "outside":
        optimizer_class = torch.optim.RMSprop
        options = dict(alpha=alpha, eps=eps, momentum=momentum, centered=centered)
    elif name == "rmsprop":
        optimizer_class = EpsilonInsideSqrtRMSprop
        options = dict(alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                       initial_square=rmsprop_initial_square)
    elif name == "adagrad":
        optimizer_class = torch.optim.Adagrad
        options = dict(eps=eps, initial_accumulator_value=initial_accumulator_value)
    else:
        optimizer_class, options = torch.optim.Adadelta, dict(rho=rho, eps=eps)

    use_fused = _choose_fused(fused, optimizer_class, parameters)
    if use_fused:
        options["fused"] = True
    optimizer = optimizer_class(groups, lr=lr, **options)
    if weight_decay_form != "grad" and not native_decoupled:
        optimizer.register_step_pre_hook(_decay_weights_decoupled)
    return optimizer
