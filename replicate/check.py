"""`python -m replicate.check <source>`: rerun a recorded replication under its recorded numerics and say
how the numbers compare: identical, float_noise, same_distribution or different, per seed and overall,
with the environment fields that differ and the most likely cause.

    python -m replicate.check papers/mnist1d_mlp.md            # a catalog record
    python -m replicate.check outputs/mnist1d_mlp/2026-11-25_19-20-00 format=json
    python -m replicate.check papers/mnist1d_cnn.md seeds=1     # shortened: the first seed only
    python -m replicate.check <run dir> train.steps=500         # shortened: compared with the recorded curve

The rerun is `python -m replicate` in a fresh process, with the recorded overrides, seeds, thread count
and runtime.numerics, and the recorded pins as its environment. The classes (docs/numerics.md):
identical: equal bit for bit (to the decimals stored, for records that store rounded values);
float_noise: within what evaluating the same parameters in another summation order can change: one
example's prediction for an accuracy, γ(N)·|value| for a mean over N examples (u of the run's dtype);
same_distribution: a two-sided Mann–Whitney U test on the per-seed values finds no difference (p ≥ 0.05);
different: otherwise. Exit status 0 unless `different` (1) or the check could not run (2).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from replicate.arguments import Command, Option, UsageError, fail

CLASSES = ("identical", "float_noise", "same_distribution", "different")
ALPHA = 0.05  # the two-sample test's level
LOCAL_KEYS = ("logger", "seeds", "seed", "hydra.", "runtime.", "resume", "wandb.", "paper")  # set by the check itself
COMPARED = ("settings", "cpu_capability", "host_isa", "blas", "mkl", "onednn", "openblas", "threads", "dtype",
            "precision", "float32_matmul_precision", "deterministic", "data_sha256")
TOTAL_STEP_SCHEDULES = ("cosine", "piecewise_linear")  # their lr at a step depends on the run's length


class CheckError(ValueError):
    """The check cannot run: a one-line message."""


def load_reference(source: str) -> dict:
    """What the source says was run and measured: {paper, overrides, seeds, steps, numerics, software,
    claims: [{name, per_seed, decimals}], curves (run directories only), kind}."""
    from replicate.catalog import read_result

    path = Path(source)
    if path.is_dir():
        path = path / "report.json"
    if not path.exists():
        raise CheckError(f"{source} does not exist; give papers/<id>.md, a run directory or its report.json")
    if path.suffix == ".md":
        result = read_result(path)
        if not result:
            raise CheckError(f"{source} holds no measured result yet; record one with python -m replicate.catalog update")
        claims = [{"name": claim["name"], "per_seed": claim.get("per_seed_exact", claim["per_seed"]),
                   "decimals": None if "per_seed_exact" in claim else 6} for claim in result["claims"]]
        return {"kind": "record", "paper": result["paper"], "overrides": result.get("overrides", []),
                "seeds": result["seeds"], "steps": result["steps"], "numerics": result.get("numerics"),
                "software": result.get("software", {}), "cpu": result.get("hardware", "").split(",")[0],
                "claims": claims, "curves": None, "schedule": None}
    try:
        report = json.loads(path.read_text())
        return {"kind": "report", "paper": report["paper"]["id"], "overrides": report.get("overrides", []),
                "seeds": [seed["seed"] for seed in report["seeds"]], "steps": report["steps"],
                "numerics": report.get("numerics"), "software": report.get("software", {}),
                "cpu": report["hardware"]["cpu"], "claims": [{"name": claim["name"], "per_seed": claim["measured"], "decimals": None}
                           for claim in report["claims"]],
                "curves": {seed["seed"]: seed["curve"] for seed in report["seeds"]},
                "schedule": report["config"]["schedule"]["name"]}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckError(f"{path} is not a replicate report ({error}); give papers/<id>.md, a run directory or report.json")


def rerun_command(reference: dict, seeds: list[int], steps: int | None, run_dir: Path) -> tuple[list[str], dict]:
    """The command line and environment that repeat the recorded run (shortened to `seeds`, `steps`)."""
    numerics = reference["numerics"] or {}
    local = LOCAL_KEYS + (("train.steps=", "train.eval_every=") if steps is not None else ())
    overrides = [item for item in reference["overrides"] if not item.lstrip("+~").startswith(local)]
    seeds_override = f"seed={seeds[0]}" if len(seeds) == 1 and seeds != [0] else f"seeds={len(seeds)}"
    if seeds != list(range(len(seeds))) and len(seeds) > 1:
        raise CheckError(f"recorded seeds {seeds} are not 0..n-1; check them one at a time")
    args = [f"paper={reference['paper']}", *overrides, seeds_override, "logger=none", "runtime.progress=false",
            "resume=false", f"hydra.run.dir={run_dir}", f"runtime.numerics={numerics.get('mode', 'portable')}"]
    if numerics.get("threads") and len(seeds) == len(reference["seeds"]):
        # the recorded thread count; fewer seeds take the CLI's default for their number, as a seed alone at
        # one thread equals it batched, where it would not at several (README, "Performance")
        args.append(f"runtime.threads={numerics['threads']}")
    if steps is not None:
        curve = next(iter(reference["curves"].values()))
        args += [f"train.steps={steps}", f"train.eval_every={curve[1]['step'] - curve[0]['step'] if len(curve) > 1 else steps}"]
    # the recorded pins; a setting the recording host left unset stays as this host has it (native: its own choice)
    environment = {**os.environ, **{name: value for name, value in (numerics.get("settings") or {}).items() if value}}
    return [sys.executable, "-m", "replicate", *args], environment


def float_noise_tolerance(metric: str, unit: str | None, value: float, n_examples: int, dtype: str) -> float:
    """How far the same parameters, evaluated in another summation order, can move a metric (docs/numerics.md)."""
    if "accuracy" in metric:  # a prediction flips only where two logits tie to rounding: one example at most
        return (100.0 if unit == "%" else 1.0) / n_examples
    u = 2.0 ** -24 if dtype == "float32" else 2.0 ** -53
    return n_examples * u / (1 - n_examples * u) * abs(value)  # a mean of N nonnegative terms (Higham γ(N))


def classify_seed(recorded: float, rerun: float, decimals: int | None, tolerance: float) -> str:
    if (round(rerun, decimals) if decimals is not None else rerun) == recorded or (math.isnan(recorded) and math.isnan(rerun)):
        return "identical"
    return "float_noise" if abs(rerun - recorded) <= tolerance else "differs"


def classify_values(recorded: list[float], rerun: list[float], per_seed: list[str]) -> tuple[str, dict | None]:
    """Overall class of one quantity over seeds, and the two-sample test when one was needed."""
    if all(label == "identical" for label in per_seed):
        return "identical", None
    if all(label in ("identical", "float_noise") for label in per_seed):
        return "float_noise", None
    if len(recorded) < 2 or len(rerun) < 2:
        return "different", {"test": "none: a two-sample test needs at least 2 values per side"}
    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(recorded, rerun, alternative="two-sided")
    test = {"test": "Mann-Whitney U, two-sided", "statistic": float(result.statistic), "p": float(result.pvalue),
            "alpha": ALPHA}
    return ("same_distribution" if result.pvalue >= ALPHA else "different"), test


def compare(reference: dict, report: dict, seeds: list[int], steps: int | None) -> list[dict]:
    """Per quantity (a claim, or a metric at the shortened step), per seed and overall classes."""
    dtype = report["config"]["train"]["dtype"]
    index = [reference["seeds"].index(seed) for seed in seeds]
    quantities = []
    if steps is None:
        claims = {claim["name"]: claim for claim in report["claims"]}
        for claim in reference["claims"]:
            rerun = claims[claim["name"]]
            recorded = [claim["per_seed"][i] for i in index]
            n = report["data"]["n_test" if rerun["split"] == "test" else "n_train"]
            quantities.append({"name": claim["name"], "recorded": recorded, "rerun": rerun["measured"],
                               "metric": rerun["metric"], "unit": rerun["unit"], "n": n, "decimals": claim["decimals"]})
    else:
        points = [next((p for p in reference["curves"][seed] if p["step"] == steps), None) for seed in seeds]
        if None in points:
            steps_recorded = [p["step"] for p in reference["curves"][seeds[0]]]
            raise CheckError(f"train.steps={steps} is no step of the recorded curve; choose one of {steps_recorded}")
        finals = [next(p for p in seed["curve"] if p["step"] == steps) for seed in report["seeds"]]
        for metric in sorted(set(points[0]) - {"step", "train_loss"}):  # train_loss: a mean since the previous point
            n = report["data"]["n_test" if metric.startswith("test") else "n_train"]
            quantities.append({"name": f"{metric} at step {steps}", "recorded": [p[metric] for p in points],
                               "rerun": [p[metric] for p in finals], "metric": metric, "unit": None, "n": n, "decimals": None})
    for quantity in quantities:
        quantity["per_seed"] = [classify_seed(old, new, quantity["decimals"],
                                              float_noise_tolerance(quantity["metric"], quantity["unit"], old, quantity["n"], dtype))
                                for old, new in zip(quantity["recorded"], quantity["rerun"])]
        quantity["classification"], quantity["test"] = classify_values(quantity["recorded"], quantity["rerun"], quantity["per_seed"])
        # once any seed's run diverged, a seed that lands within float noise of its record is a coincidence
        # of the discrete metric (one example), not evidence that its run stayed together: it takes the overall class
        overall = quantity["classification"]
        if overall in ("same_distribution", "different"):
            quantity["per_seed"] = [label if label == "identical" else overall for label in quantity["per_seed"]]
    return quantities


def environment_differences(reference: dict, report: dict) -> list[dict]:
    recorded, current = reference["numerics"] or {}, report.get("numerics", {})
    differences = [{"field": key, "recorded": recorded.get(key), "rerun": current.get(key)} for key in COMPARED
                   if key in recorded and recorded.get(key) != current.get(key)]
    if reference["cpu"] != report["hardware"]["cpu"]:
        differences.append({"field": "cpu", "recorded": reference["cpu"], "rerun": report["hardware"]["cpu"]})
    for package in ("torch", "numpy", "python", "mnist1d", "scikit-learn"):
        if package in reference["software"] and reference["software"][package] != report["software"].get(package):
            differences.append({"field": package, "recorded": reference["software"][package],
                                "rerun": report["software"].get(package)})
    return differences


def likely_cause(classification: str, differences: list[dict], reference: dict, report: dict) -> str | None:
    if classification == "identical":
        return None
    fields = {difference["field"]: difference for difference in differences}
    if "cuda" in report["execution"]["device"]:
        return "a GPU run: its kernels promise no bit equality across GPU models, drivers or library versions"
    for field, cause in (("data_sha256", "the data differ (content hash): regenerated by another numpy/mnist1d or CPU path"),
                         ("torch", "another PyTorch version: its kernels may sum in another order"),
                         ("cpu_capability", "PyTorch ran other vector kernels ({recorded} → {rerun}): run both under runtime.numerics=portable"),
                         ("settings", "other numerics pins ({recorded} → {rerun})"),
                         ("mkl", "another MKL ({recorded} → {rerun})"), ("onednn", "another oneDNN ({recorded} → {rerun})"),
                         ("threads", "another thread count ({recorded} → {rerun}): the BLAS may split products otherwise"),
                         ("numpy", "another numpy ({recorded} → {rerun})")):
        if field in fields:
            return cause.format(**fields[field])
    if reference["numerics"] is None:
        return (f"the source records no numerics: made before they were recorded, with the kernels {reference['cpu']} "
                "chose natively; the rerun used runtime.numerics=portable")
    if not report.get("numerics", {}).get("pinned"):
        return "the rerun's numerics are not pinned (runtime.numerics=native, or a caller's own environment setting)"
    return "no recorded field differs: a code path the pins do not cover, or nondeterminism"


COMMAND = Command(
    "replicate.check",
    "Rerun a recorded replication under its recorded numerics (a fresh `python -m replicate` with the recorded "
    "overrides, seeds, thread count, runtime.numerics and pins) and say how the numbers compare, per seed and "
    "overall: identical, float_noise, same_distribution or different, with the environment fields that "
    "differ and the likely cause. Exit status 1 for different, 2 if the check cannot run.",
    options=(Option("format", "what to print", "text", choices=("text", "json")),
             Option("seeds", "rerun only the first n seeds (the output says SHORTENED)", kind="int", minimum=1),
             Option("train.steps", "rerun n steps and compare with the recorded curve (run directories only)",
                    kind="int", minimum=1)),
    examples=("python -m replicate.check papers/mnist1d_mlp.md",
              "python -m replicate.check outputs/mnist1d_mlp/2026-11-25_19-20-00 format=json",
              "python -m replicate.check papers/mnist1d_cnn.md seeds=2"),
    positionals="<papers/<id>.md | run dir | report.json>",
    positional_help="the record to check: a catalog record, a run directory, or its report.json",
)


def parse_arguments(argv: list[str]) -> tuple[str, dict]:
    arguments = COMMAND.parse(argv)
    if len(arguments.positionals) != 1:
        raise CheckError(f"name one record to check, got {len(arguments.positionals)}; usage: {COMMAND.usage()}")
    return arguments.positionals[0], arguments.options


def check(source: str, options: dict) -> dict:
    reference = load_reference(source)
    seeds = reference["seeds"][:options["seeds"]] if options["seeds"] else reference["seeds"]
    steps = options["train.steps"]
    if steps is not None:
        if reference["curves"] is None:
            raise CheckError(f"{source} stores final values only; shorten a record's check with seeds=<n>, "
                             "or check a run directory (it holds learning curves) with train.steps")
        if reference["schedule"] in TOTAL_STEP_SCHEDULES:
            raise CheckError(f"schedule {reference['schedule']} depends on the run's length: a shortened run "
                             "takes other steps; check it at full length or with seeds=<n>")
    shortened = [text for text, applies in ((f"{len(seeds)} of {len(reference['seeds'])} seeds", len(seeds) < len(reference["seeds"])),
                                            (f"{steps} of {reference['steps']} steps", steps is not None)) if applies]
    with tempfile.TemporaryDirectory(prefix="replicate-check-") as run_dir:
        command, environment = rerun_command(reference, seeds, steps, Path(run_dir))
        finished = subprocess.run(command, env=environment, capture_output=True, text=True)
        if finished.returncode != 0:
            raise CheckError(f"the rerun failed (exit {finished.returncode}): "
                             + (finished.stderr.strip().splitlines() or ["no output"])[-1])
        report = json.loads((Path(run_dir) / "report.json").read_text())
    quantities = compare(reference, report, seeds, steps)
    classification = max((quantity["classification"] for quantity in quantities), key=CLASSES.index)
    differences = environment_differences(reference, report)
    return {"classification": classification, "source": source, "paper": reference["paper"],
            "shortened": ", ".join(shortened) or None, "seeds": seeds, "quantities": quantities,
            "environment_differences": differences,
            "likely_cause": likely_cause(classification, differences, reference, report),
            "command": " ".join(["python", *command[1:]]), "numerics": report.get("numerics")}


def format_text(result: dict) -> str:
    lines = [f"check {result['paper']} ({result['source']})"
             + (f": SHORTENED to {result['shortened']}" if result["shortened"] else ""), f"rerun: {result['command']}"]
    for quantity in result["quantities"]:
        lines.append(f"{quantity['name']}:")
        rounded = f" (to the {quantity['decimals']} decimals recorded)" if quantity["decimals"] is not None else ""
        for seed, old, new, label in zip(result["seeds"], quantity["recorded"], quantity["rerun"], quantity["per_seed"]):
            lines.append(f"  seed {seed}: recorded {old!r}, rerun {new!r} → {label}{rounded if label == 'identical' else ''}")
        test = quantity["test"]
        detail = f" ({test['test']}, p = {test['p']:.3f})" if test and "p" in test else ""
        lines.append(f"  overall: {quantity['classification']}{detail}")
    differences = result["environment_differences"]
    lines.append("environment differences: " + ("; ".join(f"{d['field']}: {d['recorded']} → {d['rerun']}" for d in differences)
                                                if differences else "none"))
    if result["likely_cause"]:
        lines.append(f"likely cause: {result['likely_cause']}")
    lines.append(f"classification: {result['classification']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        source, options = parse_arguments(sys.argv[1:] if argv is None else argv)
        result = check(source, options)
    except (CheckError, UsageError) as error:
        return fail(error)
    print(json.dumps(result, indent=1) if options["format"] == "json" else format_text(result))
    return 1 if result["classification"] == "different" else 0


if __name__ == "__main__":
    sys.exit(main())
