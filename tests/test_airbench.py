"""airbench94's pieces, each against the original's formula or a hand computation: label smoothing, test-time
augmentation, lookahead, the whitening layer, freezing; and the whole update (summed smoothed loss, lr and weight
decay per 1024 examples, Nesterov, the schedule, lookahead, the frozen whitening bias) against a loop written as
KellerJordan/cifar10-airbench legacy/airbench94.py (at f1c599c, lines 350–436) runs it."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dataset_files import write_cifar10
from replicate.airbench import Airbench94Net, whitening_weight
from replicate.config import ConfigError, compose
from replicate.config_checks import check_config
from replicate.data import load_dataset
from replicate.hyperparameters import make_plan
from replicate.lookahead import Lookahead
from replicate.loss import per_example_loss, reduce_loss
from replicate.models import build_model
from replicate.train import seed_stack, train_seeds
from replicate.tta import tta_logits


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_label_smoothing_is_pytorchs_in_every_reduction(reduction):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 5, generator=generator, dtype=torch.float64)  # (n_seeds, batch, classes)
    targets = torch.randint(0, 5, (2, 7), generator=generator)
    losses = per_example_loss(logits, targets, 0.2)
    log_p = logits.log_softmax(-1)
    by_hand = 0.8 * -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1) + 0.2 * -log_p.mean(-1)
    torch.testing.assert_close(losses, by_hand, rtol=1e-14, atol=0)  # float64: the two orders of the sum agree to ~1e-16
    for m in range(2):
        pytorch = F.cross_entropy(logits[m], targets[m], label_smoothing=0.2, reduction=reduction)
        torch.testing.assert_close(reduce_loss(losses, reduction, 7)[m], pytorch, rtol=1e-14, atol=0)
    assert not torch.allclose(losses, per_example_loss(logits, targets))  # ε = 0 is plain cross-entropy


def reflect(index: int, size: int) -> int:
    """The pixel a 1-pixel reflect pad shows at `index` (−1 → 1, size → size − 2)."""
    return -index if index < 0 else 2 * (size - 1) - index if index >= size else index


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., i, j] = images[..., i + dy, j + dx], reflected at the borders."""
    h, w = images.shape[-2:]
    rows = torch.tensor([reflect(i + dy, h) for i in range(h)])
    columns = torch.tensor([reflect(j + dx, w) for j in range(w)])
    return images[..., rows, :][..., columns]


def test_tta_weights_six_views_as_airbench_level_2():
    """tta_level 2 (lines 323–334): x and its mirror ¼ each; the four mirrored/shifted views ⅛ each."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 2, 6, 5, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 2 * 6 * 5, generator=generator, dtype=torch.float64)

    def forward(x):  # position-dependent and nonlinear: every view gives different logits
        return torch.tanh(x.flatten(1) @ weight.T)

    views = [images, images.flip(-1)] + [v for s in (-1, 1) for v in (shifted(images, s, s), shifted(images, s, s).flip(-1))]
    expected = 0.25 * (forward(views[0]) + forward(views[1])) + 0.125 * sum(forward(v) for v in views[2:])
    torch.testing.assert_close(tta_logits(forward, images, "flip_translate"), expected, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(tta_logits(forward, images, "flip"), 0.5 * (forward(views[0]) + forward(views[1])),
                               rtol=1e-14, atol=1e-15)
    assert torch.equal(tta_logits(forward, images, "none"), forward(images))


def test_lookahead_decays_as_airbenchs_alpha_schedule():
    """alpha_schedule = 0.95**5 * (torch.arange(T+1) / T)**3 (line 392), the float32 numbers airbench uses."""
    steps = 476
    alpha = 0.95 ** 5 * (torch.arange(steps + 1) / steps) ** 3
    lookahead = Lookahead({}, every=5, base=0.95, power=3.0, steps=steps)
    assert [lookahead.decay(t) for t in range(steps + 1)] == alpha.tolist()


def test_whitening_weight_whitens_the_patches():
    """The 2×2 patches pass through the weight's first half with covariance ≈ identity: eigenvalue/(eigenvalue + eps)."""
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(40, 3, 8, 8, generator=generator, dtype=torch.float64)
    images[:, 1] += 0.7 * images[:, 0]  # correlated channels: the whitening is not the identity
    weight = whitening_weight(images, 2, 5e-4)
    assert weight.shape == (24, 3, 2, 2) and torch.equal(weight[12:], -weight[:12])
    outputs = F.conv2d(images, weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    torch.testing.assert_close(outputs.T @ outputs / len(outputs), torch.diag(eigenvalues / (eigenvalues + 5e-4)),
                               rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root, per_batch=6, n_test=4)  # 30 training images: 5 steps of 6 per epoch
    return root


def compose_small(root, *overrides):
    """airbench94 on the tiny files: batch 6 (5 steps per epoch), float32, no augmentation (its draws are tested in
    test_augment.py), the whitening bias frozen after 1 epoch; 8 steps with lookahead every 4, so that its pulls (4, 8)
    keep steps of both epochs (at every 5, the final pull would return to step 5's weights and drop steps 6–8). The
    warmup knot at int(8·0.23)/8 = 1/8, where get_lr puts it for 8 steps (the config's is 109/476, for 476)."""
    return compose(["paper=airbench94", f"data.root={root}", "train.batch_size=6", "train.steps=8", "lookahead.every=4",
                    "schedule.knots=[0.0,0.125,1.0]",
                    "augment.flip=false", "augment.flip_alternating=false", "augment.crop_padding=0", "train.freeze.0.after_epochs=1", "seeds=1",
                    "logger=none", "train.tta=none", *overrides])


def airbench_loop(model, data, order, steps, *, freeze_after_epochs, lookahead_every=4):
    """The update as legacy/airbench94.py main() runs it (lines 352–436)."""
    batch_size, momentum = 6, 0.85
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = 11.5 / kilostep_scale
    wd = 0.0153 * batch_size / kilostep_scale
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")
    lr_biases = lr * 64.0  # bias_scaler
    norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
    param_configs = [dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                     dict(params=other_params, lr=lr, weight_decay=wd / lr)]
    optimizer = torch.optim.SGD(param_configs, momentum=momentum, nesterov=True)

    def get_lr(step):
        warmup_steps = int(steps * 0.23)
        if step < warmup_steps:
            frac = step / warmup_steps
            return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warmup_steps) / (steps - warmup_steps)
        return 1.0 * (1 - frac) + 0.07 * frac

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)
    alpha_schedule = 0.95 ** lookahead_every * (torch.arange(steps + 1) / steps) ** 3  # airbench: 0.95**5, every 5
    ema = {k: v.clone() for k, v in model.state_dict().items()}

    def lookahead(decay):
        for ema_param, net_param in zip(ema.values(), model.state_dict().values()):
            if net_param.dtype in (torch.half, torch.float):
                ema_param.lerp_(net_param, 1 - decay)
                net_param.copy_(ema_param)

    model.train()
    for step in range(steps):
        model.whiten_bias.requires_grad = step // order.steps_per_epoch < freeze_after_epochs
        indices = order.indices(step)[0]
        loss = loss_fn(model(data.x_train[indices]), data.y_train[indices]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (step + 1) % lookahead_every == 0:  # airbench: 5
            lookahead(alpha_schedule[step + 1].item())
    if lookahead_every <= steps:
        lookahead(1.0)
    return {name: p.detach() for name, p in model.named_parameters()}


def test_the_trainer_runs_airbenchs_update(cifar_root, one_thread):
    """Eight steps of our trainer against the loop airbench runs, from the same initialisation, whitening and batches.
    What may differ is the rounding of the double scalars (np.interp's knots against get_lr's fractions, the
    conventions' factors against 1024·(1 + 1/(1 − μ))) before float32 kernels use them: a few float32 ulps at most
    (measured here: bit-identical). A wrong piece moves parameters by far more: training the whitening bias one
    epoch longer moves them by ~8 % of their largest magnitude (the control below), dropping the BatchNorm biases'
    lr × 64 (optimizer.param_groups) by ~98 %."""
    cfg = compose_small(cifar_root)
    check_config(cfg)
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    ours = train_seeds(cfg, data, plan, [0], vectorize=False)[0].parameters
    stack, order = seed_stack(cfg, data, [0], vectorize=False)  # the same init, whitening and batch order
    for freeze_after, agrees in ((1, True), (2, False)):
        theirs = airbench_loop(copy.deepcopy(stack.module), data, copy.deepcopy(order), 8, freeze_after_epochs=freeze_after)
        relative = max(((ours[name] - theirs[name]).abs().max() / theirs[name].abs().max()).item() for name in theirs)
        assert (relative < 1e-6) == agrees, relative  # 1e-6: ~8 float32 ulps


def test_a_resumed_airbench_run_equals_an_uninterrupted_one(cifar_root, tmp_path, one_thread):
    """A stop after step 6 (past the freeze at 5 and the lookahead pull at 4): the slow weights, the frozen bias and
    BatchNorm's running statistics come back from the checkpoint, so the last two steps end where 8 straight steps do."""
    from replicate.checkpoint import Interrupted

    cfg = compose_small(cifar_root)
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    straight = train_seeds(cfg, data, plan, [0], vectorize=False)[0]
    checkpoint = {"path": tmp_path / "seed0.pt", "every": 6, "fingerprint": "test"}
    with pytest.MonkeyPatch.context() as patch:
        stops = iter([None] * 5 + ["SIGTERM"] * 10)
        patch.setattr("replicate.train.stop_requested", lambda: next(stops))
        with pytest.raises(Interrupted):
            train_seeds(cfg, data, plan, [0], vectorize=False, checkpoint=checkpoint)
    resumed = train_seeds(cfg, data, plan, [0], vectorize=False, checkpoint=checkpoint)[0]
    assert all(torch.equal(resumed.parameters[name], value) for name, value in straight.parameters.items())
    assert resumed.metrics == straight.metrics  # evaluation uses the running statistics too


def test_bad_airbench_settings_are_one_line_errors(cifar_root):
    for override, message in (("train.label_smoothing=1.5", "train.label_smoothing must be in"),
                              ("train.tta=mirror", "train.tta"), ("lookahead.every=-1", "lookahead.every"),
                              ("train.freeze.0.after_epochs=-2", "after_epochs"),
                              ("augment.flip=false", "needs augment.flip=true")):
        with pytest.raises(ConfigError, match=message) as error:
            check_config(compose(["paper=airbench94", override]))
        assert "\n" not in str(error.value)
    cfg = compose_small(cifar_root, "train.freeze.0.parameter=whiten.bias")
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    with pytest.raises(ConfigError, match="not a trained parameter of this model; allowed: whiten_bias"):
        train_seeds(cfg, data, make_plan(cfg, n_train=len(data.y_train)), [0], vectorize=False)


def test_airbench_net_is_the_sources_shape():
    """Parameters only where the source trains: the whitening weight and BatchNorm weights are fixed buffers."""
    torch.manual_seed(0)
    model = Airbench94Net()
    trained = dict(model.named_parameters())
    assert sum(p.numel() for p in trained.values()) == 24 + 24 * 64 * 9 + 64 * 64 * 9 + 64 * 256 * 9 + 256 * 256 * 9 * 3 + 2 * (64 + 256 + 256) + 2560
    assert "whiten_weight" in dict(model.named_buffers()) and "block1.norm1.weight" in dict(model.named_buffers())
    conv = model.block1.conv2.weight  # dirac-initialised: the identity on its 64 input channels
    assert torch.equal(conv[:, :, 1, 1], torch.eye(64)) and conv[:, :, 0].abs().sum() == 0
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10) and not math.isnan(model.block1.norm1.eps) and model.block1.norm1.momentum == pytest.approx(0.4)


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    """airbench's flip (lines 131–147): a random half mirrored at first, then every image's orientation alternates
    by epoch; each seed draws its own first half, from the seed alone (a resumed run draws the same)."""
    from replicate.augment import alternating_flips, augment_seeds, flip_orientations
    from replicate.config import AugmentConfig

    n = 1000
    everything = torch.arange(n).expand(2, n)
    first = flip_orientations([0, 1], n, "cpu")
    epochs = [alternating_flips(first, everything, epoch) for epoch in range(3)]
    assert torch.equal(epochs[0] ^ epochs[1], torch.ones(2, n, dtype=torch.bool)) and torch.equal(epochs[0], epochs[2])
    assert abs(epochs[0][0].float().mean().item() - 0.5) < 0.05  # 1000 coins: 0.5 ± 0.016 (1 sd)
    assert not torch.equal(epochs[0][0], epochs[0][1])  # each seed its own
    batch = torch.tensor([[5, 7, 11], [5, 7, 11]])
    assert torch.equal(alternating_flips(first, batch, 1), epochs[1][:, [5, 7, 11]])  # by training-set index
    assert torch.equal(flip_orientations([1], n, "cpu")[0], first[1])  # each seed's coins from the seed alone
    images = torch.randn(2, 3, 1, 2, 2)
    flips = alternating_flips(first, batch, 0)
    mirrored = augment_seeds(images, AugmentConfig(flip=True, flip_alternating=True), [0, 1], step=3, flips=flips)
    assert torch.equal(mirrored, torch.where(flips[..., None, None, None], images.flip(-1), images))


def test_smoothing_lookahead_and_freezing_keep_batched_seeds_bit_for_bit_their_runs_alone(one_thread):
    """The features on a model whose seeds train together (seed-stacked linear layers): each seed's parameters are
    exactly those of training it alone, the slow weights, the frozen bias and the smoothed loss included."""
    cfg = compose(["paper=mnist1d_mlp", "train.steps=12", "train.label_smoothing=0.1", "lookahead.every=3",
                   "train.freeze=[{parameter:linear1.bias,after_epochs:0}]", "logger=none"])
    data = load_dataset(cfg.data, dtype=torch.float32, device="cpu")
    plan = make_plan(cfg, n_train=len(data.y_train))
    together = train_seeds(cfg, data, plan, [0, 1], vectorize=True)
    alone = [train_seeds(cfg, data, plan, [seed], vectorize=False)[0] for seed in (0, 1)]
    assert [result.path for result in together] == ["batched", "batched"]
    for batched, single in zip(together, alone):
        assert all(torch.equal(batched.parameters[name], value) for name, value in single.parameters.items())
    torch.manual_seed(0)  # the seed's init, as replicate.seed_stack draws it: the frozen bias never moved
    assert torch.equal(alone[0].parameters["linear1.bias"], build_model(cfg.model).linear1.bias.detach())
