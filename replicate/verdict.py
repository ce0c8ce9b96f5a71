"""Verdicts: was a published number reproduced? Pure statistics over per-seed values.

Each claim states what its number is (a single run, a mean of n, a median of n, a best of n, a
threshold, or deterministic printed digits) and a margin (`tolerance`) with its reason. The rule
that fits the statistic decides REPRODUCED, NOT_REPRODUCED or INCONCLUSIVE; docs/verdicts.md
gives every formula.

    judge([94.1, 93.2, 94.8], claimed=94.0, tolerance=2.0, statistic="single_run")
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE"


def _slack(value: float) -> float:
    """Rounding allowance for comparing a claim with an interval edge (93.6 + 0.1 is 93.69999999999999)."""
    return 1e-9 * max(1.0, abs(value))


@dataclass
class Verdict:
    verdict: str
    rule: str  # which rule decided, e.g. "prediction_interval"
    explanation: str  # the decision in words, with its numbers
    n: int  # finite values used
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for n = 1
    diverged: int = 0  # values that were not finite (diverged seeds)
    details: dict = field(default_factory=dict)  # test statistic, p-value, interval, ...

    def to_dict(self) -> dict:
        return asdict(self)


def printed_decimals(value: float) -> int:
    """Decimals of a number as printed (0.956038 → 6): the precision an `exact` claim is held to."""
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return max(0, decimals - int(exponent))
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def judge(values, *, claimed: float, tolerance: float, statistic: str, direction: str = "higher",
          n_claimed: int | None = None, std_claimed: float | None = None, alpha: float = 0.05,
          decimals: int | None = None, olympic: bool = False) -> Verdict:
    """Decide one claim from per-seed values (in the claim's unit). Non-finite values are diverged seeds.
    olympic: drop the best and the worst finite value first (MLPerf's olympic mean; needs ≥ 5 values)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if olympic:
        if len(finite) < 5:
            raise ValueError(f"an olympic mean drops the best and worst value and needs at least 5, got {len(finite)}")
        finite = np.sort(finite)[1:-1]
    diverged = int(len(values) - len(finite))
    n = len(finite)
    mean = float(finite.mean()) if n else math.nan
    std = float(finite.std(ddof=1)) if n > 1 else 0.0
    base = dict(n=n, mean=mean, std=std, diverged=diverged)
    if n == 0:
        return Verdict(NOT_REPRODUCED, "all_diverged", f"all {diverged} seeds diverged; no finite result", **base)
    if diverged * 2 > len(values):
        return Verdict(NOT_REPRODUCED, "most_diverged",
                       f"{diverged} of {len(values)} seeds diverged; the setup does not train reliably", **base)
    rules = {"exact": _exact, "single_run": _single_run, "mean_of_n": _mean_of_n, "median_of_n": _order_statistic,
             "best_of_n": _order_statistic, "threshold": _threshold}
    if statistic not in rules:
        raise ValueError(f"unknown statistic {statistic!r}; allowed: {', '.join(rules)}")
    if statistic in ("median_of_n", "best_of_n") and not n_claimed:
        raise ValueError(f"statistic {statistic} needs n_claimed (the paper's number of runs)")
    verdict, rule, explanation, details = rules[statistic](
        finite, claimed=claimed, tolerance=tolerance, statistic=statistic, direction=direction,
        n_claimed=n_claimed, std_claimed=std_claimed, alpha=alpha, decimals=decimals)
    if diverged:
        explanation += f" ({diverged} diverged seed(s) excluded)"
    return Verdict(verdict, rule, explanation, details=details, **base)


def _exact(values, *, claimed, tolerance, decimals=None, **_):
    decimals = printed_decimals(claimed) if decimals is None else decimals  # "0.950" needs decimals=3
    rounded = [round(float(v), decimals) for v in values]
    matches = [abs(r - claimed) <= max(tolerance, 0.5 * 10 ** -decimals) * (1 + 1e-9) for r in rounded]
    details = {"decimals": decimals, "rounded": rounded}
    if all(matches):
        return REPRODUCED, "exact_digits", f"every run prints {claimed:.{decimals}f} to {decimals} decimals", details
    return (NOT_REPRODUCED, "exact_digits",
            f"printed to {decimals} decimals the runs give {', '.join(f'{r:.{decimals}f}' for r in rounded)}, "
            f"not {claimed:.{decimals}f}", details)


def _single_run(values, *, claimed, tolerance, alpha, **_):
    """Is the claim a plausible single draw from our seed distribution (prediction interval ± margin)?"""
    from scipy.special import stdtrit  # Student t inverse cdf (scipy.stats costs ~1 s to import)

    n, mean = len(values), float(values.mean())
    if n < 3:  # one or two seeds give no usable spread (t_0.975 with 1 df is 12.7)
        inside = abs(mean - claimed) <= tolerance
        return (REPRODUCED if inside else INCONCLUSIVE, "tolerance_only",
                f"{n} seed(s): |{mean:.4g} − {claimed:.4g}| = {abs(mean - claimed):.3g} "
                f"{'≤' if inside else '>'} margin {tolerance:g}; too few seeds for a prediction interval, run ≥ 3",
                {"difference": mean - claimed})
    std = float(values.std(ddof=1))
    half_width = float(stdtrit(n - 1, 1 - alpha / 2)) * std * math.sqrt(1 + 1 / n)
    low, high = mean - half_width - tolerance, mean + half_width + tolerance
    inside = low - _slack(low) <= claimed <= high + _slack(high)
    details = {"prediction_interval": [mean - half_width, mean + half_width], "widened_interval": [low, high],
               "level": 1 - alpha}
    return (REPRODUCED if inside else NOT_REPRODUCED, "prediction_interval",
            f"claim {claimed:g} {'inside' if inside else 'outside'} the {100 * (1 - alpha):g}% prediction interval "
            f"[{mean - half_width:.4g}, {mean + half_width:.4g}] widened by the margin {tolerance:g} "
            f"to [{low:.4g}, {high:.4g}]", details)


def _mean_of_n(values, *, claimed, tolerance, alpha, n_claimed, std_claimed, **_):
    """Two one-sided tests: is our mean within ±margin of the claimed mean? (Welch when the paper gives std.)"""
    from scipy.special import stdtr, stdtrit  # Student t cdf and inverse cdf (scipy.stats costs ~1 s to import)

    n, mean = len(values), float(values.mean())
    if n < 2:
        return (INCONCLUSIVE, "tost", "one seed gives no standard error; run more seeds",
                {"difference": mean - claimed, "seeds_needed": 3})
    variance_of_mean = float(values.var(ddof=1)) / n
    degrees = n - 1
    paper_variance = 0.0
    if n_claimed and std_claimed:
        paper_variance = std_claimed ** 2 / n_claimed
        if variance_of_mean + paper_variance > 0 and n > 1:
            degrees = (variance_of_mean + paper_variance) ** 2 / (
                variance_of_mean ** 2 / (n - 1) + paper_variance ** 2 / max(n_claimed - 1, 1))
        variance_of_mean += paper_variance
    difference = mean - claimed
    standard_error = math.sqrt(variance_of_mean)
    if standard_error == 0:
        verdict = REPRODUCED if abs(difference) <= tolerance + _slack(tolerance) else NOT_REPRODUCED
        return verdict, "tost", f"no spread: difference {difference:.4g} vs margin {tolerance:g}", {"difference": difference}
    t_lower = (difference + tolerance) / standard_error  # H0: difference ≤ −margin
    t_upper = (difference - tolerance) / standard_error  # H0: difference ≥ +margin
    p_equivalent = max(float(stdtr(degrees, -t_lower)), float(stdtr(degrees, t_upper)))
    t_beyond = (abs(difference) - tolerance) / standard_error  # H0: |difference| ≤ margin
    p_different = float(stdtr(degrees, -t_beyond))
    critical = float(stdtrit(degrees, 1 - alpha))
    interval = [difference - critical * standard_error, difference + critical * standard_error]
    details = {"difference": difference, "standard_error": standard_error, "df": degrees,
               "p_equivalence": p_equivalent, "p_difference": p_different,
               "confidence_interval_difference": interval, "level": 1 - 2 * alpha}
    if p_equivalent < alpha:
        return (REPRODUCED, "tost", f"mean {mean:.4g} is within ±{tolerance:g} of {claimed:g} "
                f"(TOST p = {p_equivalent:.3g} < {alpha:g})", details)
    if p_different < alpha:
        return (NOT_REPRODUCED, "tost", f"mean {mean:.4g} differs from {claimed:g} by more than {tolerance:g} "
                f"(one-sided p = {p_different:.3g} < {alpha:g})", details)
    details["seeds_needed"] = _seeds_needed(abs(difference), tolerance, float(values.std(ddof=1)), alpha, paper_variance)
    decide = (f"about {details['seeds_needed']} seeds would decide" if details["seeds_needed"]
              else "no number of our seeds decides it (the gap equals the margin, or the paper's own spread dominates)")
    return (INCONCLUSIVE, "tost", f"neither equivalence (p = {p_equivalent:.3g}) nor difference (p = {p_different:.3g}) "
            f"at α = {alpha:g}; {decide}", details)


def _seeds_needed(distance: float, tolerance: float, std: float, alpha: float, paper_variance: float = 0.0,
                  limit: int = 10_000) -> int | None:
    """Smallest n at which the observed gap, with the observed spread (plus the paper's own standard
    error, when it gave one), would decide either test; None when no n would."""
    from scipy.special import stdtrit  # Student t inverse cdf (scipy.stats costs ~1 s to import)

    gap = abs(tolerance - distance)
    if gap == 0 or std == 0:
        return None
    for n in range(2, limit):
        if gap / math.sqrt(std ** 2 / n + paper_variance) > stdtrit(n - 1, 1 - alpha):
            return n
    return None


def _order_statistic(values, *, claimed, tolerance, statistic, direction, n_claimed, alpha, **_):
    """Median or best of the paper's n runs, compared with that statistic's distribution over our seeds (bootstrap)."""
    n = len(values)
    if n < 3:
        return INCONCLUSIVE, "order_statistic_bootstrap", f"{n} seeds are too few for the distribution of a {statistic}", {}
    rng = np.random.default_rng(0)  # fixed generator and sorted values: the verdict is a function of the set of values
    draws = rng.choice(np.sort(values), size=(20_000, n_claimed), replace=True)
    if statistic == "median_of_n":
        simulated = np.median(draws, axis=1)
    else:
        simulated = draws.max(axis=1) if direction == "higher" else draws.min(axis=1)
    low, high = np.quantile(simulated, [alpha / 2, 1 - alpha / 2])
    inside = low - tolerance - _slack(low) <= claimed <= high + tolerance + _slack(high)
    details = {"interval": [float(low), float(high)], "widened_interval": [float(low - tolerance), float(high + tolerance)],
               "level": 1 - alpha, "n_claimed": n_claimed}
    return (REPRODUCED if inside else NOT_REPRODUCED, "order_statistic_bootstrap",
            f"claim {claimed:g} {'inside' if inside else 'outside'} the {100 * (1 - alpha):g}% range "
            f"[{low:.4g}, {high:.4g}] of a {statistic.replace('_of_n', '')} of {n_claimed} runs drawn from our seeds, "
            f"widened by {tolerance:g}", details)


def _threshold(values, *, claimed, tolerance, direction, alpha, **_):
    """'At least' (higher is better) or 'at most' a value: one-sided confidence bound on our mean."""
    from scipy.special import stdtrit  # Student t inverse cdf (scipy.stats costs ~1 s to import)

    n, mean = len(values), float(values.mean())
    if n < 2:
        return INCONCLUSIVE, "one_sided_bound", "one seed gives no confidence bound; run more seeds", {}
    std = float(values.std(ddof=1))
    margin = float(stdtrit(n - 1, 1 - alpha)) * std / math.sqrt(n)
    bound = claimed - tolerance if direction == "higher" else claimed + tolerance
    bound += -_slack(bound) if direction == "higher" else _slack(bound)
    low, high = mean - margin, mean + margin
    details = {"confidence_interval": [low, high], "bound": bound, "level": 1 - alpha}
    meets = low >= bound if direction == "higher" else high <= bound
    fails = high < bound if direction == "higher" else low > bound
    word = "at least" if direction == "higher" else "at most"
    if meets:
        return REPRODUCED, "one_sided_bound", f"mean {mean:.4g} is {word} {bound:g} with confidence {1 - alpha:g}", details
    if fails:
        return NOT_REPRODUCED, "one_sided_bound", f"mean {mean:.4g} is not {word} {bound:g} with confidence {1 - alpha:g}", details
    return INCONCLUSIVE, "one_sided_bound", f"the confidence interval [{low:.4g}, {high:.4g}] straddles {bound:g}", details
