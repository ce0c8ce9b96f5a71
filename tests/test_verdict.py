"""Verdict rules on samples with known answers, including the edge cases."""
import math

import numpy as np
import pytest
from scipy import stats

from replicate.verdict import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, judge, printed_decimals


def test_printed_decimals():
    assert printed_decimals(0.956038) == 6
    assert printed_decimals(94) == 0
    assert printed_decimals(7.5) == 1
    assert printed_decimals(1e-05) == 5


@pytest.mark.parametrize("measured, verdict", [(0.9560381, REPRODUCED), (0.95603849, REPRODUCED),
                                               (0.95603851, NOT_REPRODUCED), (0.956037, NOT_REPRODUCED)])
def test_exact_claims_compare_the_printed_digits(measured, verdict):
    assert judge([measured], claimed=0.956038, tolerance=0.0, statistic="exact").verdict == verdict


def test_single_run_is_judged_by_its_prediction_interval_and_agreement_band():
    values = [94.0, 95.0, 93.0, 94.5, 93.5]
    mean, std = np.mean(values), np.std(values, ddof=1)
    spread = std * math.sqrt(1 + 1 / 5)  # predictive sd of one new run
    half = stats.t.ppf(0.975, 4) * spread
    inside = judge(values, claimed=95.0, tolerance=0.5, statistic="single_run")
    assert inside.details["prediction_interval"] == pytest.approx([mean - half, mean + half])
    assert inside.details["agreement_band"] == pytest.approx([mean - math.hypot(0.5, spread), mean + math.hypot(0.5, spread)])
    assert inside.verdict == REPRODUCED  # |95 − 94| = 1 ≤ √(0.5² + 0.866²) = 1.0
    between = judge(values, claimed=96.0, tolerance=0.5, statistic="single_run")
    assert between.verdict == INCONCLUSIVE  # outside the band, inside 94 ± (2.4 + 0.5)
    assert "seeds_needed" in between.details and "settle" in between.explanation
    assert judge(values, claimed=97.5, tolerance=0.5, statistic="single_run").verdict == NOT_REPRODUCED


def test_the_issue_example_no_longer_passes_the_run_further_from_the_claim():
    # train.steps=1000 seeds=3 under mean and sum: the wider spread used to pass the run further from 68
    mean_convention = judge([60.3 - 1.57, 60.3, 60.3 + 1.57], claimed=68, tolerance=0.5, statistic="single_run")
    assert mean_convention.verdict != REPRODUCED


def test_single_run_needs_four_seeds_to_agree():
    assert judge([94.2], claimed=94, tolerance=0.5, statistic="single_run").verdict == INCONCLUSIVE
    assert judge([94.2, 93.8, 94.1], claimed=94, tolerance=0.5, statistic="single_run").verdict == INCONCLUSIVE
    assert judge([94.2, 93.8, 94.1, 93.9], claimed=94, tolerance=0.5, statistic="single_run").verdict == REPRODUCED
    assert judge([92.0, 92.1, 91.9], claimed=94, tolerance=0.5, statistic="single_run").verdict == NOT_REPRODUCED


def test_identical_seeds_too_few_to_agree_are_told_how_many_would():
    result = judge([94.0] * 3, claimed=94.4, tolerance=0.5, statistic="single_run")
    assert result.verdict == INCONCLUSIVE and result.details["seeds_needed"] == 4


def test_single_run_with_zero_variance_reduces_to_the_margin():
    assert judge([94.0] * 5, claimed=94.4, tolerance=0.5, statistic="single_run").verdict == REPRODUCED
    assert judge([94.0] * 5, claimed=94.6, tolerance=0.5, statistic="single_run").verdict == NOT_REPRODUCED


def test_mean_of_n_is_two_one_sided_tests():
    values = np.random.default_rng(1).normal(10.0, 1.0, size=30)
    result = judge(values, claimed=10.0, tolerance=1.0, statistic="mean_of_n")
    lower = stats.ttest_1samp(values, 9.0, alternative="greater").pvalue
    upper = stats.ttest_1samp(values, 11.0, alternative="less").pvalue
    assert result.details["p_equivalence"] == pytest.approx(max(lower, upper))
    assert result.verdict == REPRODUCED
    far = judge(values, claimed=13.0, tolerance=1.0, statistic="mean_of_n")
    assert far.verdict == NOT_REPRODUCED
    assert far.details["p_difference"] == pytest.approx(stats.ttest_1samp(values, 12.0, alternative="less").pvalue)


def test_mean_of_n_with_few_noisy_seeds_is_inconclusive_and_says_how_many_would_decide():
    result = judge([9.0, 11.5, 10.2], claimed=10.9, tolerance=1.0, statistic="mean_of_n")
    assert result.verdict == INCONCLUSIVE
    assert result.details["seeds_needed"] > 3


def test_mean_of_n_uses_the_papers_spread_when_given():
    values = [10.0, 10.1, 9.9, 10.05, 9.95]
    alone = judge(values, claimed=10.6, tolerance=0.5, statistic="mean_of_n")
    with_paper = judge(values, claimed=10.6, tolerance=0.5, statistic="mean_of_n", n_claimed=3, std_claimed=1.0)
    assert alone.verdict == NOT_REPRODUCED  # the published mean taken as exact: 10.0 ± 0.03 is not 10.6 ± 0.5
    assert with_paper.details["predictive_std"] == pytest.approx(math.sqrt(np.var(values, ddof=1) / 5 + 1 / 3))
    assert with_paper.verdict == REPRODUCED  # a mean of 3 runs with std 1 has its own sd of 0.58


def test_mean_of_n_difference_test_is_two_sided_at_five_percent():
    values = np.random.default_rng(2).normal(10.0, 1.0, size=12)
    mean, error = values.mean(), values.std(ddof=1) / math.sqrt(12)
    edge = mean + 0.3 + stats.t.ppf(0.975, 11) * error  # claim just beyond the 95 % interval widened by δ = 0.3
    assert judge(values, claimed=edge + 1e-6, tolerance=0.3, statistic="mean_of_n").verdict == NOT_REPRODUCED
    assert judge(values, claimed=edge - 1e-6, tolerance=0.3, statistic="mean_of_n").verdict == INCONCLUSIVE


def test_best_of_n_compares_with_the_maximum_of_n_draws():
    values = np.linspace(90, 94, 10)
    assert judge(values, claimed=94.0, tolerance=0.1, statistic="best_of_n", n_claimed=5).verdict == REPRODUCED
    assert judge(values, claimed=91.0, tolerance=0.1, statistic="best_of_n", n_claimed=5).verdict == NOT_REPRODUCED


def test_best_of_n_when_lower_is_better_uses_the_minimum():
    values = np.linspace(6.0, 8.0, 10)  # error rates
    assert judge(values, claimed=6.0, tolerance=0.1, statistic="best_of_n", n_claimed=5,
                 direction="lower").verdict == REPRODUCED
    assert judge(values, claimed=8.0, tolerance=0.1, statistic="best_of_n", n_claimed=5,
                 direction="lower").verdict == NOT_REPRODUCED


def test_median_of_n():
    values = np.linspace(93.5, 94.5, 12)
    assert judge(values, claimed=94.08, tolerance=0.05, statistic="median_of_n", n_claimed=50).verdict == REPRODUCED
    assert judge(values, claimed=95.0, tolerance=0.05, statistic="median_of_n", n_claimed=50).verdict == NOT_REPRODUCED


def test_threshold_lower_is_better():
    assert judge([0.50, 0.52, 0.51], claimed=0.6, tolerance=0.0, statistic="threshold", direction="lower").verdict == REPRODUCED
    assert judge([0.70, 0.72, 0.71], claimed=0.6, tolerance=0.0, statistic="threshold", direction="lower").verdict == NOT_REPRODUCED
    assert judge([0.4, 0.8, 0.6], claimed=0.6, tolerance=0.0, statistic="threshold", direction="lower").verdict == INCONCLUSIVE


def test_all_seeds_diverged_is_not_reproduced():
    result = judge([math.nan, math.inf], claimed=94, tolerance=1, statistic="single_run")
    assert result.verdict == NOT_REPRODUCED and result.rule == "all_diverged" and result.diverged == 2


def test_a_minority_of_diverged_seeds_is_excluded_and_counted():
    result = judge([94.0, 94.5, math.nan, 93.5, 94.2], claimed=94, tolerance=0.5, statistic="single_run")
    assert result.n == 4 and result.diverged == 1 and result.verdict == REPRODUCED
    assert "diverged" in result.explanation


def test_unknown_statistic_is_an_error():
    with pytest.raises(ValueError, match="allowed"):
        judge([1.0], claimed=1.0, tolerance=0.0, statistic="luckiest")


def test_edges_allow_for_floating_point_rounding():
    # the upper edge of this best-of-5 range is 93.6 + 0.1 = 93.69999999999999 in floating point
    values = [93.0, 93.2, 93.4, 93.6, 93.6]
    assert judge(values, claimed=93.7, tolerance=0.1, statistic="best_of_n", n_claimed=5).verdict == REPRODUCED


def test_order_statistic_verdicts_depend_on_the_set_of_values_not_their_order():
    values = [92.1, 95.3, 93.3, 94.0, 92.8, 94.9, 93.6]
    forward = judge(values, claimed=94.0, tolerance=0.0, statistic="median_of_n", n_claimed=5)
    backward = judge(values[::-1], claimed=94.0, tolerance=0.0, statistic="median_of_n", n_claimed=5)
    assert forward.details["prediction_interval"] == pytest.approx(backward.details["prediction_interval"], abs=1e-12)


def test_the_order_statistic_interval_matches_the_t_interval_for_a_median_of_one():
    values = [92.1, 95.3, 93.3, 94.0, 92.8]
    median = judge(values, claimed=94.0, tolerance=0.0, statistic="median_of_n", n_claimed=1)
    single = judge(values, claimed=94.0, tolerance=0.0, statistic="single_run")
    # Monte Carlo quantiles of (x − x̄)/s with 200,000 draws: within 0.03 s of Student t's √(1+1/n)·t
    assert median.details["prediction_interval"] == pytest.approx(single.details["prediction_interval"],
                                                                  abs=0.03 * np.std(values, ddof=1))


def test_mean_of_n_zero_spread_on_the_margin_is_reproduced():
    assert judge([0.5] * 3, claimed=0.5, tolerance=0.0, statistic="mean_of_n").verdict == REPRODUCED
    assert judge([1.5] * 3, claimed=1.0, tolerance=0.5, statistic="mean_of_n").verdict == REPRODUCED


def test_mean_of_n_with_one_seed_and_the_papers_spread_is_inconclusive_not_nan():
    result = judge([10.0], claimed=10.3, tolerance=0.5, statistic="mean_of_n", n_claimed=3, std_claimed=1.0)
    assert result.verdict == INCONCLUSIVE and "nan" not in result.explanation


def test_seeds_needed_says_when_no_number_of_seeds_settles_it():
    # a single run 1.5 predictive sds from our mean: too far to agree, too near to contradict, at any n
    values = [10.0, 11.0, 9.0, 10.5, 9.5]
    claimed = 10.0 + 1.5 * np.std(values, ddof=1) * math.sqrt(1.2)
    result = judge(values, claimed=claimed, tolerance=0.0, statistic="single_run")
    assert result.verdict == INCONCLUSIVE
    assert result.details["seeds_needed"] is None and "no number of seeds" in result.explanation


def test_order_statistics_need_the_papers_n():
    with pytest.raises(ValueError, match="needs n_claimed"):
        judge([1.0, 2.0, 3.0], claimed=3.0, tolerance=0.0, statistic="best_of_n")


def test_threshold_with_one_seed_is_inconclusive():
    assert judge([0.5], claimed=0.6, tolerance=0.0, statistic="threshold", direction="lower").verdict == INCONCLUSIVE


def test_exact_claims_can_state_trailing_zero_decimals():
    assert judge([0.9504], claimed=0.950, tolerance=0.0, statistic="exact").verdict == REPRODUCED  # read as 0.95
    assert judge([0.9504], claimed=0.950, tolerance=0.0, statistic="exact", decimals=3).verdict == REPRODUCED
    assert judge([0.9506], claimed=0.950, tolerance=0.0, statistic="exact", decimals=3).verdict == NOT_REPRODUCED


def test_olympic_mean_drops_the_best_and_the_worst_seed():
    values = [90.0, 93.9, 94.0, 94.1, 99.0]
    result = judge(values, claimed=94.0, tolerance=0.2, statistic="mean_of_n", n_claimed=5, olympic=True)
    assert result.n == 3 and result.mean == pytest.approx(94.0)
    with pytest.raises(ValueError, match="at least 5"):
        judge(values[:4], claimed=94.0, tolerance=0.2, statistic="mean_of_n", n_claimed=5, olympic=True)


def test_a_verdict_names_the_claimed_value_with_every_published_digit():
    """A claim such as DeepLearningTutorials' 7.489583 % reads back whole (`:g` would print 7.48958)."""
    for values, verdict in (([7.48, 7.50, 7.49], REPRODUCED), ([9.1, 9.0, 9.2], NOT_REPRODUCED)):
        tost = judge(values, claimed=7.489583, tolerance=0.5, statistic="mean_of_n", direction="lower")
        band = judge(values, claimed=7.489583, tolerance=0.5, statistic="single_run", direction="lower")
        assert tost.verdict == verdict and "7.489583" in tost.explanation and "7.489583" in band.explanation
