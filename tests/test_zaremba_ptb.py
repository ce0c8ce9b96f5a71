"""zaremba_ptb_small: main.lua's LSTM, its carried hidden state, its evaluation, its lr decay, and the per-sequence-sum
conversion, each against an oracle (torch's own LSTM cell, one long forward pass, main.lua's loop written out)."""
import math

import pytest
import torch
import torch.nn.functional as F

from dataset_files import PTB_TEXT, write_ptb
from replicate.checkpoint import Interrupted
from replicate.config import compose
from replicate.data import BatchOrder, load_dataset
from replicate.hyperparameters import make_plan
from replicate.language_model import EVALUATION_CHUNK, EpochStates, evaluate_windows
from replicate.schedule import lr_multiplier
from replicate.train import train_seeds
from replicate.zaremba_lstm import ZarembaLSTM, ZarembaLSTMCell

VOCABULARY = 11  # the words of PTB_TEXT
TINY = ["model.input_size=11", "model.output_size=11", "model.hidden_size=16", "logger=none", "train.dtype=float64"]
pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread, as the CLI gives a seed trained alone (conftest)


@pytest.fixture(scope="module")
def ptb_root(tmp_path_factory):
    """PTB_TEXT repeated: 1280 training words (20 rows of 64: 3 windows of 20 per epoch), 440 validation words
    (1 window), 360 test words (more than one evaluation chunk)."""
    root = tmp_path_factory.mktemp("ptb")
    write_ptb(root, {"train": PTB_TEXT["train"] * 80, "valid": PTB_TEXT["valid"] * 40, "test": PTB_TEXT["test"] * 60})
    return root


def tiny_run(ptb_root, *overrides):
    cfg = compose(["paper=zaremba_ptb_small", f"data.root={ptb_root}", *TINY, *overrides])
    data = load_dataset(cfg.data, dtype=torch.float64, device="cpu")
    return cfg, data


def test_cell_is_torchs_lstm_cell_with_main_luas_gate_order():
    """main.lua's gates come as (input, transform, forget, output) along i2h/h2h; torch's LSTMCell as (i, f, g, o)."""
    torch.manual_seed(0)
    cell, reference = ZarembaLSTMCell(6).double(), torch.nn.LSTMCell(6, 6).double()
    order = torch.cat([torch.arange(0, 6), torch.arange(12, 18), torch.arange(6, 12), torch.arange(18, 24)])
    with torch.no_grad():
        reference.weight_ih.copy_(cell.i2h.weight[order])
        reference.bias_ih.copy_(cell.i2h.bias[order])
        reference.weight_hh.copy_(cell.h2h.weight[order])
        reference.bias_hh.copy_(cell.h2h.bias[order])
    x, c, h = torch.randn(3, 4, 6, dtype=torch.float64).unbind(0)
    c_ours, h_ours = cell(x, c, h)
    h_torch, c_torch = reference(x, (h, c))
    assert torch.allclose(c_ours, c_torch, rtol=0, atol=1e-14) and torch.allclose(h_ours, h_torch, rtol=0, atol=1e-14)


def test_every_parameter_starts_uniform_within_init_weight():
    """main.lua line 114: getParameters():uniform(-0.1, 0.1) over every parameter, biases and the embedding included
    (PyTorch's defaults would draw the embedding from N(0, 1) and biases from U(±1/√200))."""
    torch.manual_seed(0)
    model = ZarembaLSTM(1000, 200)
    for name, parameter in model.named_parameters():
        assert parameter.abs().max() <= 0.1, name
        # U(±0.1) has std 0.1/√3 = 0.0577; the smallest tensor (a 800-bias) puts its sample std within ±10 %
        assert abs(parameter.std().item() - 0.1 / math.sqrt(3)) < 0.1 * 0.1 / math.sqrt(3), name


def test_the_state_carried_across_windows_equals_one_long_pass_and_stops_gradients():
    torch.manual_seed(0)
    model = ZarembaLSTM(VOCABULARY, 8).double()
    words = torch.randint(0, VOCABULARY, (3, 10))
    whole = model(words)
    model.reset_state()
    first = model(words[:, :4])
    assert all(s.grad_fn is None for s in model.state)  # the next window cannot backpropagate into this one
    second = model(words[:, 4:])
    assert torch.allclose(torch.cat([first, second], 1), whole, rtol=0, atol=1e-14)
    second.sum().backward()
    # the embedding rows of words that occur only in the first window get no gradient from the second
    only_first = set(words[:, :4].flatten().tolist()) - set(words[:, 4:].flatten().tolist())
    assert only_first and all(model.embedding.weight.grad[word].abs().max() == 0 for word in only_first)


def test_evaluation_is_exp_of_the_mean_per_word_loss_of_each_row_read_straight_through(ptb_root):
    cfg, data = tiny_run(ptb_root)
    torch.manual_seed(0)
    model = ZarembaLSTM(VOCABULARY, 8).double()
    model.state = [torch.ones(20, 8, dtype=torch.float64)] * 4  # a training state, which evaluation must leave alone
    for x, y in ((data.x_valid, data.y_valid), (data.x_test, data.y_test)):
        result = evaluate_windows(model, x, y)
        rows, targets = x.transpose(0, 1).flatten(1), y.transpose(0, 1).flatten(1)  # each row's windows end to end
        fresh = ZarembaLSTM(VOCABULARY, 8).double()
        fresh.load_state_dict(model.state_dict())
        fresh.eval()
        expected = F.cross_entropy(fresh(rows).flatten(0, 1), targets.flatten())
        assert result["loss"].item() == pytest.approx(expected.item(), rel=1e-12)
        assert result["perplexity"].item() == pytest.approx(math.exp(expected.item()), rel=1e-12)
    assert data.x_test.shape == (1, 1, 359) and 359 > EVALUATION_CHUNK  # the test stream as one row, read in chunks
    assert all(torch.equal(s, torch.ones(20, 8, dtype=torch.float64)) for s in model.state) and model.training


def test_each_epoch_after_the_first_starts_from_the_state_validation_ended_in(ptb_root):
    """main.lua `fp` copies start_s into its first state before the wrap zeroes start_s, and run_valid has just left
    its own final state there (lines 157–159, 195–205)."""
    cfg, data = tiny_run(ptb_root)
    torch.manual_seed(0)
    model = ZarembaLSTM(VOCABULARY, 8).double()
    model(data.x_train[:20])
    carried = [s.clone() for s in model.state]
    epochs = EpochStates(model, data, steps_per_epoch=3, steps=6)
    epochs.after_step(2)
    assert all(torch.equal(a, b) for a, b in zip(model.state, carried))  # mid-epoch: the window's own state goes on
    epochs.after_step(3)
    validated = evaluate_windows(model, data.x_valid, data.y_valid)["final_state"]
    assert all(torch.equal(a, b) for a, b in zip(model.state, validated))
    assert not torch.equal(model.state[1], carried[1])
    before_last = [s.clone() for s in model.state]
    epochs.after_step(6)  # the run's last step: no epoch follows, and the final metrics validate once more themselves
    assert all(torch.equal(a, b) for a, b in zip(model.state, before_last))


def test_epoch_decay_is_main_luas_loop():
    """main.lua lines 245–270 written out: bp steps with the current lr; after each epoch's last step, epoch =
    step / epoch_size, and lr = lr / decay when epoch > max_epoch."""
    epoch_size, max_epoch, max_max_epoch, decay = 3, 4, 13, 2.0
    lr, step, epoch, used = 1.0, 0, 0.0, []
    while epoch < max_max_epoch:
        used.append(lr)
        step += 1
        epoch = step / epoch_size
        if step % epoch_size == 0 and epoch > max_epoch:
            lr = lr / decay
    cfg = compose(["paper=zaremba_ptb_small"])
    order = BatchOrder(epoch_size * 20, batch_size=20, order="sequential", seeds=[0])
    assert [lr_multiplier(cfg.schedule, s, len(used), order) for s in range(len(used))] == used
    assert used[-1] == 0.5 ** 8 and len(used) == 13 * epoch_size


def test_a_resumed_run_carries_the_hidden_state_of_an_uninterrupted_one(ptb_root, tmp_path):
    """5 steps straight against 1, a checkpoint (a stop signal), then 4 more in a fresh call: the checkpoint holds the
    state the rows ended step 1 in (a resumed run starting from zeros would differ), and step 3 ends epoch 1."""
    cfg, data = tiny_run(ptb_root, "train.steps=5", "seeds=1")
    plan = make_plan(cfg, n_train=len(data.y_train))
    straight = train_seeds(cfg, data, plan, [0], vectorize=False)[0]
    checkpoint = {"path": tmp_path / "seed0.pt", "every": 2, "fingerprint": "test"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("replicate.train.stop_requested", lambda: "SIGTERM")
        with pytest.raises(Interrupted):
            train_seeds(cfg, data, plan, [0], vectorize=False, checkpoint=checkpoint)
    assert torch.load(checkpoint["path"], weights_only=True)["step"] == 1
    resumed = train_seeds(cfg, data, plan, [0], vectorize=False, checkpoint=checkpoint)[0]
    assert all(torch.equal(resumed.parameters[name], value) for name, value in straight.parameters.items())
    assert resumed.metrics == straight.metrics and math.isfinite(straight.metrics["test_perplexity"])


def test_the_per_sequence_sum_and_its_per_token_mean_conversion_train_the_same_lstm(ptb_root):
    """main.lua's update (lr 1, clip 5, loss summed over the 20 steps) and the executed per-token mean (lr 20, clip
    0.25) from the same start, in float64 over 4 steps that cross an epoch (and a decay: constant_epochs=1). A clip of
    0.5 (0.025 per token) makes the clipping act at every step."""
    settings = ("train.steps=4", "seeds=1", "optimizer.grad_clip=0.5", "schedule.constant_epochs=1")
    cfg, data = tiny_run(ptb_root, *settings)
    native = train_seeds(cfg, data, make_plan(cfg, n_train=len(data.y_train)), [0], vectorize=False)[0]
    cfg, _ = tiny_run(ptb_root, *settings, "train.convention=mean")
    plan = make_plan(cfg, n_train=len(data.y_train))
    assert plan.update.optimizer.lr == pytest.approx(20) and plan.update.grad_clip == pytest.approx(0.025)
    executed = train_seeds(cfg, data, plan, [0], vectorize=False)[0]
    moved = max(float((native.parameters[n] - executed.parameters[n]).abs().max()) for n in native.parameters)
    assert moved < 1e-12


def test_convert_verify_proves_the_entrys_conversion_on_its_own_model():
    """`python -m replicate.convert paper=zaremba_ptb_small to=mean verify=true`: lr 1 → 20 and clip 5 → 0.25, proven
    by training the entry's LSTM both ways (the generic MLP proof is chaotic at this step size)."""
    from replicate.convert import convert_request

    result = convert_request({"paper": "zaremba_ptb_small", "to": "mean", "verify": True, "steps": 10})
    assert result["hparams"]["lr"] == pytest.approx(20) and result["hparams"]["grad_clip"] == pytest.approx(0.25)
    assert result["exact"] and result["verify"]["passed"] and result["verify"]["model"].startswith("zaremba_lstm")


@pytest.mark.parametrize("override, message", [
    ("data.rows=10", "data.rows=10 but train.batch_size=20"),
    ("data.order=shuffle", "data.order=shuffle would take PTB's windows out of order"),
    ("train.accum_steps=2", "share one carried hidden state"),
    ("schedule.constant_epochs=-1", "schedule.constant_epochs must be >= 0"),
])
def test_settings_that_would_break_the_carried_state_are_one_line_errors(override, message):
    from replicate.config import ConfigError
    from replicate.config_checks import check_config

    with pytest.raises(ConfigError, match=message) as error:
        check_config(compose(["paper=zaremba_ptb_small", override]))
    assert "\n" not in str(error.value)


def test_a_vocabulary_the_embedding_does_not_match_is_refused(ptb_root):
    from replicate.config import ConfigError
    from replicate.models import check_model_fits

    cfg = compose(["paper=zaremba_ptb_small", f"data.root={ptb_root}", "model.output_size=11"])
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    with pytest.raises(ConfigError, match="model.input_size=10000 but the vocabulary has 11 words; set model.input_size=11"):
        check_model_fits(cfg, data, n_seeds=1)


@pytest.mark.parametrize("metric, unit, allowed", [("test_perplexity", "nats", "perplexity"), ("test_perplexity", "%", "perplexity"),
                                                   ("test_accuracy", "perplexity", "% or fraction"), ("test_loss", "perplexity", "nats")])
def test_a_claim_states_its_metrics_own_unit(metric, unit, allowed):
    from replicate.config import ConfigError
    from replicate.config_checks import check_config

    with pytest.raises(ConfigError, match=f"metric {metric} is measured in {allowed}, not '{unit}'"):
        check_config(compose(["paper=zaremba_ptb_small", f"paper.claims.0.metric={metric}", f"paper.claims.0.unit={unit}"]))
