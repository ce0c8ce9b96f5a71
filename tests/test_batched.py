"""Seeds trained together equal seeds trained alone; models vmap cannot batch fall back by themselves."""
import pytest
import torch

from conftest import run_in_process
from replicate.config import compose
from replicate.data import load_dataset
from replicate.plan import make_plan
from replicate.runtime import intra_op_threads
from replicate.seeds import can_vectorize
from replicate.train import train_seeds

SEEDS = [0, 1, 2]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread unless a test sets more (the CLI's default for a seed trained alone)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_with_two_threads_for_every_run_seeds_together_agree_with_seeds_alone_to_rounding():
    # runtime.threads=2 gives solo runs two threads too; the BLAS then splits a solo product by its shape
    together, alone = batched_and_alone(LINEAR["sgd momentum, coupled decay, clipping"], "float64", steps=25,
                                        batched_threads=2, alone_threads=2)
    assert largest_abs(together, alone) <= 1e-12


def test_convolutions_under_vmap_agree_to_rounding():
    # vmap batches Conv1d as a grouped convolution, which sums in another order: equal to rounding, not bit for bit
    together, alone = batched_and_alone(["paper=mnist1d_cnn"], "float64", steps=25)
    assert largest_abs(together, alone) <= 1e-12
    together, alone = batched_and_alone(["paper=mnist1d_cnn"], "float32", steps=1)
    assert largest_relative_norm(together, alone) <= 1e-6


def test_models_vmap_cannot_batch_fall_back_to_the_sequential_loop(tmp_path):
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
