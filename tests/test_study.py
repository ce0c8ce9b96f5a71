"""`python -m replicate.study lr_vs_batch`: the sum/mean learning-rate study, on a small grid."""
import json

from conftest import run_command
from replicate.study import final_losses, log_grid


def test_a_small_study_writes_the_best_lr_per_batch_size_and_convention(tmp_path):
    result = run_command(["replicate.study", "lr_vs_batch", "batch_sizes=1,8", "lrs=0.01:1:3", "examples=64",
                          "seeds=2", "format=json", f"dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    study = json.loads(result.stdout)
    assert study == json.loads((tmp_path / "study.json").read_text())
    assert set(study["best_lr"]) == {"mean", "sum"}
    for convention in ("mean", "sum"):
        assert set(study["best_lr"][convention]) == {"1", "8"}
        assert all(lr in (0.01, 0.1, 1.0) for lr in study["best_lr"][convention].values())
        assert all(len(values) == 3 for values in study["final_train_loss"][convention].values())
    assert (tmp_path / "study.png").stat().st_size > 0 and "best learning rate" in (tmp_path / "study.md").read_text()


def test_at_batch_size_one_the_sum_and_the_mean_are_the_same_runs():
    # the study trains batch size 1 once for both conventions; that is only right if they are identical
    settings = dict(batch_size=1, lrs=[0.1, 0.3], examples=20, seeds=[0, 1])
    assert final_losses("mnist1d_mlp", convention="sum", **settings) == final_losses("mnist1d_mlp", convention="mean", **settings)


def test_the_learning_rates_trained_together_equal_each_trained_alone():
    # issue 14: the grid of learning rates is one batched computation; each must be the run alone
    settings = dict(convention="sum", batch_size=8, examples=160, seeds=[0, 1])
    together = final_losses("mnist1d_mlp", lrs=[0.01, 0.1, 1.0], **settings)
    assert together == [final_losses("mnist1d_mlp", lrs=[lr], **settings)[0] for lr in (0.01, 0.1, 1.0)]


def test_bad_options_are_one_line_errors():
    for args, message in [(["lr_vs_batch", "batch_size=4"], "unknown option 'batch_size'"),
                          (["nonsense"], "name a study first"),
                          (["lr_vs_batch", "lrs=1:0.1:3"], "0 < low < high")]:
        result = run_command(["replicate.study", *args])
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_the_learning_rate_grid_is_log_spaced():
    assert log_grid(1e-4, 1e-1, 4) == [1e-4, 1e-3, 1e-2, 1e-1]
