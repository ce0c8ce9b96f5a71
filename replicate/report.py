"""Replication reports: report.json for machines, report.md and plots for people.

    write_report(run_dir, report)   # report: the dict built by replicate.cli.build_report

Every number in report.md comes from the same dict that is written to report.json.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

from replicate.checkpoint import replace_atomically


def write_atomically(path: Path, text: str) -> None:
    """Write text so that no reader ever sees half a report."""
    replace_atomically(path, lambda file: file.write(text.encode("utf-8")))


def write_report(run_dir: Path, report: dict) -> dict:
    """Write report.json, report.md and curves.png into run_dir; return their paths."""
    run_dir = Path(run_dir)
    paths = {"json": run_dir / "report.json", "markdown": run_dir / "report.md", "plot": run_dir / "curves.png"}
    plot_learning_curves(report, paths["plot"])
    write_json(paths["json"], report)
    write_atomically(paths["markdown"], render_markdown(report, plot_name=paths["plot"].name))
    return {key: str(value) for key, value in paths.items()}


def write_json(path: Path, report: dict) -> None:
    """Strict JSON: a diverged value (NaN, ±inf) is written as null, which every JSON reader accepts."""
    write_atomically(Path(path), json.dumps(_finite(report), indent=2, allow_nan=False, default=_jsonable) + "\n")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _jsonable(value):
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return str(value)


def claimed_value_in_unit(metric_value: float, unit: str) -> float:
    """Metrics are measured as fractions and nats; claims state % or fraction."""
    return 100.0 * metric_value if unit == "%" else metric_value


def format_measured(claim: dict) -> str:
    verdict = claim["verdict"]
    if verdict["n"] == 0:
        return "diverged"
    digits = 6 if claim["statistic"] == "exact" else 2
    text = f"{verdict['mean']:.{digits}f}"
    if verdict["n"] > 1:
        text += f" ± {verdict['std']:.{digits}f}"
    return text + f" (n={verdict['n']})"


def render_markdown(report: dict, plot_name: str = "curves.png") -> str:
    paper = report["paper"]
    reproduced = all(c["verdict"]["verdict"] == "REPRODUCED" for c in report["claims"])
    title = f"# {'[Re]' if reproduced else '[¬Re]'} {paper['title']}"
    lines = [title, "",
             f"Replication of catalog entry `{paper['id']}` with `replicate` {report['software'].get('replicate', '')}.",
             f"{paper['authors']}, {paper['venue']} ({paper['year']}). Source: {paper['url']}", "",
             "## Scope", ""]
    for claim in report["claims"]:
        quote = f' — "{claim["quote"]}"' if claim.get("quote") else ""
        lines.append(f"- **{claim['name']}**: {claim['claimed']:g}{_unit(claim)} ({claim['split']} split, "
                     f"{claim['statistic'].replace('_', ' ')}), stated in {claim['location']}{quote}.")
    plan = report["plan"]
    lines += ["", "## Methodology", "",
              f"- Model: `{report['config']['model']['name']}`; data: {report['data'].get('source', report['config']['data']['name'])} "
              f"({report['data']['n_train']} train / {report['data']['n_test']} test).",
              f"- Optimizer `{plan['optimizer']}`; {report['steps']} steps of batch {report['config']['train']['batch_size']}; "
              f"schedule `{report['config']['schedule']['name']}`.",
              f"- Native conventions: {_convention_text(plan['native_convention'])}.",
              f"- Executed conventions: {_convention_text(plan['executed_convention'])}.",
              f"- Seeds: {', '.join(str(r['seed']) for r in report['seeds'])}; training path: {report['training_path']}; "
              f"dtype {report['config']['train']['dtype']}; device {report['hardware']['device']}; "
              f"{report['hardware']['threads']} thread(s); wall time {report['wall_time_s']:.1f} s.",
              f"- Hardware: {report['hardware']['cpu']}; software: "
              + ", ".join(f"{k} {v}" for k, v in report["software"].items()) + ".", "",
              "| hyperparameter | native (paper) | executed |", "|---|---|---|"]
    for key in sorted(set(plan["native_hparams"]) | set(plan["executed_hparams"])):
        lines.append(f"| {key} | {plan['native_hparams'].get(key, '—')} | {plan['executed_hparams'].get(key, '—')} |")
    if plan["rules"]:
        lines += ["", "Conversion rules (native → executed):", ""]
        for rule in plan["rules"]:
            exact = "exact" if rule["exact"] else f"NOT exact: {rule['reason']}"
            lines.append(f"- `{rule['field']}`: {rule['formula']} ({exact})")
    lines += ["", "## Results", "",
              "| claim | claimed | measured mean ± std (n) | interval | test | verdict | rule |", "|---|---|---|---|---|---|---|"]
    for claim in report["claims"]:
        interval, test = _interval_and_test(claim["verdict"]["details"])
        lines.append(f"| {claim['name']} | {claim['claimed']:g}{_unit(claim)} | {format_measured(claim)} | {interval} | "
                     f"{test} | **{claim['verdict']['verdict']}** | {claim['verdict']['rule']} |")
    lines += [""]
    for claim in report["claims"]:
        lines.append(f"- {claim['name']}: {claim['verdict']['explanation']}. Margin {claim['tolerance']:g}: "
                     f"{claim['tolerance_reason']}")
    lines += ["", "Per-seed values:", "", "| seed | " + " | ".join(c["name"] for c in report["claims"]) + " | diverged at |",
              "|---|" + "---|" * (len(report["claims"]) + 1)]
    for index, seed in enumerate(report["seeds"]):
        cells = [f"{claim['measured'][index]:.6g}" for claim in report["claims"]]
        lines.append(f"| {seed['seed']} | " + " | ".join(cells) + f" | {seed['diverged_at'] if seed['diverged_at'] is not None else '—'} |")
    lines += ["", "## Plots", "", f"![learning curves]({plot_name})", "", "## Deviations", ""]
    lines += [f"- {deviation}" for deviation in report["deviations"]] or ["- none recorded"]
    return "\n".join(lines) + "\n"


def _interval_and_test(details: dict) -> tuple[str, str]:
    """The interval a rule compared against, and its test statistic / p-value, for the results table."""
    for key in ("widened_interval", "prediction_interval", "confidence_interval_difference", "confidence_interval", "interval"):
        if key in details:
            low, high = details[key]
            label = "difference " if key == "confidence_interval_difference" else ""
            interval = f"{label}[{low:.4g}, {high:.4g}]"
            break
    else:
        interval = "—"
    if "p_equivalence" in details:
        test = f"TOST p = {details['p_equivalence']:.3g}; difference p = {details['p_difference']:.3g}"
    elif "prediction_interval" in details:
        test = f"{100 * details['level']:g}% prediction interval"
    elif "rounded" in details:
        test = f"rounded to {details['decimals']} decimals"
    elif "n_claimed" in details:
        test = f"bootstrap, {100 * details['level']:g}% range"
    elif "bound" in details:
        test = f"one-sided {100 * details['level']:g}% bound"
    else:
        test = "—"
    return interval, test


def _unit(claim: dict) -> str:
    return "%" if claim["unit"] == "%" else f" {claim['unit']}" if claim["unit"] not in ("fraction", "") else ""


CONVENTION_FIELDS = ("loss_reduction", "weight_decay_form", "momentum_form", "eps_placement", "lr_unit")


def _convention_text(convention: dict) -> str:
    text = ", ".join(f"{key}={convention[key]}" for key in CONVENTION_FIELDS if key in convention)
    if convention.get("lr_unit") == "per_n_examples":
        text += f" (N={convention['lr_unit_examples']}, momentum-normalized={convention['lr_momentum_normalized']})"
    return f"`{convention.get('name', '')}`: {text}"


def plot_learning_curves(report: dict, path: Path) -> None:
    """Learning curves of every seed, with each claim and its margin drawn as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    claims = report["claims"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for seed in report["seeds"]:
        steps = [point["step"] for point in seed["curve"]]
        axes[0].plot(steps, [point["train_loss"] for point in seed["curve"]], alpha=0.7, label=f"seed {seed['seed']}")
        if seed["curve"] and "test_accuracy" in seed["curve"][0]:
            axes[1].plot(steps, [100 * point["test_accuracy"] for point in seed["curve"]], alpha=0.7)
    axes[0].set(xlabel="step", ylabel="training loss (batch mean)", yscale="log", title="training loss")
    axes[0].legend(fontsize=7)
    for claim in claims:
        if claim["metric"] == "test_accuracy":
            scale = 1.0 if claim["unit"] == "%" else 100.0
            value, margin = claim["claimed"] * scale, claim["tolerance"] * scale
            axes[1].axhline(value, color="black", linestyle="--", label=f"claim {value:g}%")
            axes[1].axhspan(value - margin, value + margin, color="gray", alpha=0.2, label=f"margin ±{margin:g}")
            axes[1].legend(fontsize=7)
    axes[1].set(xlabel="step", ylabel="test accuracy (%)", title="test accuracy")
    for index, claim in enumerate(claims):  # per-seed final values against each claim (shifted to the claim)
        measured = [value for value in claim["measured"] if value is not None and math.isfinite(value)]
        axes[2].scatter([index] * len(measured), [value - claim["claimed"] for value in measured], zorder=3)
        axes[2].errorbar(index, 0, yerr=claim["tolerance"], color="black", capsize=8, linewidth=2)
    axes[2].axhline(0, color="black", linestyle="--", linewidth=0.8)
    axes[2].set_xticks(range(len(claims)), [claim["name"] for claim in claims], fontsize=8)
    axes[2].set(ylabel="measured − claimed (claim's unit)", title="per-seed final values vs claim (bar: margin)")
    figure.suptitle(f"{report['paper']['id']}: {len(report['seeds'])} seeds")
    figure.tight_layout()
    buffer = io.BytesIO()  # written atomically like the reports: same permissions, no half-written file
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=100)
    plt.close(figure)
    replace_atomically(path, lambda file: file.write(buffer.getbuffer()))
