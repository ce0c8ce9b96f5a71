"""Seeds trained together equal seeds trained alone; models vmap cannot batch fall back by themselves."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_in_process
from replicate import models
from replicate.config import compose
from replicate.data import load_dataset
from replicate.hyperparameters import make_plan
from replicate.cpu import intra_op_threads
from replicate.seed_stack import SeedStack, can_vectorize
from replicate.train import train_seeds

SEEDS = [0, 1, 2]


pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread unless a test sets more (conftest)


# what the CLI gives SEEDS trained together here: one thread per seed, up to the cores available
DEFAULT_BATCHED_THREADS = intra_op_threads(None, batched_seeds=len(SEEDS), device=torch.device("cpu"))


def batched_and_alone(overrides, dtype, steps, batched_threads=1, alone_threads=1):
    """SEEDS trained together with `batched_threads` intra-op threads, then each alone with `alone_threads`."""
    cfg = compose([*overrides, f"train.dtype={dtype}", f"train.steps={steps}"])
    data = load_dataset(cfg.data, dtype=getattr(torch, dtype), device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    torch.set_num_threads(batched_threads)
    together = train_seeds(cfg, data, plan, SEEDS, vectorize=True)
    torch.set_num_threads(alone_threads)
    alone = [train_seeds(cfg, data, plan, [seed], vectorize=False)[0] for seed in SEEDS]
    assert [result.path for result in together] == ["batched"] * 3
    return together, alone


def largest_abs(together, alone):
    return max(float((a.parameters[n] - b.parameters[n]).abs().max()) for a, b in zip(together, alone) for n in a.parameters)


def largest_relative_norm(together, alone):
    return max(float((a.parameters[n] - b.parameters[n]).norm() / b.parameters[n].norm())
               for a, b in zip(together, alone) for n in a.parameters)


# models of Linear layers and elementwise ops: batched by seed-stacked linear layers, bit for bit
LINEAR = {
    "adam": ["paper=mnist1d_mlp"],
    "adam, sum convention": ["paper=mnist1d_mlp", "train.convention=sum"],  # Σ over seeds of each seed's sum
    "logistic, shuffled batches": ["paper=mnist1d_logistic", "data.order=shuffle"],
    "sgd lr-inside momentum, per-batch L2": ["paper=sklearn_digits_momentum"],
    "sgd momentum, coupled decay, clipping": ["paper=mnist1d_mlp", "optimizer.name=sgd", "optimizer.lr=0.05",
                                              "optimizer.momentum=0.9", "optimizer.weight_decay=1e-3",
                                              "optimizer.grad_clip=0.5"],
    "adamw, decoupled decay on weights only": ["paper=mnist1d_mlp", "optimizer.name=adamw", "optimizer.weight_decay=0.01",
                                               "optimizer.decay_biases=false", "conventions.weight_decay_form=decoupled_lr"],
}


def identical(together, alone):
    return all(torch.equal(a.parameters[name], b.parameters[name]) for a, b in zip(together, alone) for name in a.parameters) \
        and all(a.metrics == b.metrics and a.curve == b.curve for a, b in zip(together, alone))


@pytest.mark.parametrize("batched_threads", sorted({1, DEFAULT_BATCHED_THREADS}))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("setup", LINEAR)
def test_seeds_together_are_bit_for_bit_the_seeds_alone(setup, dtype, batched_threads):
    # float32 too, and over enough steps for Adam to magnify any 1-ulp difference into a visible one;
    # together at one thread and at the CLI's default for batched seeds, alone at one (its default)
    together, alone = batched_and_alone(LINEAR[setup], dtype, steps=60, batched_threads=batched_threads)
    assert identical(together, alone), largest_abs(together, alone)


@pytest.mark.slow  # the CLI's default thread counts are covered bit for bit above; this is the non-default case
def test_with_two_threads_for_every_run_seeds_together_agree_with_seeds_alone_to_rounding():
    # runtime.threads=2 gives solo runs two threads too; the BLAS then splits a solo product by its shape
    together, alone = batched_and_alone(LINEAR["sgd momentum, coupled decay, clipping"], "float64", steps=25,
                                        batched_threads=2, alone_threads=2)
    assert largest_abs(together, alone) <= 1e-12


def test_convolutions_under_vmap_agree_to_rounding():
    # vmap batches Conv1d as a grouped convolution, which sums in another order: equal to rounding, not bit for bit
    together, alone = batched_and_alone(["paper=mnist1d_cnn"], "float64", steps=25)
    assert largest_abs(together, alone) <= 1e-12
    # float32: logits and gradients at initialisation, each within the rounding bound that any summation
    # order obeys (a constant tolerance passed on AVX2 and failed on AVX-512 hosts, whose kernels sum otherwise)
    cfg = compose(["paper=mnist1d_cnn"])
    alone = [SeedStack(cfg.model, [seed], dtype=torch.float32, device="cpu", vectorize=False) for seed in SEEDS]
    candidates = load_dataset(cfg.data, dtype=torch.float32, device="cpu").x_train[:2 * cfg.train.batch_size]
    decided = torch.stack([RoundingBound(seed.module, candidates).decided for seed in alone]).all(dim=0)
    x = candidates[decided][:cfg.train.batch_size]  # examples on which rounding can flip no ReLU of any seed
    assert len(x) == cfg.train.batch_size
    probe = torch.randn(len(SEEDS), len(x), cfg.model.output_size, generator=torch.Generator().manual_seed(0))
    together = SeedStack(cfg.model, SEEDS, dtype=torch.float32, device="cpu")
    logits = together(x.expand(len(SEEDS), *x.shape))
    (logits * probe).sum().backward()
    for index, seed in enumerate(alone):
        alone_logits = seed(x.unsqueeze(0))[0]
        (alone_logits * probe[index]).sum().backward()
        bound = RoundingBound(seed.module, x)
        assert ((logits[index] - alone_logits).abs() <= 2 * bound.logits).all()
        gradient_bounds = bound.gradients(probe[index])
        for name, leaf in seed.leaves.items():
            difference = together.leaves[name].grad[index] - leaf.grad
            assert (difference.abs() <= 2 * gradient_bounds[name]).all(), name


def gamma(n: int) -> float:
    """Higham's γ(n) = n·u / (1 − n·u) for float32 (u = 2⁻²⁴): the relative error bound of a sum of n products."""
    return n * 2.0 ** -24 / (1 - n * 2.0 ** -24)


class RoundingBound:
    """First-order bounds on the float32 rounding error of a ReLU network's logits, and of the gradients
    of a probe loss Σ probe · logits, that hold for every summation order. A sum of n products carries
    at most γ(n) times the sum of the products' magnitudes (Higham, Accuracy and Stability of Numerical
    Algorithms, §3.1). An error made in one layer reaches the logits multiplied by at most the later
    layers' |W| (ReLU is 1-Lipschitz), so the logits are off by at most Σγ · A, A the network run on |x|
    with |W| and |b|, Σγ over each layer's accumulation length (inputs × kernel + 1). A gradient is off by
    at most Σγ' times the gradient of Σ |probe| · A with respect to |W| and |b|, Σγ' adding the backward
    sums (outputs × kernel per input gradient, the largest batch × positions per parameter gradient).
    Two orders differ by at most twice the bound. It holds where rounding flips no ReLU: `decided` says,
    per example, whether every pre-activation is farther from zero than its own bound."""

    def __init__(self, model, x):
        import copy

        self.absolute, exact = copy.deepcopy(model).double(), copy.deepcopy(model).double()  # float32 → float64 is exact
        with torch.no_grad():
            for parameter in self.absolute.parameters():
                parameter.abs_()
        outputs = {}
        for key, net in (("absolute", self.absolute), ("exact", exact)):
            outputs[key] = []
            for layer in weighted_layers(net):
                layer.register_forward_hook(lambda module, inputs, output, key=key: outputs[key].append(output))
        self.magnitudes = self.absolute(x.double().abs())
        with torch.no_grad():
            exact(x.double())
        layers = weighted_layers(model)
        kernels = [layer.weight.shape[2] if layer.weight.dim() == 3 else 1 for layer in layers]
        forward = [gamma(layer.weight.shape[1] * kernel + 1) for layer, kernel in zip(layers, kernels)]
        backward = [gamma(layer.weight.shape[0] * kernel) for layer, kernel in zip(layers[1:], kernels[1:])]
        positions = [output[0].numel() // output.shape[1] for output in outputs["exact"]]
        self.logits = (sum(forward) * self.magnitudes).float()
        self.total = sum(forward) + sum(backward) + max(gamma(len(x) * count) for count in positions)
        self.decided = torch.stack([(z.abs() > sum(forward[:k + 1]) * a).flatten(1).all(dim=1) for k, (z, a)
                                    in enumerate(zip(outputs["exact"][:-1], outputs["absolute"][:-1]))]).all(dim=0)

    def gradients(self, probe) -> dict:
        """Per parameter, the bound on the error of the probe loss's gradient."""
        self.absolute.zero_grad()
        (self.magnitudes * probe.double().abs()).sum().backward(retain_graph=True)
        return {name: (self.total * p.grad).float() for name, p in self.absolute.named_parameters()}


def weighted_layers(model) -> list:
    return [module for module in model.modules() if isinstance(module, (torch.nn.Conv1d, torch.nn.Linear))]


def test_models_vmap_cannot_batch_fall_back_to_the_sequential_loop(tmp_path, monkeypatch):
    # a two-layer GRU: SeedGRU transcribes one layer, and aten::gru has no vmap rule
    monkeypatch.setattr(models, "BidirectionalGRU", TwoLayerGRU)
    cfg = compose(["paper=mnist1d_gru"])
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    assert not can_vectorize(cfg.model, data, torch.float32)
    report = run_in_process(["paper=mnist1d_gru", "seeds=2", "train.steps=2", "logger=none"], tmp_path)
    assert report["training_path"] == "sequential"
    assert "training path: sequential" in (tmp_path / "report.md").read_text()


def test_progress_counts_one_per_seed_per_step_on_both_paths():
    """The CLI's bar has steps × seeds in total; a batched step advances it by the number of seeds."""
    import io

    from tqdm import tqdm

    cfg = compose(["paper=mnist1d_mlp", "train.steps=12"])
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    for vectorize, seeds in ((True, SEEDS), (False, [0])):
        bar = tqdm(total=12 * len(seeds), file=io.StringIO())
        train_seeds(cfg, data, plan, seeds, vectorize=vectorize, progress=bar)
        assert bar.n == 12 * len(seeds), (vectorize, bar.n)


class TwoLayerGRU(models.BidirectionalGRU):
    """The catalog's GRU model with a second GRU layer: a model that neither SeedGRU nor vmap batches."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gru = torch.nn.GRU(1, self.gru.hidden_size, num_layers=2, batch_first=True, bidirectional=self.gru.bidirectional)


GRU = ["paper=mnist1d_gru", "train.eval_every=2"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gru_seeds_together_are_bit_for_bit_the_seeds_alone(dtype):
    # SeedGRU runs aten's GRU cell with a seed axis: same products, same elementwise steps, same order of
    # gradient accumulation; Adam over 8 steps would magnify any 1-ulp difference in a gradient. Together
    # at the CLI's thread count for a recurrent model's batched seeds (one), alone at one.
    threads = intra_op_threads(None, batched_seeds=len(SEEDS), device=torch.device("cpu"), recurrent=True)
    together, alone = batched_and_alone(GRU, dtype, steps=8, batched_threads=threads)
    assert identical(together, alone), largest_abs(together, alone)


def test_a_one_directional_gru_batches_bit_for_bit_too():
    together, alone = batched_and_alone([*GRU, "model.bidirectional=false"], "float32", steps=8)
    assert identical(together, alone), largest_abs(together, alone)


# outputs, gradients of every parameter and outputs under no_grad (the evaluation), per seed, of the stacked
# model and of each seed's own model; prints the count of elements that differ
GRADIENTS_AGREE = """
import torch
from replicate.models import BidirectionalGRU
from replicate.seed_stack import StackedModel
differing = 0
for dtype in (torch.float32, torch.float64):
    for bidirectional in (True, False):
        models = []
        for seed in range(3):
            torch.manual_seed(seed)
            models.append(BidirectionalGRU(40, 10, 6, bidirectional).to(dtype))
        stacked = StackedModel(models)
        x = torch.randn(3, 32, 40, dtype=dtype)
        together = stacked(x)
        together.square().sum().backward()
        with torch.no_grad():
            evaluated = stacked(x[0].expand(3, 32, 40))
        for index, model in enumerate(models):
            alone = model(x[index])
            alone.square().sum().backward()
            differing += int((alone != together[index]).sum())
            differing += sum(int((p.grad != stacked.body.get_parameter(name).grad[index]).sum())
                             for name, p in model.named_parameters())
            with torch.no_grad():
                differing += int((model(x[0]) != evaluated[index]).sum())
print(differing)
"""


@pytest.mark.parametrize("capability", ["avx2", "native"])
def test_gru_outputs_and_gradients_equal_each_seeds_own_nn_gru(capability):
    # AVX2: the kernels of the machine that made the committed records; native: this machine's own (AVX-512
    # here). ATen picks its kernels when torch loads, hence a fresh interpreter for each.
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    environment.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "native":
        environment["ATEN_CPU_CAPABILITY"] = capability
    completed = subprocess.run([sys.executable, "-c", GRADIENTS_AGREE], env=environment, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["0"]
