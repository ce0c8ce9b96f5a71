"""The scikit-learn digits example reproduced to every printed digit, through the general config vocabulary."""
import warnings

import pytest

from conftest import run_in_process

PUBLISHED = {  # plot_mlp_training_curves.py output, digits panel: (training set score, training set loss)
    "sklearn_digits_constant": (0.956038, 0.243802),
    "sklearn_digits_momentum": (0.992766, 0.041297),
    "sklearn_digits_nesterov": (0.993879, 0.042898),
}


@pytest.mark.parametrize("paper", sorted(PUBLISHED))
def test_published_scores_and_losses_match_to_six_digits(paper, tmp_path):
    report = run_in_process([f"paper={paper}", "logger=none"], tmp_path)
    score, loss = PUBLISHED[paper]
    by_metric = {claim["metric"]: claim for claim in report["claims"]}
    assert f"{by_metric['train_accuracy']['measured'][0]:.6f}" == f"{score:.6f}"
    assert f"{by_metric['train_epoch_loss']['measured'][0]:.6f}" == f"{loss:.6f}"
    assert all(claim["verdict"]["verdict"] == "REPRODUCED" for claim in report["claims"])


def sklearn_reference(random_state=0, dataset="digits", max_iter=15, **params):
    from sklearn import datasets
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import MinMaxScaler

    data = datasets.load_digits() if dataset == "digits" else datasets.load_iris()
    x = MinMaxScaler().fit_transform(data.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(random_state=random_state, max_iter=max_iter, **params).fit(x, data.target)
    return model.score(x, data.target), model.loss_


@pytest.mark.parametrize("overrides, params", [
    (["paper=sklearn_digits_constant", "schedule.name=invscaling"],
     dict(solver="sgd", learning_rate="invscaling", momentum=0, learning_rate_init=0.2)),
    (["paper=sklearn_digits_momentum", "schedule.name=invscaling"],
     dict(solver="sgd", learning_rate="invscaling", momentum=0.9, nesterovs_momentum=False, learning_rate_init=0.2)),
    (["paper=sklearn_digits_nesterov", "schedule.name=invscaling"],
     dict(solver="sgd", learning_rate="invscaling", momentum=0.9, nesterovs_momentum=True, learning_rate_init=0.2)),
    (["paper=sklearn_digits_constant", "optimizer.name=adam", "optimizer.lr=0.01"],
     dict(solver="adam", learning_rate_init=0.01)),
    (["paper=sklearn_digits_momentum", "train.batch_size=64", "optimizer.weight_decay=0.01", "seed=3"],
     dict(solver="sgd", learning_rate="constant", momentum=0.9, nesterovs_momentum=False, learning_rate_init=0.2,
          batch_size=64, alpha=0.01)),
])
def test_other_settings_by_config_alone_give_scikit_learns_own_numbers(overrides, params, tmp_path):
    report = run_in_process([*overrides, "logger=none"], tmp_path)
    seed = report["seeds"][0]["seed"]
    score, loss = sklearn_reference(random_state=seed, **params)
    metrics = report["seeds"][0]["metrics"]
    assert metrics["train_accuracy"] == pytest.approx(score, abs=1e-9)
    assert metrics["train_epoch_loss"] == pytest.approx(loss, abs=1e-9)


@pytest.mark.parametrize("nesterov", [False, True])
def test_the_iris_entry_under_either_momentum_gives_scikit_learns_own_numbers(nesterov, tmp_path):
    # both readings of sklearn_iris_invscaling_momentum's open question, against live scikit-learn
    report = run_in_process(["paper=sklearn_iris_invscaling_momentum", f"optimizer.nesterov={str(nesterov).lower()}",
                             "logger=none"], tmp_path)
    score, loss = sklearn_reference(dataset="iris", max_iter=400, solver="sgd", learning_rate="invscaling",
                                    momentum=0.9, nesterovs_momentum=nesterov, learning_rate_init=0.2)
    metrics = report["seeds"][0]["metrics"]
    assert metrics["train_accuracy"] == pytest.approx(score, abs=1e-9)
    assert metrics["train_epoch_loss"] == pytest.approx(loss, abs=1e-9)
