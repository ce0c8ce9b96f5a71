"""Operating characteristics of the verdict rules, by seeded simulation: the tables in docs/verdicts.md.

Seeds are drawn from N(0, 1), so offsets and margins are in units of the seed standard deviation σ.
The claim is what the paper would have printed from runs whose mean is `offset` away from ours (in the
direction that makes the claim look better): one run, the mean/median/best of 5 runs (the mean with its
sample std), a bound, or printed digits. Every cell is decided by the same functions judge uses.

    python -m replicate.calibrate                       # 20,000 draws per cell, markdown, ~1 min
    python -m replicate.calibrate draws=2000 seed=1 format=json
"""
from __future__ import annotations

import json
import sys

import numpy as np

from replicate.arguments import Command, Option, UsageError, fail
from replicate.verdict import (band_decision, band_geometry, judge, threshold_decision, tost_decision,
                               MIN_SEEDS_TO_AGREE, REPRODUCED, NOT_REPRODUCED)

SEEDS = (2, 3, 4, 5, 10, 20)
OFFSETS = (0.0, 1.0, 2.0, 3.0)  # true offset of the claim, in σ
MARGINS = (0.0, 1.0)  # the claim's tolerance δ, in σ
PAPER_RUNS = 5  # n of the mean_of_n / median_of_n / best_of_n claims
RULES = ("single_run", "mean_of_n", "mean_of_n (n not stated)", "median_of_n", "best_of_n", "threshold", "exact")


def simulate(rule: str, n: int, offset: float, margin: float, draws: int, rng: np.random.Generator) -> dict:
    """P(REPRODUCED), P(INCONCLUSIVE), P(NOT_REPRODUCED) for one cell."""
    if rule == "exact":
        return _simulate_exact(n, offset, margin, draws, rng)
    seeds = rng.standard_normal((draws, n))
    mean, std = seeds.mean(axis=1), seeds.std(axis=1, ddof=1)
    if rule == "threshold":  # "at least offset" while the truth is 0
        reproduced, not_reproduced, *_ = threshold_decision(n, mean, std, offset, margin, "higher")
    elif rule == "mean_of_n (n not stated)":  # the published mean is the true mean of its runs
        reproduced, not_reproduced, *_ = tost_decision(n, mean, std, offset, margin)
    else:
        statistic, paper_std = rule, None
        if rule == "single_run":
            claimed = offset + rng.standard_normal(draws)
            n_claimed = None
        else:
            runs = offset + rng.standard_normal((draws, PAPER_RUNS))
            n_claimed = PAPER_RUNS
            if rule == "mean_of_n":
                claimed, paper_std = runs.mean(axis=1), runs.std(axis=1, ddof=1)
            elif rule == "median_of_n":
                claimed = np.median(runs, axis=1)
            else:
                claimed = runs.max(axis=1)
        geometry = band_geometry(statistic, n, mean, std, n_claimed=n_claimed, std_claimed=paper_std)
        reproduced, not_reproduced = band_decision(n, claimed, margin, *geometry[:4])
    return _rates(np.asarray(reproduced), np.asarray(not_reproduced))


def _simulate_exact(n, offset, margin, draws, rng):
    """Deterministic runs printed to 4 decimals; the offset and margin are in units of the last digit."""
    values = [float(value) for value in rng.uniform(0.1, 0.9, min(draws, 1000))]  # judge calls: keep it short
    verdicts = [judge([value] * n, claimed=round(value + offset * 1e-4, 4), tolerance=margin * 1e-4,
                      statistic="exact", decimals=4).verdict for value in values]
    return _rates(np.array([v == REPRODUCED for v in verdicts]), np.array([v == NOT_REPRODUCED for v in verdicts]))


def _rates(reproduced, not_reproduced) -> dict:
    return {"reproduced": float(reproduced.mean()), "not_reproduced": float(not_reproduced.mean()),
            "inconclusive": float(1 - reproduced.mean() - not_reproduced.mean()), "draws": int(reproduced.size)}


def calibrate(draws: int = 20_000, seed: int = 0, rules=RULES, seeds=SEEDS, offsets=OFFSETS, margins=MARGINS) -> list:
    """One row per (rule, margin, n, offset); every cell draws from its own seeded generator."""
    rows = []
    for rule_index, rule in enumerate(rules):
        for margin in margins:
            for n in seeds:
                for offset in offsets:
                    rng = np.random.default_rng([seed, rule_index, int(10 * margin), n, int(10 * offset)])
                    rows.append({"rule": rule, "margin": margin, "n": n, "offset": offset,
                                 **simulate(rule, n, offset, margin, draws, rng)})
    return rows


def render_markdown(rows: list) -> str:
    lines = []
    for rule in dict.fromkeys(row["rule"] for row in rows):
        for margin in dict.fromkeys(row["margin"] for row in rows if row["rule"] == rule):
            cells = [row for row in rows if row["rule"] == rule and row["margin"] == margin]
            offsets = list(dict.fromkeys(row["offset"] for row in cells))
            unit = "printed digits" if rule == "exact" else "σ"
            lines += [f"**{rule}**, margin δ = {margin:g} {unit}: P(REPRODUCED) / P(INCONCLUSIVE) / P(NOT_REPRODUCED), %",
                      "", "| n | " + " | ".join(f"offset {offset:g} {unit}" for offset in offsets) + " |",
                      "|---|" + "---|" * len(offsets)]
            for n in dict.fromkeys(row["n"] for row in cells):
                by_offset = {row["offset"]: row for row in cells if row["n"] == n}
                lines.append(f"| {n} | " + " | ".join(
                    f"{100 * by_offset[o]['reproduced']:.1f} / {100 * by_offset[o]['inconclusive']:.1f} / "
                    f"{100 * by_offset[o]['not_reproduced']:.1f}" for o in offsets) + " |")
            lines.append("")
    return "\n".join(lines)


COMMAND = Command(
    "replicate.calibrate",
    "Simulate the verdict rules' operating characteristics: for each rule, number of seeds, true offset of the "
    "claim and margin (in units of the seed standard deviation), the probability of each word (REPRODUCED, "
    "INCONCLUSIVE, NOT_REPRODUCED). These are the tables of docs/verdicts.md.",
    options=(Option("draws", "simulated replications per cell", 20_000, kind="int", minimum=100),
             Option("seed", "seed of the simulation", 0, kind="int", minimum=0),
             Option("format", "what to print", "markdown", choices=("markdown", "json"))),
    examples=("python -m replicate.calibrate", "python -m replicate.calibrate draws=2000 seed=1 format=json"),
)


def main(argv: list[str] | None = None) -> int:
    try:
        options = COMMAND.parse(sys.argv[1:] if argv is None else argv).options
    except UsageError as error:
        return fail(error)
    draws, seed = options["draws"], options["seed"]
    rows = calibrate(draws=draws, seed=seed)
    if options["format"] == "json":
        print(json.dumps(rows, indent=1))
    else:
        print(f"<!-- python -m replicate.calibrate draws={draws} seed={seed}; paper n = {PAPER_RUNS}; "
              f"REPRODUCED needs ≥ {MIN_SEEDS_TO_AGREE} seeds for draw-type claims -->\n")
        print(render_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
