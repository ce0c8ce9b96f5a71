"""Several replications side by side, read back from their report.json files; no server, no training.

Owns finding finished reports (run dirs, report.json paths, globs, multirun trees), one row per
(run, claim), and pooling seeds that ran as separate jobs (`seed=3`) into one verdict per claim.

    python -m replicate.compare outputs/mnist1d_logistic/* multirun/ format=markdown sort=verdict plot=compare.png
"""
from __future__ import annotations

import glob
import json
import math
import os
import sys
from pathlib import Path

from replicate.arguments import Command, Option, UsageError, fail
from replicate.identity import is_neutral

FORMATS = ("table", "markdown", "json")
SORTS = ("paper", "verdict", "wall_time")
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
VERDICT_ORDER = {"REPRODUCED": 0, "INCONCLUSIVE": 1, "NOT_REPRODUCED": 2}
CLAIM_DEFINITION = ("metric", "value", "unit", "statistic", "direction", "tolerance", "n", "std", "seed")


class CompareError(Exception):
    """Something the user asked for that cannot be done; printed as one line, exit code 2."""


def warn(message: str) -> None:
    print(message, file=sys.stderr)


COMMAND = Command(
    "replicate.compare",
    "Show finished replications side by side, one row per run and claim, read back from their report.json "
    "files (no training, no server); combine=true pools seeds that ran as separate jobs (seed=<k>) into one "
    "verdict per claim.",
    options=(Option("format", "what to print", "table", choices=FORMATS),
             Option("sort", "row order", "paper", choices=SORTS),
             Option("combine", "pool the seeds of runs with the same settings into one verdict per claim", False, kind="bool"),
             Option("plot", "also draw the claims against the measured values into this file", shown="<file>.png|.pdf|.svg")),
    examples=("python -m replicate.compare outputs/mnist1d_logistic/* multirun/ format=markdown sort=verdict plot=compare.png",
              "python -m replicate.compare multirun/2026-12-01_10-00-00 combine=true"),
    positionals="<run dir | report.json | glob | multirun dir> ...",
    positional_help="the replications to show: a run directory, its report.json, a glob, or a tree of runs "
                    "(every report.json under it)",
)


def parse_arguments(argv: list[str]) -> tuple[list[str], dict]:
    """Path patterns and the checked options."""
    arguments = COMMAND.parse(argv)
    if arguments.options["plot"] is not None and Path(arguments.options["plot"]).suffix.lower() not in PLOT_SUFFIXES:
        raise CompareError(f"plot={arguments.options['plot']!r} must name a .png, .pdf or .svg file")
    if not arguments.positionals:
        raise CompareError(f"no run directory given; usage: {COMMAND.usage()}")
    return arguments.positionals, arguments.options


def find_reports(patterns: list[str]) -> list[Path]:
    """report.json paths for each argument: a file as given, a run dir's report, or every report under a tree."""
    found = []
    for pattern in patterns:
        is_glob = glob.has_magic(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if is_glob else [pattern]
        if not is_glob and not os.path.exists(pattern):
            raise CompareError(f"no such file or directory: {pattern}")
        if is_glob and not matches:
            raise CompareError(f"{pattern!r} matches nothing")
        reports = []
        for match in map(Path, matches):
            if match.is_file() and (not is_glob or match.suffix == ".json"):
                reports.append(match)
            elif match.is_dir():
                own = match / "report.json"
                reports += [own] if own.is_file() else sorted(match.rglob("report.json"))  # a multirun tree
        if not reports:
            raise CompareError(f"no report.json found in {pattern}; "
                               f"give a run directory written by `python -m replicate`")
        found += reports
    unique = {}
    for path in found:  # the same report reached through two arguments counts once
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def read_report(path: Path) -> dict:
    """Load one report.json and check it has the parts a comparison needs; CompareError says what is wrong."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise CompareError(f"{path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
    except json.JSONDecodeError as error:
        raise CompareError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(report, dict):
        raise CompareError(f"{path}: not a replicate report (a JSON {type(report).__name__}, not an object)")
    try:
        report["paper"]["id"], report["plan"]["executed_convention"]["name"], float(report["wall_time_s"])
        seeds = [seed["seed"] for seed in report["seeds"]]
        for claim in report["claims"]:
            claim["name"], claim["unit"], claim["statistic"], float(claim["claimed"]), float(claim["tolerance"])
            verdict = claim["verdict"]
            verdict["verdict"], verdict["rule"], int(verdict["n"]), float(verdict["mean"]), float(verdict["std"])
            if len(claim["measured"]) != len(seeds):
                raise ValueError(f"claim {claim['name']!r} has {len(claim['measured'])} values for {len(seeds)} seeds")
            # a diverged seed is NaN as report.json writes it, or null if another tool rewrote the file
            claim["measured"] = [math.nan if value is None else float(value) for value in claim["measured"]]
    except (KeyError, TypeError, ValueError) as error:
        detail = f"missing {error}" if isinstance(error, KeyError) else str(error)
        raise CompareError(f"{path}: not a replicate report ({detail})") from None
    return report


def load_reports(paths: list[Path], warn=warn) -> list[tuple[Path, dict]]:
    """Every readable report with its path; bad ones are skipped with a warning while at least one is good."""
    runs, problems = [], []
    for path in paths:
        try:
            runs.append((path, read_report(path)))
        except CompareError as error:
            problems.append(str(error))
    if not runs:
        more = f" (and {len(problems) - 1} more unreadable)" if len(problems) > 1 else ""
        raise CompareError(problems[0] + more)
    for problem in problems:
        warn(f"warning: skipping {problem}")
    return runs


def make_rows(runs: list[tuple[Path, dict]]) -> list[dict]:
    """One row per (run, claim), every number taken from the report as written."""
    rows = []
    for path, report in runs:
        for claim in report["claims"]:
            verdict = claim["verdict"]
            rows.append(_row(report, claim, verdict, values=claim["measured"],
                             seeds=[seed["seed"] for seed in report["seeds"]],
                             run_dirs=[str(path.parent)], wall_time_s=float(report["wall_time_s"])))
    return rows


def combine_runs(runs: list[tuple[Path, dict]], warn=warn) -> list[dict]:
    """Pool the seeds of runs with the same paper and executed convention and judge each claim again.

    A seed found in several runs counts once (the first run by path); the verdict is replicate.verdict.judge
    on the pooled per-seed values, in seed order, exactly as one run with all those seeds would be judged.
    """
    from replicate.verdict import judge_claim

    groups: dict[tuple[str, str], list[tuple[Path, dict]]] = {}
    for path, report in sorted(runs, key=lambda run: str(run[0])):
        key = (report["paper"]["id"], report["plan"]["executed_convention"]["name"])
        groups.setdefault(key, []).append((path, report))
    rows = []
    for members in groups.values():
        check_poolable(members)
        pooled, owner = {}, {}  # seed → {claim name → value}, seed → run dir it was taken from
        for path, report in members:
            for index, seed in enumerate(report["seeds"]):
                values = {claim["name"]: claim["measured"][index] for claim in report["claims"]}
                if seed["seed"] in pooled:
                    if not all(_same_value(pooled[seed["seed"]][name], value) for name, value in values.items()):
                        warn(f"warning: seed {seed['seed']} differs between {owner[seed['seed']]} and {path.parent}; "
                             f"keeping the first")
                    continue
                pooled[seed["seed"]], owner[seed["seed"]] = values, path.parent
        seeds = sorted(pooled)
        first = members[0][1]
        for claim in first["claims"]:
            values = [pooled[seed][claim["name"]] for seed in seeds]
            verdict = judge_claim(claim, values, seeds).to_dict()  # as one run with all these seeds is judged
            rows.append(_row(first, claim, verdict, values=values, seeds=seeds,
                             run_dirs=[str(path.parent) for path, _ in members],
                             wall_time_s=sum(float(report["wall_time_s"]) for _, report in members)))
    return rows


def check_poolable(members: list[tuple[Path, dict]]) -> None:
    """Runs may be pooled only if they ran the same experiment: same claims, same settings except seeds and logging."""
    (first_path, first), others = members[0], members[1:]
    for path, report in others:
        ours = {claim["name"]: claim for claim in first["claims"]}
        theirs = {claim["name"]: claim for claim in report["claims"]}
        if ours.keys() != theirs.keys():
            raise CompareError(f"cannot combine {first_path.parent} and {path.parent}: their claims differ "
                               f"({', '.join(sorted(ours))} vs {', '.join(sorted(theirs))})")
        for name, claim in ours.items():
            for key in CLAIM_DEFINITION:
                if claim.get(key) != theirs[name].get(key):
                    raise CompareError(f"cannot combine {first_path.parent} and {path.parent}: claim {name!r} has "
                                       f"{key}={claim.get(key)!r} vs {theirs[name].get(key)!r}")
        ours_config, theirs_config = _flatten(first.get("config", {})), _flatten(report.get("config", {}))
        for key in sorted(set(ours_config) | set(theirs_config)):
            if is_neutral(key):  # where and how a seed ran, not what it ran (replicate.identity)
                continue
            if ours_config.get(key, "absent") != theirs_config.get(key, "absent"):
                raise CompareError(f"cannot combine {first_path.parent} and {path.parent}: {key} is "
                                   f"{ours_config.get(key, 'absent')!r} vs {theirs_config.get(key, 'absent')!r}; "
                                   f"compare them without combine=true")


def sort_rows(rows: list[dict], by: str) -> list[dict]:
    """By paper (then convention, claim, run), by verdict (reproduced first) or by wall time (fastest first)."""
    def identity(row):
        return row["paper"], row["convention"], row["claim"], row["run_dir"]

    if by == "verdict":
        return sorted(rows, key=lambda row: (VERDICT_ORDER.get(row["verdict"], 3), *identity(row)))
    if by == "wall_time":
        return sorted(rows, key=lambda row: (row["wall_time_s"], *identity(row)))
    return sorted(rows, key=identity)


COLUMNS = ("paper", "convention", "claim", "claimed", "measured mean ± std (n)", "verdict", "rule", "wall time",
           "run dir")


def format_cells(row: dict) -> list[str]:
    from replicate.report import format_measured

    measured = format_measured({"statistic": row["statistic"], "verdict": row})
    if row["diverged"]:
        measured += f", {row['diverged']} diverged"
    return [row["paper"], row["convention"], row["claim"], f"{row['claimed']:.10g}{_unit_suffix(row['unit'])}", measured,
            row["verdict"], row["rule"], f"{row['wall_time_s']:.1f} s", row["run_dir"]]


def render_table(rows: list[dict]) -> str:
    cells = [list(COLUMNS)] + [format_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    rule = "  ".join("-" * width for width in widths)
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])


def render_markdown(rows: list[dict]) -> str:
    def escape(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = format_cells(row)
        cells[5] = f"**{cells[5]}**"
        lines.append("| " + " | ".join(escape(cell) for cell in cells) + " |")
    return "\n".join(lines)


def render_json(rows: list[dict]) -> str:
    # diverged seeds are NaN in report.json (Python's extension); here they are null, so any JSON parser reads it
    return json.dumps([_finite(row) for row in rows], indent=2, allow_nan=False)


def plot_rows(rows: list[dict], path: Path) -> None:
    """Per claim, each run's per-seed values as dots beside the claimed value and its tolerance band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        panels.setdefault((row["paper"], row["claim"]), []).append(row)
    columns = min(3, len(panels)) or 1
    lines = math.ceil(len(panels) / columns) or 1
    width = max([4.5] + [1.5 * len(members) for members in panels.values()])  # room for each run's label
    figure, axes = plt.subplots(lines, columns, figsize=(width * columns, 4 * lines), squeeze=False)
    for axis, ((paper, claim_name), members) in zip(axes.flat, panels.items()):
        labels = []
        for position, row in enumerate(members):
            # the claim and its margin are drawn per run: runs of one paper share them unless the config changed
            axis.fill_between([position - 0.4, position + 0.4], row["claimed"] - row["tolerance"],
                              row["claimed"] + row["tolerance"], color="gray", alpha=0.25, linewidth=0,
                              label="claim ± tolerance" if position == 0 else None)
            axis.hlines(row["claimed"], position - 0.4, position + 0.4, colors="black", linestyles="--",
                        label="claimed" if position == 0 else None)
            finite = [value for value in row["values"] if value is not None and math.isfinite(value)]
            # seeds spread sideways over ±0.25 so equal values stay visible as separate dots
            count = len(finite)
            offsets = [0.0] if count == 1 else [0.25 * (2 * i / (count - 1) - 1) for i in range(count)]
            axis.plot([position + offset for offset in offsets], finite, "o", alpha=0.8)
            if row["n"]:
                axis.hlines(row["mean"], position - 0.3, position + 0.3, colors="tab:red",
                            label="mean judged" if position == 0 else None)
            runs = f"{len(row['run_dirs'])} runs" if len(row["run_dirs"]) > 1 else Path(row["run_dir"]).name
            diverged = f", {row['diverged']} diverged" if row["diverged"] else ""
            labels.append(f"{row['convention']}\n{runs}\n{row['verdict']}{diverged}")
        axis.set_xticks(range(len(members)), labels, fontsize=7)
        axis.set_xlim(-0.6, len(members) - 0.4)
        axis.set(title=f"{paper}: {claim_name}", ylabel=f"{claim_name} ({members[0]['unit']})")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _row(report: dict, claim: dict, verdict: dict, *, values, seeds, run_dirs, wall_time_s) -> dict:
    return {"paper": report["paper"]["id"], "convention": report["plan"]["executed_convention"]["name"],
            "claim": claim["name"], "claimed": claim["claimed"], "unit": claim["unit"], "tolerance": claim["tolerance"],
            "statistic": claim["statistic"], "mean": verdict["mean"], "std": verdict["std"], "n": verdict["n"],
            "diverged": verdict.get("diverged", 0), "verdict": verdict["verdict"], "rule": verdict["rule"],
            "explanation": verdict.get("explanation", ""), "wall_time_s": wall_time_s, "run_dir": ", ".join(run_dirs),
            "run_dirs": run_dirs, "seeds": seeds, "values": list(values)}


def _unit_suffix(unit: str) -> str:
    return "%" if unit == "%" else "" if unit in ("fraction", "") else f" {unit}"


def _same_value(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        patterns, options = parse_arguments(argv)
        runs = load_reports(find_reports(patterns), warn=warn)
        rows = combine_runs(runs, warn=warn) if options["combine"] else make_rows(runs)
        rows = sort_rows(rows, options["sort"])
        render = {"table": render_table, "markdown": render_markdown, "json": render_json}[options["format"]]
        try:
            print(render(rows), flush=True)
        except BrokenPipeError:  # `| head` closed the pipe: not an error of the comparison
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if options["plot"]:
            try:
                plot_rows(rows, Path(options["plot"]))
            except OSError as error:
                raise CompareError(f"cannot write plot {options['plot']}: {error.strerror or error}") from None
    except (CompareError, UsageError) as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
