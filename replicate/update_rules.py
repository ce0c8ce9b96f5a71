"""The update rules replicate.optim.Optimizer steps, one function per original form:
rule(optimizer, group, params) updates `params` (those of `group` with a gradient) in place and keeps
each parameter's state in optimizer.state[param].

PyTorch's forms call torch.optim's own update functions (the very code, fused kernels included, that its
classes call, with the same state); the forms PyTorch lacks are small elementwise rules here. Every rule
is elementwise, so a stacked parameter of shape (n_seeds, ...) trains each seed exactly as if alone.
"""

import math

import torch
from torch.optim.adadelta import adadelta as pytorch_adadelta
from torch.optim.adagrad import adagrad as pytorch_adagrad
from torch.optim.adam import adam as pytorch_adam
from torch.optim.adamw import adamw as pytorch_adamw
from torch.optim.rmsprop import rmsprop as pytorch_rmsprop
from torch.optim.sgd import sgd as pytorch_sgd


# --- PyTorch's forms: torch.optim's update functions, with the state its classes keep ---------------


def _step_counter(parameter: torch.Tensor, fused: bool) -> torch.Tensor:
    """A zero step counter where PyTorch's classes keep it: on the device in float32 for fused kernels,
    else a host scalar in the default dtype's precision."""
    if fused:
        return torch.zeros((), dtype=torch.float32, device=parameter.device)
    return torch.zeros((), dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32)


def _state(optimizer, params: list, initial: dict) -> list[dict]:
    """Each parameter's state, created from initial[key](parameter) the first time."""
    states = []
    for parameter in params:
        state = optimizer.state[parameter]
        if not state:
            state.update({key: make(parameter) for key, make in initial.items()})
        states.append(state)
    return states


def _fused(group: dict) -> dict:
    """fused=True for the update function where the group uses the fused kernel; otherwise nothing, so the
    call leaves the choice (foreach or for-loop) to PyTorch as its classes do."""
    return {"fused": True} if group.get("fused") else {}


def _zeros(parameter):
    return torch.zeros_like(parameter, memory_format=torch.preserve_format)


def pytorch_sgd_rule(optimizer, group, params):
    """torch.optim.SGD: b <- momentum*b + g (b = g on the first step); p <- p - lr*b (or g + momentum*b, Nesterov)."""
    momentum = group["momentum"]
    buffers = [optimizer.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
    pytorch_sgd(params, [p.grad for p in params], buffers, foreach=group["foreach"], **_fused(group),
                weight_decay=group["weight_decay"], momentum=momentum, lr=group["lr"], dampening=0.0,
                nesterov=group["nesterov"], maximize=False)
    for parameter, buffer in zip(params, buffers):  # the update function creates the buffers on the first step
        optimizer.state[parameter]["momentum_buffer"] = buffer


def pytorch_adam_rule(optimizer, group, params):
    """torch.optim.Adam, and AdamW when group["decoupled"]: lr*m_hat/(sqrt(v_hat) + eps)."""
    states = _state(optimizer, params, {"step": lambda p: _step_counter(p, bool(group["fused"])),
                                        "exp_avg": _zeros, "exp_avg_sq": _zeros})
    beta1, beta2 = group["betas"]
    update = pytorch_adamw if group["decoupled"] else pytorch_adam  # torch.optim.AdamW's function, or Adam's
    update(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
           [s["step"] for s in states], foreach=group["foreach"], **_fused(group), amsgrad=False, beta1=beta1, beta2=beta2,
           lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


def pytorch_rmsprop_rule(optimizer, group, params):
    """torch.optim.RMSprop: v <- alpha*v + (1-alpha)*g^2; p <- p - lr*g/(sqrt(v) + eps), momentum outside."""
    initial = {"step": lambda p: _step_counter(p, False), "square_avg": _zeros}
    if group["momentum"] > 0:
        initial["momentum_buffer"] = _zeros
    if group["centered"]:
        initial["grad_avg"] = _zeros
    states = _state(optimizer, params, initial)
    pytorch_rmsprop(params, [p.grad for p in params], [s["square_avg"] for s in states],
                    [s["grad_avg"] for s in states if "grad_avg" in s], [s["momentum_buffer"] for s in states if "momentum_buffer" in s],
                    [s["step"] for s in states], foreach=group["foreach"], lr=group["lr"], alpha=group["alpha"],
                    eps=group["eps"], weight_decay=group["weight_decay"], momentum=group["momentum"],
                    centered=group["centered"])


def pytorch_adagrad_rule(optimizer, group, params):
    """torch.optim.Adagrad: s <- s + g^2; p <- p - lr*g/(sqrt(s) + eps)."""
    start = group["initial_accumulator_value"]
    states = _state(optimizer, params, {
        "step": lambda p: _step_counter(p, bool(group["fused"])),
        "sum": lambda p: torch.full_like(p, start, memory_format=torch.preserve_format)})
    pytorch_adagrad(params, [p.grad for p in params], [s["sum"] for s in states], [s["step"] for s in states],
                    **_fused(group), foreach=group["foreach"], lr=group["lr"], weight_decay=group["weight_decay"],
                    lr_decay=0.0, eps=group["eps"], maximize=False)


def pytorch_adadelta_rule(optimizer, group, params):
    """torch.optim.Adadelta (Zeiler's RMS: sqrt(x + eps))."""
    states = _state(optimizer, params, {"step": lambda p: _step_counter(p, False), "square_avg": _zeros,
                                        "acc_delta": _zeros})
    pytorch_adadelta(params, [p.grad for p in params], [s["square_avg"] for s in states], [s["acc_delta"] for s in states],
                     [s["step"] for s in states], foreach=group["foreach"], lr=group["lr"], rho=group["rho"],
                     eps=group["eps"], weight_decay=group["weight_decay"], maximize=False)


# --- forms PyTorch lacks: elementwise rules of our own --------------------------------------------


def _with_coupled_decay(group, parameter):
    """The gradient plus coupled L2 (PyTorch / Caffe form: g <- g + weight_decay*p)."""
    if group["weight_decay"] != 0:
        return parameter.grad.add(parameter, alpha=group["weight_decay"])
    return parameter.grad


def sutskever_sgd_rule(optimizer, group, params):
    """SGD with the learning rate inside the velocity (Sutskever 2013, Caffe, cuda-convnet, Keras,
    scikit-learn): v <- momentum*v - lr*g; p <- p + v. Nesterov (Keras / scikit-learn form):
    p <- p + momentum*v - lr*g. A change of lr reaches p only through new gradients, unlike PyTorch."""
    momentum, lr = group["momentum"], group["lr"]
    for parameter, state in zip(params, _state(optimizer, params, {"velocity": _zeros})):
        gradient, velocity = _with_coupled_decay(group, parameter), state["velocity"]
        velocity.mul_(momentum).sub_(gradient, alpha=lr)
        if group["nesterov"]:
            parameter.add_(velocity.mul(momentum).sub_(gradient, alpha=lr))
        else:
            parameter.add_(velocity)


def unit_gain_sgd_rule(optimizer, group, params):
    """SGD with unit-gain momentum (CNTK, HIPS autograd): b <- momentum*b + (1-momentum)*g;
    p <- p - lr*b, with b starting at zero. PyTorch's dampening is not this: it skips the
    (1-momentum) factor on the first step."""
    momentum = group["momentum"]
    for parameter, state in zip(params, _state(optimizer, params, {"momentum_buffer": _zeros})):
        buffer = state["momentum_buffer"]
        buffer.mul_(momentum).add_(_with_coupled_decay(group, parameter), alpha=1 - momentum)
        parameter.sub_(buffer, alpha=group["lr"])


def _advance_adam_moments(optimizer, group, params):
    """Shared Adam moments: m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g^2; step counter t (a host int)."""
    beta1, beta2 = group["betas"]
    states = _state(optimizer, params, {"step": lambda p: 0, "exp_avg": _zeros, "exp_avg_sq": _zeros})
    for parameter, state in zip(params, states):
        gradient = _with_coupled_decay(group, parameter)
        state["step"] += 1
        state["exp_avg"].mul_(beta1).add_(gradient, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
    return states


def epsilon_hat_adam_rule(optimizer, group, params):
    """Adam as TF1 / Keras / scikit-learn run it (Kingma & Ba, formula before section 2.1):
    lr_t = lr*sqrt(1-b2^t)/(1-b1^t); p <- p - lr_t*m/(sqrt(v) + eps). Epsilon is "epsilon hat":
    it is added to the uncorrected sqrt(v), so it weighs differently from PyTorch's eps."""
    beta1, beta2 = group["betas"]
    for parameter, state in zip(params, _advance_adam_moments(optimizer, group, params)):
        step = state["step"]
        step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        parameter.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]), value=-step_size)


def epsilon_inside_sqrt_adam_rule(optimizer, group, params):
    """Adam with epsilon inside the square root: p <- p - lr*m_hat/sqrt(v_hat + eps), where
    m_hat = m/(1-b1^t) and v_hat = v/(1-b2^t) are the bias-corrected moments."""
    beta1, beta2 = group["betas"]
    for parameter, state in zip(params, _advance_adam_moments(optimizer, group, params)):
        step = state["step"]
        denominator = state["exp_avg_sq"].div(1 - beta2**step).add_(group["eps"]).sqrt_()
        parameter.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1**step))


def epsilon_inside_sqrt_rmsprop_rule(optimizer, group, params):
    """RMSprop as TF1's ApplyRMSProp kernel runs it (training_ops.cc):
    ms <- ms + (g^2 - ms)*(1-alpha); mom <- momentum*mom + lr*g/sqrt(ms + eps); p <- p - mom.
    Centered: mg <- mg + (g - mg)*(1-alpha) and the denominator is sqrt(ms - mg^2 + eps).
    ms starts at `initial_square`; TF1's tf.train.RMSPropOptimizer starts it at 1.0, not 0."""
    initial = {"mean_square": lambda p: torch.full_like(p, group["initial_square"], memory_format=torch.preserve_format),
               "momentum_buffer": _zeros}
    if group["centered"]:
        initial["mean_gradient"] = _zeros
    one_minus_alpha = 1 - group["alpha"]
    for parameter, state in zip(params, _state(optimizer, params, initial)):
        gradient, mean_square = _with_coupled_decay(group, parameter), state["mean_square"]
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


# the rules that call PyTorch's update functions, and the aten kernels of those with a fused path
PYTORCH_RULES = (pytorch_sgd_rule, pytorch_adam_rule, pytorch_rmsprop_rule, pytorch_adagrad_rule, pytorch_adadelta_rule)
FUSED_KERNELS = {pytorch_sgd_rule: ("_fused_sgd_",), pytorch_adam_rule: ("_fused_adam_", "_fused_adamw_"),
                  pytorch_adagrad_rule: ("_fused_adagrad_",)}
FUSED_RULES = tuple(FUSED_KERNELS)


def has_fused_kernel(rule, device_type: str) -> bool:
    """Whether this torch build has the rule's fused kernels for the device. Asked of the dispatcher, not
    assumed: fused Adagrad, for one, came to CUDA releases after it came to the CPU."""
    return rule in FUSED_KERNELS and all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{kernel}", device_type.upper())
        for kernel in FUSED_KERNELS[rule])
