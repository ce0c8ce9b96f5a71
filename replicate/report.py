"""Replication reports: report.json for machines, report.md and plots for people.

    write_report(run_dir, report)   # report: the dict built by replicate.replication.replicate_paper

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
    write_atomically(Path(path), render_json_text(report))


def render_json_text(report: dict) -> str:
    return json.dumps(_finite(report), indent=2, allow_nan=False, default=_jsonable) + "\n"


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


# a claim's unit; metrics are measured as fractions, nats and perplexities (exp of nats per word), a % claim is compared × 100
UNITS = ("%", "fraction", "nats", "perplexity")


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
    title = f"# {title_marker(report['claims'])} {paper['title']}"
    lines = [title, "",
             f"Replication of catalog entry `{paper['id']}` with `replicate` {report['software'].get('replicate', '')}.",
             f"{paper['authors']}, {paper['venue']} ({paper['year']}). Source: {paper['url']}", "",
             "## Scope", ""]
    for claim in report["claims"]:
        quote = f' — "{claim["quote"]}"' if claim.get("quote") else ""
        lines.append(f"- **{claim['name']}**: {claim['claimed']:.10g}{_unit(claim)} ({claim['split']} split, "
                     f"{claim['statistic'].replace('_', ' ')}), stated in {claim['location']}{quote}.")
    plan = report["plan"]
    lines += ["", "## Methodology", "",
              f"- Model: `{report['config']['model']['name']}`; data: {report['data'].get('source', report['config']['data']['name'])} "
              f"({report['data']['n_train']} train / {report['data']['n_test']} test).",
              f"- Optimizer `{plan['optimizer']}`; {'at most ' if any(seed.get('early_stopping') for seed in report['seeds']) else ''}"
              f"{report['steps']} steps of batch {report['config']['train']['batch_size']}; "
              f"schedule `{report['config']['schedule']['name']}`.",
              f"- Native conventions: {_convention_text(plan['native_convention'])}.",
              f"- Executed conventions: {_convention_text(plan['executed_convention'])}.",
              *_recipe_lines(report["config"]),
              f"- Seeds: {', '.join(str(r['seed']) for r in report['seeds'])}; training path: {report['training_path']}; "
              f"dtype {report['config']['train']['dtype']}; device {report['hardware']['device']}; "
              f"{report['hardware']['threads']} thread(s); wall time {report['wall_time_s']:.1f} s.",
              f"- Hardware: {report['hardware']['cpu']}; software: "
              + ", ".join(f"{k} {v}" for k, v in report["software"].items()) + ".", "",
              "| hyperparameter | native (paper) | executed |", "|---|---|---|"]
    for key in sorted(set(plan["native_hparams"]) | set(plan["executed_hparams"])):
        lines.append(f"| {key} | {plan['native_hparams'].get(key, '—')} | {plan['executed_hparams'].get(key, '—')} |")
    for group in plan.get("param_groups", []):  # optimizer.param_groups, first match wins
        lines.append(f"| lr [{group['match']}] | lr × {group['lr_mult']:g} | lr × {group['lr_mult']:g} |")
        lines.append(f"| weight_decay [{group['match']}] | {group['native_weight_decay']:g} | {group['executed_weight_decay']:g} |")
    if plan["rules"]:
        lines += ["", "Conversion rules (native → executed):", ""]
        for rule in plan["rules"]:
            exact = "exact" if rule["exact"] else f"NOT exact: {rule['reason']}"
            lines.append(f"- `{rule['field']}`: {rule['formula']} ({exact})")
        for group in plan.get("param_groups", []):
            exact = "exact" if group["exact"] else f"NOT exact: {group['reason']}"
            lines.append(f"- `weight_decay[{group['match']}]`: {group['rule']} ({exact})")
    lines += ["", "## Results", "",
              "| claim | claimed | measured mean ± std (n) | interval | test | verdict | rule |", "|---|---|---|---|---|---|---|"]
    for claim in report["claims"]:
        interval, test = _interval_and_test(claim["verdict"]["details"])
        lines.append(f"| {claim['name']} | {claim['claimed']:.10g}{_unit(claim)} | {format_measured(claim)} | {interval} | "
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
    lines += early_stopping_lines(report["seeds"])
    lines += ["", "## Plots", "", f"![learning curves]({plot_name})", "", "## Deviations", ""]
    lines += [f"- {deviation}" for deviation in report["deviations"]] or ["- none recorded"]
    return "\n".join(lines) + "\n"


def early_stopping_lines(seeds: list) -> list[str]:
    """Where each seed's measured parameters come from under train.early_stopping: its best validation point."""
    stopped = [seed for seed in seeds if seed.get("early_stopping")]
    if not stopped:
        return []
    lines = ["", "Early stopping: every metric above is measured with each seed's parameters at its best validation "
                 "point (train.early_stopping).", ""]
    for seed in stopped:
        record = seed["early_stopping"]
        criterion = record["criterion"]
        best = record.get(f"best_valid_{criterion}")
        value = "—" if best is None else (f"{100 * best:.6f} %" if criterion == "error" else f"{best:.6g} nats")
        end = f"stopped after step {record['stopped_at']}" if record["stopped_at"] is not None else "ran all its steps"
        lines.append(f"- seed {seed['seed']}: best validation {criterion} {value} at step {record['best_step']}; {end} "
                     f"({len(record['validations'])} validations, patience {record['patience']:g} steps)")
    return lines


def _recipe_lines(config: dict) -> list[str]:
    """What the loss and the evaluation include beyond plain cross-entropy, when the recipe says so."""
    train, lines = config["train"], []
    if train.get("label_smoothing"):
        lines.append(f"- Loss: cross-entropy with label smoothing ε = {train['label_smoothing']:g}; the training loss of "
                     "the curves includes it, the evaluated train_loss and test_loss are plain cross-entropy.")
    if train.get("tta", "none") != "none":
        lines.append(f"- The test split is evaluated with test-time augmentation `{train['tta']}` (replicate/tta.py).")
    if config.get("lookahead", {}).get("every"):
        lookahead = config["lookahead"]
        lines.append(f"- Lookahead every {lookahead['every']} steps (base {lookahead['base']:g}, power {lookahead['power']:g}).")
    return lines


def title_marker(claims: list) -> str:
    """[Re] when every claim is reproduced, [¬Re] when any is contradicted, [?Re] when the seeds cannot tell yet."""
    words = {claim["verdict"]["verdict"] for claim in claims}
    if words <= {"REPRODUCED"}:
        return "[Re]"
    return "[¬Re]" if "NOT_REPRODUCED" in words else "[?Re]"


def _interval_and_test(details: dict) -> tuple[str, str]:
    """The interval a rule compared the claim with, and the test it used, for the results table."""
    if "agreement_band" in details:  # prediction_band
        (low, high), (agree_low, agree_high) = details["widened_interval"], details["agreement_band"]
        interval = f"agree [{agree_low:.4g}, {agree_high:.4g}]; contradict outside [{low:.4g}, {high:.4g}]"
        return interval, (f"{details['statistic_of']} predicted at {details['predicted']:.4g} ± "
                          f"{details['predictive_std']:.3g}; {100 * details['level']:g}% prediction interval + margin")
    if "confidence_interval_difference" in details:  # tost
        low, high = details["confidence_interval_difference"]
        test = (f"TOST p = {details['p_equivalence']:.3g}; difference p = {details['p_difference']:.3g}"
                if "p_equivalence" in details else "no spread: difference vs margin")
        return f"difference [{low:.4g}, {high:.4g}] ({100 * details['level']:g}%)", test
    if "rounded" in details:  # exact_digits
        if details.get("matches", False):
            return "—", f"matches to the printed digits ({details['decimals']} decimals)"
        decimals = details["decimals"]
        return "—", f"differs at {decimals} decimals: " + ", ".join(f"{r:.{decimals}f}" for r in details["rounded"])
    if "bound" in details:  # one_sided_bound
        low, high = details["confidence_interval"]
        return f"[{low:.4g}, {high:.4g}]", f"one-sided {100 * details['level']:g}% bounds vs {details['bound']:.4g}"
    for key in ("widened_interval", "interval"):  # reports written by earlier versions
        if key in details:
            return f"[{details[key][0]:.4g}, {details[key][1]:.4g}]", "—"
    return "—", "—"


def _unit(claim: dict) -> str:
    return "%" if claim["unit"] == "%" else f" {claim['unit']}" if claim["unit"] not in ("fraction", "") else ""


CONVENTION_FIELDS = ("loss_reduction", "weight_decay_form", "momentum_form", "eps_placement", "lr_unit")


def _convention_text(convention: dict) -> str:
    text = ", ".join(f"{key}={convention[key]}" for key in CONVENTION_FIELDS if key in convention)
    if convention.get("lr_unit") == "per_n_examples":
        text += f" (N={convention['lr_unit_examples']}, momentum-normalized={convention['lr_momentum_normalized']})"
    return f"`{convention.get('name', '')}`: {text}"


CURVE_KEYS = {"test_accuracy": "test_accuracy", "train_accuracy": "train_accuracy", "test_loss": "test_loss",
              "train_loss": "train_loss", "train_epoch_loss": "train_loss", "test_error": "test_accuracy"}  # the curve that traces each claim's metric
VERDICT_COLORS = {"REPRODUCED": "tab:green", "INCONCLUSIVE": "tab:orange", "NOT_REPRODUCED": "tab:red"}


def plot_learning_curves(report: dict, path: Path) -> None:
    """Top: every seed's learning curves, with each claim on the curve of its metric and split. Bottom: one
    panel per claim with the per-seed values, the claim and the interval or test its verdict used."""
    figure = draw_learning_curves(report)  # selects the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()  # written atomically like the reports: same permissions, no half-written file
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=100)
    plt.close(figure)
    replace_atomically(path, lambda file: file.write(buffer.getbuffer()))


def draw_learning_curves(report: dict):
    """The figure of plot_learning_curves: axes[0] training loss, axes[1] accuracy, then one per claim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    claims = report["claims"]
    figure = plt.figure(figsize=(15, 8.5))
    grid = figure.add_gridspec(2, max(2, len(claims)))
    top = grid[0, :].subgridspec(1, 2)
    loss_axis, accuracy_axis = figure.add_subplot(top[0]), figure.add_subplot(top[1])
    claimed_metrics = {claim["metric"] for claim in claims}
    for seed in report["seeds"]:
        curve, steps = seed["curve"], [point["step"] for point in seed["curve"]]
        line, = loss_axis.plot(steps, [point["train_loss"] for point in curve], alpha=0.7, label=f"seed {seed['seed']}")
        if curve and "test_loss" in curve[0] and "test_loss" in claimed_metrics:
            loss_axis.plot(steps, [point["test_loss"] for point in curve], ":", color=line.get_color(), alpha=0.7)
        for key, style in (("test_accuracy", "-"), ("train_accuracy", "--")):
            if curve and key in curve[0]:
                accuracy_axis.plot(steps, [100 * point[key] for point in curve], style, color=line.get_color(), alpha=0.7,
                                   label=f"{key.replace('_', ' ')}" if seed is report["seeds"][0] else None)
        validations = (seed.get("early_stopping") or {}).get("validations", [])
        if validations and "valid_error" in validations[0]:  # the validation split, drawn as accuracy
            accuracy_axis.plot([point["step"] for point in validations], [100 * (1 - point["valid_error"]) for point in validations],
                               "-.", color=line.get_color(), alpha=0.7, label="validation accuracy" if seed is report["seeds"][0] else None)
        if seed.get("early_stopping", {}).get("best_step") is not None:  # the point whose parameters were measured
            accuracy_axis.axvline(seed["early_stopping"]["best_step"], color=line.get_color(), linestyle=":", linewidth=1,
                                  label=f"seed {seed['seed']}: best validation, step {seed['early_stopping']['best_step']}")
    last_step = max((seed["curve"][-1]["step"] for seed in report["seeds"] if seed["curve"]), default=0)
    for claim in claims:
        axis, shown, note = _claim_axis(claim, accuracy_axis, loss_axis)
        color = VERDICT_COLORS.get(claim["verdict"]["verdict"], "black")
        axis.axhline(shown(claim["claimed"]), color=color, linestyle="--", linewidth=1,
                     label=f"claim ({claim['split']}): {claim['claimed']:.10g}{_unit(claim)}{note} — {claim['verdict']['verdict']}")
        band = claim["verdict"]["details"].get("agreement_band")
        if band:  # the band that would have made the verdict REPRODUCED, at the end of training
            low, high = sorted(shown(value) for value in band)
            axis.errorbar(last_step, (low + high) / 2, yerr=(high - low) / 2, color=color, capsize=6, linewidth=2)
    loss_axis.set(xlabel="step", ylabel="training loss (batch mean)", yscale="log", title="training loss")
    accuracy_axis.set(xlabel="step", ylabel="accuracy (%)", title="accuracy (test solid, training dashed" + (
        ", validation dash-dot)" if any(seed.get("early_stopping") for seed in report["seeds"]) else ")"))
    for axis in (loss_axis, accuracy_axis):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    if not accuracy_axis.lines:
        accuracy_axis.text(0.5, 0.5, "no accuracy recorded", ha="center", va="center", transform=accuracy_axis.transAxes)
    for index, claim in enumerate(claims):
        _plot_verdict(figure.add_subplot(grid[1, index]), claim)
    figure.suptitle(f"{report['paper']['id']}: {len(report['seeds'])} seeds")
    figure.tight_layout()
    return figure


def _claim_axis(claim: dict, accuracy_axis, loss_axis):
    """Where a claim's line goes, the map from its unit to that axis, and what the label adds: an accuracy in %, an
    error as the accuracy it leaves (100 % − error), a loss in nats, a perplexity as its per-word loss ln(perplexity)."""
    metric, unit = claim["metric"], claim["unit"]
    if metric.endswith(("accuracy", "error")):
        scale = 1.0 if unit == "%" else 100.0
        if metric.endswith("error"):
            return accuracy_axis, lambda value: 100.0 - value * scale, " error"
        return accuracy_axis, lambda value: value * scale, ""
    if unit == "perplexity":
        return loss_axis, math.log, f" (ln: {math.log(claim['claimed']):.4g} nats)"
    return loss_axis, lambda value: value, ""


def _plot_verdict(axis, claim: dict) -> None:
    """Per-seed values, the claim, and what the rule compared the claim with (in the claim's unit)."""
    verdict, details = claim["verdict"], claim["verdict"]["details"]
    values = [value for value in claim["measured"] if value is not None and math.isfinite(value)]
    color = VERDICT_COLORS.get(verdict["verdict"], "black")
    axis.set_title(f"{claim['name']}: {verdict['verdict']}", color=color, fontsize=9)
    axis.set_xticks([])
    if "rounded" in details:  # exact digits: offsets of 1e-7 are not misses, the printed digits decide
        decimals, unit = details["decimals"], 10.0 ** -details["decimals"]
        axis.scatter(range(len(details["rounded"])), details["rounded"], color=color, zorder=3, label="runs, as printed")
        axis.axhline(claim["claimed"], color="black", linestyle="--", label="claim")
        axis.axhspan(claim["claimed"] - unit / 2, claim["claimed"] + unit / 2, color="gray", alpha=0.2, label="same printed digits")
        axis.set_ylim(claim["claimed"] - 3 * unit, claim["claimed"] + 3 * unit)
        axis.yaxis.set_major_formatter(f"{{x:.{decimals}f}}")
        text = "matches to the printed digits" if details.get("matches") else f"differs at {decimals} decimals"
        axis.text(0.5, 0.9, text, ha="center", transform=axis.transAxes, color=color)
        axis.legend(fontsize=7, loc="lower right")
        return
    axis.scatter([0] * len(values), values, color="black", s=12, zorder=3, label="seeds")
    axis.axhline(claim["claimed"], color=color, linestyle="--", label=f"claim {claim['claimed']:.10g}")
    if "agreement_band" in details:
        low, high = details["widened_interval"]
        axis.axhspan(*details["agreement_band"], color="tab:green", alpha=0.25, label="agreement band (REPRODUCED inside)")
        for edge in (low, high):
            axis.axhline(edge, color="tab:red", linestyle=":", label="95% prediction + margin" if edge == low else None)
        axis.errorbar(1, details["predicted"], yerr=details["predictive_std"], fmt="o", color="tab:blue", capsize=5,
                      label=f"{details['statistic_of']}: predicted ± 1 sd")
    elif "confidence_interval_difference" in details:
        low, high = (verdict["mean"] + bound for bound in (details["confidence_interval_difference"][0] - details["difference"],
                                                          details["confidence_interval_difference"][1] - details["difference"]))
        axis.axhspan(claim["claimed"] - claim["tolerance"], claim["claimed"] + claim["tolerance"], color="gray", alpha=0.2,
                     label=f"claim ± margin {claim['tolerance']:g}")
        axis.errorbar(1, verdict["mean"], yerr=[[verdict["mean"] - low], [high - verdict["mean"]]], fmt="o", capsize=5,
                      color="tab:blue", label=f"mean, {100 * details['level']:g}% interval (TOST)")
    elif "bound" in details:
        low, high = details["confidence_interval"]
        axis.axhline(details["bound"], color="gray", label="bound (claim ∓ margin)")
        axis.errorbar(1, verdict["mean"], yerr=[[verdict["mean"] - low], [high - verdict["mean"]]], fmt="o", capsize=5,
                      color="tab:blue", label=f"mean, one-sided {100 * details['level']:g}% bounds")
    axis.set_xlim(-1, 2)
    axis.set_ylabel(f"{claim['metric']} ({claim['unit']})")
    axis.legend(fontsize=6, loc="best")
