"""What report.md and curves.png show about a verdict: the title marker, the interval or test used, the curves."""
import math

import matplotlib.pyplot as plt
import pytest

from replicate.report import _interval_and_test, draw_learning_curves, title_marker
from replicate.verdict import judge


def claim(verdict, metric="test_accuracy", split="test", unit="%", claimed=94.0, measured=(93.0, 94.0, 95.0, 94.5)):
    return {"name": metric.replace("_", " "), "metric": metric, "split": split, "unit": unit, "claimed": claimed,
            "tolerance": 0.5, "measured": list(measured), "statistic": "single_run", "verdict": verdict}


def test_the_title_marks_inconclusive_apart_from_not_reproduced():
    word = lambda w: claim({"verdict": w})  # noqa: E731
    assert title_marker([word("REPRODUCED"), word("REPRODUCED")]) == "[Re]"
    assert title_marker([word("REPRODUCED"), word("INCONCLUSIVE")]) == "[?Re]"
    assert title_marker([word("INCONCLUSIVE"), word("NOT_REPRODUCED")]) == "[¬Re]"


def test_the_results_table_names_the_band_and_the_interval_the_verdict_used():
    verdict = judge([93.0, 94.0, 95.0, 94.5], claimed=94.0, tolerance=0.5, statistic="single_run")
    interval, test = _interval_and_test(verdict.details)
    low, high = verdict.details["agreement_band"]
    assert f"agree [{low:.4g}, {high:.4g}]" in interval and "contradict outside" in interval
    assert "one run predicted at" in test and "95% prediction interval" in test


def test_exact_claims_that_match_say_so_instead_of_showing_tiny_offsets():
    verdict = judge([0.9560378408], claimed=0.956038, tolerance=0.0, statistic="exact")
    assert _interval_and_test(verdict.details)[1] == "matches to the printed digits (6 decimals)"
    miss = judge([0.95603851], claimed=0.956038, tolerance=0.0, statistic="exact")
    assert _interval_and_test(miss.details)[1] == "differs at 6 decimals: 0.956039"


def test_claims_on_the_training_split_get_their_curve_and_every_claim_its_verdict_panel():
    values = [0.9560378408]
    report = {"paper": {"id": "demo"},
              "seeds": [{"seed": 0, "curve": [{"step": s, "train_loss": 1.0 / s, "train_accuracy": 0.5 + 0.04 * s}
                                              for s in range(1, 11)]}],
              "claims": [claim(judge(values, claimed=0.956038, tolerance=0.0, statistic="exact").to_dict(),
                               metric="train_accuracy", split="train", unit="fraction", claimed=0.956038,
                               measured=values)]}
    report["claims"][0]["tolerance"] = 0.0
    figure = draw_learning_curves(report)
    try:
        loss_axis, accuracy_axis, verdict_axis = figure.axes[:3]
        assert any(len(line.get_xdata()) == 10 for line in accuracy_axis.lines)  # the training-accuracy curve
        assert "matches to the printed digits" in [text.get_text() for text in verdict_axis.texts]
        assert verdict_axis.get_title() == "train accuracy: REPRODUCED"
    finally:
        plt.close(figure)


def test_a_perplexity_claim_is_drawn_as_the_per_word_loss_it_means():
    """Zaremba's 115 test perplexity goes on the loss axis (nats per word) at ln 115 = 4.745, not at 115."""
    values = [112.0, 118.0, 116.0]
    verdict = judge(values, claimed=115.0, tolerance=1.0, statistic="single_run", direction="lower")
    report = {"paper": {"id": "demo"},
              "seeds": [{"seed": 0, "curve": [{"step": s, "train_loss": 6.0 - 0.1 * s} for s in range(1, 11)]}],
              "claims": [claim(verdict.to_dict(), metric="test_perplexity", split="test", unit="perplexity",
                               claimed=115.0, measured=values)]}
    figure = draw_learning_curves(report)
    try:
        loss_axis = figure.axes[0]
        levels = [line.get_ydata()[0] for line in loss_axis.lines if line.get_linestyle() == "--"]
        assert levels == [pytest.approx(math.log(115.0))]
        assert any("115 perplexity (ln: 4.745 nats)" in text.get_text() for text in loss_axis.get_legend().get_texts())
    finally:
        plt.close(figure)
