"""Verdicts: was a published number reproduced? Pure statistics over per-seed values.

Each claim states what its number is (a single run, a mean of n, a median of n, a best of n, a
threshold, or deterministic printed digits) and a margin (`tolerance`) with its reason. Every rule
answers two questions at level α = 0.05: do the seeds contradict the claim (NOT_REPRODUCED), and do
they support it (REPRODUCED)? Neither gives INCONCLUSIVE, with the number of seeds likely to settle
it. docs/verdicts.md gives every formula and the calibration tables (`python -m replicate.calibrate`).

    judge([94.1, 93.2, 94.8, 93.9], claimed=94.0, tolerance=0.5, statistic="single_run")
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE"
STATISTICS = ("single_run", "mean_of_n", "median_of_n", "best_of_n", "threshold", "exact")
DIRECTIONS = ("higher", "lower")  # which way a claimed number is better
# A claim that is one draw of a noisy statistic is REPRODUCED only with this many seeds: with 3, the
# spread s is so uncertain (2 degrees of freedom) that a claim 3σ off passes the band 10.7 % of the time.
MIN_SEEDS_TO_AGREE = 4
AGREEMENT_SDS = 1.0  # the agreement band: one predictive standard deviation of the claimed statistic
BOOTSTRAP_DRAWS = 200_000  # Monte Carlo draws of an order statistic's pivot (quantile error < 0.01 s)


def _slack(value):
    """Rounding allowance for comparing a claim with an interval edge (93.6 + 0.1 is 93.69999999999999)."""
    return 1e-9 * np.maximum(1.0, np.abs(value))


@dataclass
class Verdict:
    verdict: str
    rule: str  # which rule decided, e.g. "prediction_band"
    explanation: str  # the decision in words, with its numbers
    n: int  # finite values used
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for n = 1
    diverged: int = 0  # values that were not finite (diverged seeds)
    details: dict = field(default_factory=dict)  # intervals, test statistics, seeds_needed, ...

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


def judge_claim(claim: dict, values: list[float], seeds: list[int]) -> Verdict:
    """One claim as a report states it ("claimed", "tolerance", "statistic", ...), judged on per-seed values
    in its unit, given in the order of `seeds`. An exact claim whose source fixes the seed is judged on
    that seed's run alone: the published run is that run."""
    judged = values
    if claim["statistic"] == "exact" and claim.get("seed") is not None and claim["seed"] in seeds:
        judged = [values[seeds.index(claim["seed"])]]
    return judge(judged, claimed=claim["claimed"], tolerance=claim["tolerance"], statistic=claim["statistic"],
                 direction=claim.get("direction", "higher"), n_claimed=claim.get("n"), std_claimed=claim.get("std"),
                 decimals=claim.get("decimals"), olympic=claim.get("olympic", False))


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
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")
    if statistic in ("median_of_n", "best_of_n") and not n_claimed:
        raise ValueError(f"statistic {statistic} needs n_claimed (the paper's number of runs)")
    if n == 0:
        return Verdict(NOT_REPRODUCED, "all_diverged", f"all {diverged} seeds diverged; no finite result", **base)
    if diverged * 2 > len(values):
        return Verdict(NOT_REPRODUCED, "most_diverged",
                       f"{diverged} of {len(values)} seeds diverged; the setup does not train reliably", **base)
    if statistic == "exact":
        verdict, rule, explanation, details = _exact(finite, claimed=claimed, tolerance=tolerance, decimals=decimals)
    elif statistic == "threshold":
        verdict, rule, explanation, details = _threshold(mean, std, n, claimed, tolerance, direction, alpha)
    elif statistic == "mean_of_n" and not n_claimed:
        verdict, rule, explanation, details = _tost(mean, std, n, claimed, tolerance, alpha)
    else:
        verdict, rule, explanation, details = _prediction_band(
            mean, std, n, claimed, tolerance, statistic, direction, n_claimed, std_claimed, alpha)
    if diverged:
        explanation += f" ({diverged} diverged seed(s) excluded)"
    return Verdict(verdict, rule, explanation, details=details, **base)


def _exact(values, *, claimed, tolerance, decimals=None):
    """Deterministic runs: every value printed to the claim's decimals must read as the claim."""
    decimals = printed_decimals(claimed) if decimals is None else decimals  # "0.950" needs decimals=3
    rounded = [round(float(v), decimals) for v in values]
    matches = [abs(r - claimed) <= max(tolerance, 0.5 * 10 ** -decimals) * (1 + 1e-9) for r in rounded]
    details = {"decimals": decimals, "rounded": rounded, "matches": bool(all(matches))}
    if all(matches):
        return (REPRODUCED, "exact_digits", f"every run matches to the printed digits: {claimed:.{decimals}f} "
                f"({decimals} decimals)", details)
    return (NOT_REPRODUCED, "exact_digits",
            f"printed to {decimals} decimals the runs give {', '.join(f'{r:.{decimals}f}' for r in rounded)}, "
            f"not {claimed:.{decimals}f}", details)


# ---- claims that are one draw of a noisy statistic: single_run, mean_of_n (with n), median_of_n, best_of_n


def band_geometry(statistic: str, n, mean, std, *, direction="higher", n_claimed=None, std_claimed=None, alpha=0.05):
    """Where our seeds put the claimed statistic, in the claim's unit; works on arrays of (mean, std) at one n.

    Returns (low, high, center, spread, level): [low, high] is the exact (1 − α) prediction interval for one
    draw of the statistic under normal seeds; center and spread are its predicted value and predictive
    standard deviation. judge and replicate.calibrate both decide from these numbers."""
    from scipy.special import stdtrit  # Student t inverse cdf (scipy.stats costs ~1 s to import)

    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if statistic == "mean_of_n":  # the paper's mean of n_claimed runs: its own variance plus our mean's
        if std_claimed is not None and np.all(np.asarray(std_claimed) > 0):  # the paper's own spread (Welch)
            spread = np.sqrt(std ** 2 / n + np.asarray(std_claimed) ** 2 / n_claimed)
            # the smaller sample's degrees of freedom: never more than Welch–Satterthwaite's, so the level holds
            # even at n = 2, where the Satterthwaite estimate lets a true claim fail 7 % of the time
            degrees = min(n, n_claimed) - 1
        else:  # the paper ran the same setup: its runs have our spread (pooled t, n − 1 df)
            spread, degrees = std * math.sqrt(1 / n + 1 / n_claimed), n - 1
        half = stdtrit(degrees, 1 - alpha / 2) * spread
        return mean - half, mean + half, mean, spread, 1 - alpha
    if statistic == "single_run":  # a new draw: x − x̄ has variance σ²(1 + 1/n); (x − x̄)/(s√(1+1/n)) ~ t_{n−1}
        spread = std * math.sqrt(1 + 1 / n)
        half = stdtrit(n - 1, 1 - alpha / 2) * spread
        return mean - half, mean + half, mean, spread, 1 - alpha
    low, high, expected, variance = _order_statistic_pivot(statistic, n, n_claimed, direction, alpha)
    return (mean + low * std, mean + high * std, mean + expected * std,
            std * math.sqrt(variance + 1 / n), 1 - alpha)


@lru_cache(maxsize=16)
def _order_statistic_draws(statistic: str, n_claimed: int, direction: str) -> np.ndarray:
    """Seeded draws of the median (or best) of n_claimed standard normal runs."""
    rng = np.random.default_rng([n_claimed, STATISTICS.index(statistic), direction == "higher"])
    runs = rng.standard_normal((BOOTSTRAP_DRAWS, n_claimed))
    if statistic == "median_of_n":
        return np.median(runs, axis=1)
    return runs.max(axis=1) if direction == "higher" else runs.min(axis=1)


@lru_cache(maxsize=256)
def _order_statistic_pivot(statistic: str, n: int, n_claimed: int, direction: str, alpha: float):
    """Quantiles of (M − x̄)/s for M the median (or best) of n_claimed normal runs and x̄, s from n seeds,
    with M's mean and variance. Under normal seeds this ratio does not depend on μ or σ, so its quantiles
    give an exact prediction interval; they come from seeded Monte Carlo (error < 0.01 in units of s), so
    the verdict is a function of the values."""
    drawn = _order_statistic_draws(statistic, n_claimed, direction)
    rng = np.random.default_rng([n, n_claimed, STATISTICS.index(statistic), direction == "higher"])
    our_mean = rng.standard_normal(BOOTSTRAP_DRAWS) / math.sqrt(n)
    our_std = np.sqrt(rng.chisquare(n - 1, BOOTSTRAP_DRAWS) / (n - 1))
    low, high = np.quantile((drawn - our_mean) / our_std, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), float(drawn.mean()), float(drawn.var())


def band_decision(n, claimed, tolerance, low, high, center, spread):
    """(reproduced, not_reproduced) as boolean arrays, from band_geometry's numbers.

    NOT_REPRODUCED: the claim lies outside the prediction interval widened by the margin (a level-α test
    of difference). REPRODUCED: at least MIN_SEEDS_TO_AGREE seeds and the claim within one predictive
    standard deviation of the predicted value, the margin combined with it in quadrature."""
    low_edge, high_edge = low - tolerance, high + tolerance
    outside = (claimed < low_edge - _slack(low_edge)) | (claimed > high_edge + _slack(high_edge))
    agreement = np.sqrt(tolerance ** 2 + (AGREEMENT_SDS * spread) ** 2)
    inside = np.abs(claimed - center) <= agreement + _slack(agreement)
    return inside & ~outside & (n >= MIN_SEEDS_TO_AGREE), outside


def _prediction_band(mean, std, n, claimed, tolerance, statistic, direction, n_claimed, std_claimed, alpha):
    if n < 2:
        return (INCONCLUSIVE, "prediction_band", f"one seed gives no spread; run at least {MIN_SEEDS_TO_AGREE} seeds",
                {"difference": claimed - mean, "seeds_needed": MIN_SEEDS_TO_AGREE})
    kind = {"single_run": "one run", "mean_of_n": f"a mean of {n_claimed} runs",
            "median_of_n": f"a median of {n_claimed} runs",
            "best_of_n": f"a best of {n_claimed} runs"}[statistic]
    low, high, center, spread, level = (float(x) for x in band_geometry(
        statistic, n, mean, std, direction=direction, n_claimed=n_claimed, std_claimed=std_claimed, alpha=alpha))
    reproduced, outside = (bool(x) for x in band_decision(n, claimed, tolerance, low, high, center, spread))
    agreement = math.sqrt(tolerance ** 2 + (AGREEMENT_SDS * spread) ** 2)
    details = {"prediction_interval": [low, high], "widened_interval": [low - tolerance, high + tolerance],
               "agreement_band": [center - agreement, center + agreement], "predicted": center,
               "predictive_std": spread, "difference": claimed - center, "level": level, "statistic_of": kind}
    if n_claimed:
        details["n_claimed"] = n_claimed
    where = (f"claim {claimed:.10g} vs {kind} predicted at {center:.4g} ± {spread:.3g} (predictive sd); "
             f"{100 * level:g}% prediction interval [{low:.4g}, {high:.4g}] widened by the margin {tolerance:g} "
             f"to [{low - tolerance:.4g}, {high + tolerance:.4g}]; agreement band ±{agreement:.3g}")
    if outside:
        return NOT_REPRODUCED, "prediction_band", f"{where}: the claim is outside the widened interval", details
    if reproduced:
        return REPRODUCED, "prediction_band", f"{where}: the claim is inside the agreement band", details
    needed = _seeds_needed_band(statistic, n, mean, std, claimed, tolerance, direction, n_claimed, std_claimed, alpha)
    details["seeds_needed"] = needed
    distance = abs(claimed - center) / spread if spread > 0 else math.inf
    why = _needed_text(needed, n) if needed else (
        f"no number of seeds would settle it: the claim is {distance:.2f} predictive sd from the predicted value, "
        f"a distance {kind} reaches by chance {100 * _two_sided_normal(distance):.0f}% of the time")
    return INCONCLUSIVE, "prediction_band", f"{where}: neither; {why}", details


def _two_sided_normal(z: float) -> float:
    return math.erfc(z / math.sqrt(2))  # P(|Z| ≥ z)


def _seeds_needed_band(statistic, n, mean, std, claimed, tolerance, direction, n_claimed, std_claimed, alpha,
                       limit: int = 1000) -> int | None:
    """Smallest number of seeds at which the same mean and spread would decide; None when no number would."""
    candidates = (*range(2, 21), 25, 30, 40, 50, 70, 100, 150, 200, 300, 500, limit)  # coarse: each is a Monte Carlo
    for more in (candidate for candidate in candidates if candidate > n):
        geometry = band_geometry(statistic, more, mean, std, direction=direction, n_claimed=n_claimed,
                                 std_claimed=std_claimed, alpha=alpha)
        if any(bool(x) for x in band_decision(more, claimed, tolerance, *geometry[:4])):
            return more
    return None


def _needed_text(needed: int | None, n: int) -> str:
    if needed is None:
        return ("no number of seeds would settle it at this spread: the claim's own noise, or a gap equal "
                "to the margin, keeps it ambiguous")
    return f"about {needed} seeds (now {n}) would likely settle it"


# ---- a mean stated without its n: the published mean is taken as exact; two one-sided tests


def tost_decision(n, mean, std, claimed, tolerance, alpha=0.05):
    """(reproduced, not_reproduced, standard_error, t_one_sided, t_two_sided) on arrays of (mean, std) at one n."""
    from scipy.special import stdtrit

    standard_error = np.asarray(std, dtype=np.float64) / math.sqrt(n)
    distance = np.abs(np.asarray(mean) - claimed)
    one_sided, two_sided = float(stdtrit(n - 1, 1 - alpha)), float(stdtrit(n - 1, 1 - alpha / 2))
    bound = tolerance + _slack(tolerance)
    reproduced = distance + one_sided * standard_error <= bound  # the 1 − 2α interval of x̄ − c inside ±δ
    different = distance - two_sided * standard_error > bound  # the 1 − α interval of x̄ − c outside ±δ
    return reproduced, different & ~reproduced, standard_error, one_sided, two_sided


def _tost(mean, std, n, claimed, tolerance, alpha):
    from scipy.special import stdtr  # Student t cdf

    difference = mean - claimed
    if n < 2:
        return (INCONCLUSIVE, "tost", "one seed gives no standard error; run more seeds",
                {"difference": difference, "seeds_needed": 3})
    reproduced, different, standard_error, one_sided, two_sided = (
        float(x) for x in tost_decision(n, mean, std, claimed, tolerance, alpha))
    interval = [difference - one_sided * standard_error, difference + one_sided * standard_error]
    details = {"difference": difference, "standard_error": standard_error, "df": n - 1,
               "confidence_interval_difference": interval, "level": 1 - 2 * alpha,
               "difference_interval": [difference - two_sided * standard_error, difference + two_sided * standard_error]}
    if standard_error > 0:
        details["p_equivalence"] = max(float(stdtr(n - 1, -(difference + tolerance) / standard_error)),
                                       float(stdtr(n - 1, (difference - tolerance) / standard_error)))
        details["p_difference"] = 2 * float(stdtr(n - 1, -(abs(difference) - tolerance) / standard_error))
    if reproduced:
        return (REPRODUCED, "tost", f"mean {mean:.4g} is within ±{tolerance:g} of {claimed:.10g}: the "
                f"{100 * (1 - 2 * alpha):g}% interval of the difference [{interval[0]:.4g}, {interval[1]:.4g}] "
                f"lies inside the margin", details)
    if different:
        low, high = details["difference_interval"]
        return (NOT_REPRODUCED, "tost", f"mean {mean:.4g} differs from {claimed:.10g} by more than {tolerance:g}: the "
                f"{100 * (1 - alpha):g}% interval of the difference [{low:.4g}, {high:.4g}] lies outside the margin",
                details)
    details["seeds_needed"] = _seeds_needed_t(abs(difference), tolerance, std, alpha)
    return (INCONCLUSIVE, "tost", f"the {100 * (1 - 2 * alpha):g}% interval of the difference [{interval[0]:.4g}, "
            f"{interval[1]:.4g}] is neither inside nor outside ±{tolerance:g}; "
            f"{_needed_text(details['seeds_needed'], n)}", details)


def _seeds_needed_t(distance: float, bound: float, std: float, alpha: float, limit: int = 10_000) -> int | None:
    """Smallest n at which the observed gap between |x̄ − c| and the bound, at the observed spread, is
    significant; None when no n would."""
    from scipy.special import stdtrit

    gap = abs(bound - distance)
    if gap == 0 or std == 0:
        return None
    for n in range(2, limit):
        if gap / (std / math.sqrt(n)) > stdtrit(n - 1, 1 - alpha):
            return n
    return None


# ---- "at least" / "at most": one-sided bounds on our mean


def threshold_decision(n, mean, std, claimed, tolerance, direction, alpha=0.05):
    """(reproduced, not_reproduced, low, high, bound) on arrays of (mean, std) at one n."""
    from scipy.special import stdtrit

    margin = float(stdtrit(n - 1, 1 - alpha)) * np.asarray(std, dtype=np.float64) / math.sqrt(n)
    low, high = np.asarray(mean) - margin, np.asarray(mean) + margin
    if direction == "higher":
        bound = claimed - tolerance
        bound -= _slack(bound)
        return low >= bound, high < bound, low, high, bound
    bound = claimed + tolerance
    bound += _slack(bound)
    return high <= bound, low > bound, low, high, bound


def _threshold(mean, std, n, claimed, tolerance, direction, alpha):
    if n < 2:
        return INCONCLUSIVE, "one_sided_bound", "one seed gives no confidence bound; run more seeds", {"seeds_needed": 3}
    reproduced, fails, low, high, bound = (float(x) for x in threshold_decision(
        n, mean, std, claimed, tolerance, direction, alpha))
    details = {"confidence_interval": [low, high], "bound": bound, "level": 1 - alpha}
    word = "at least" if direction == "higher" else "at most"
    if reproduced:
        return REPRODUCED, "one_sided_bound", f"mean {mean:.4g} is {word} {bound:g} with confidence {1 - alpha:g}", details
    if fails:
        return NOT_REPRODUCED, "one_sided_bound", f"mean {mean:.4g} is not {word} {bound:g} with confidence {1 - alpha:g}", details
    details["seeds_needed"] = _seeds_needed_t(abs(mean - bound), 0.0, std, alpha)
    return (INCONCLUSIVE, "one_sided_bound", f"the one-sided bounds [{low:.4g}, {high:.4g}] straddle {bound:g}; "
            f"{_needed_text(details['seeds_needed'], n)}", details)
