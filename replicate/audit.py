"""`python -m replicate.audit`: when a paper leaves a setting unstated, replicate every reading of it and
say which one reproduces the claims.

    python -m replicate.audit paper=sklearn_iris_invscaling_momentum              # the paper's own `unstated:` block
    python -m replicate.audit paper=mnist1d_mlp seeds=3 readings.conventions.loss_reduction=mean,sum

Every combination of the listed readings is one replication through `replicate.replication.replicate_paper`
(same seeds, same verdict rules, its own run directory and wandb group). Readings that the conversion
layer proves to be the same update (for example lr inside or outside the momentum buffer at a constant
learning rate: `replicate.conventions` converts one into the other exactly) form one equivalence class,
trained once: the claims cannot tell them apart, and the audit says so instead of breaking a tie by
noise. The audit writes `audit.json` and `audit.md` into its directory.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from replicate.arguments import Command, Option, UsageError, fail, split_config_dirs
from replicate.config import ConfigError

FORMATS = ("table", "json")
# optimizer fields that the plan's applied settings restate; compared through those, not as written
CONVERTED_OPTIMIZER_FIELDS = ("lr", "weight_decay", "momentum", "nesterov", "eps", "betas", "alpha", "rho", "centered",
                              "initial_accumulator_value", "grad_clip", "grad_clip_value")


class AuditError(Exception):
    """A mistake in the audit's command line; printed as one line, exit code 2."""


@dataclass
class Reading:
    settings: dict  # {config key: value as given on the command line}
    overrides: list[str]  # the same as Hydra overrides
    cfg: object = None
    identity: str = ""  # the update in the reference convention (update_identity); "" when not exact
    report: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.settings.items())

    @property
    def slug(self) -> str:
        return ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in self.settings.items()).replace("/", "_")


COMMAND = Command(
    "replicate.audit",
    "Replicate a paper under every reading of settings its source leaves unstated (is the loss summed or "
    "averaged, which momentum, what the batch size counts), judge every claim under each, and rank the "
    "readings: the one that alone reproduces every claim is recommended. Readings that convert into each "
    "other exactly are one update, trained once. Writes audit.json and audit.md.",
    options=(Option("paper", "the catalog entry to audit (python -m replicate --help lists the ids)", "mnist1d_mlp",
                    shown="<catalog id>"),
             Option("format", "what to print (audit.json and audit.md are written either way)", "table", choices=FORMATS),
             Option("batch", "train readings that differ only in the optimizer's numbers (learning rate, weight "
                             "decay) together as one computation, each bit for bit as alone", True, kind="bool"),
             Option("hydra.run.dir", "where to write (default outputs/<paper>/audit-<time>); rerunning the same "
                                     "directory reuses finished readings", shown="<dir>")),
    examples=("python -m replicate.audit paper=sklearn_iris_invscaling_momentum",
              "python -m replicate.audit paper=mnist1d_mlp seeds=3 train.steps=500 logger=none "
              "readings.conventions.loss_reduction=mean,sum",
              "python -m replicate.audit --config-dir my_papers paper=my_paper readings.optimizer.nesterov=false,true"),
    overrides="readings.<key>=<a>,<b>[,...]: the values a setting may have had (any config key, e.g. "
              "conventions.loss_reduction, conventions.momentum_form, optimizer.nesterov); several keys give every "
              "combination; without any, the paper's own `paper.unstated` block is used. <key>=<value>: any "
              "setting of `python -m replicate` (seeds=3, train.steps=500, logger=none, runtime.numerics=native, ...), "
              "the same for every reading. --config-dir <dir>: also look for paper/<id>.yaml there (your own "
              "paper, docs/adding-a-paper.md).",
)


def parse_arguments(argv: list[str]) -> tuple[list[str], dict[str, list[str]], dict]:
    """(ordinary overrides, {reading key: [value strings]}, options) through Hydra's override grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    directories, argv = split_config_dirs(argv)
    arguments = COMMAND.parse(argv)
    options = {"format": arguments["format"], "dir": arguments["hydra.run.dir"], "config_dirs": directories,
               "paper": arguments["paper"], "batch": arguments["batch"]}
    # a --config-dir is one more place Hydra looks for paper/<id>.yaml, for every reading's composition
    searched = ", ".join(f"'file://{Path(directory).resolve()}'" for directory in directories)
    plain = [f"hydra.searchpath=[{searched}]"] if directories else []
    plain += [f"paper={arguments['paper']}"] if "paper" in arguments.given else []
    readings = {}
    for argument in arguments.overrides:
        (override,) = OverridesParser.create().parse_overrides([argument])  # read once already by COMMAND.parse
        key = override.key_or_group
        if key.startswith("readings."):
            name = key[len("readings."):]
            listed = getattr(override.value(), "list", None) if override.is_sweep_override() else None
            if override.is_sweep_override() and listed is None:
                raise AuditError(f"{argument}: list the readings one by one, readings.{name}=<a>,<b>[,...]")
            values = [_override_value(value) for value in listed] if listed is not None else [argument.split("=", 1)[1]]
            if len(values) < 2:
                raise AuditError(f"readings.{name} has one value; a single reading is not a question: set it "
                                 f"directly with {name}={values[0]}, or list two or more: readings.{name}=<a>,<b>")
            if name in readings:
                raise AuditError(f"readings.{name} is given twice; list every value once: readings.{name}=<a>,<b>")
            readings[name] = [str(value) for value in values]
        elif override.is_sweep_override():
            raise AuditError(f"{argument}: a sweep outside readings.*; an audit runs one setup per reading "
                             f"(write readings.{key}=... to make it a reading)")
        else:
            plain.append(argument)
    return plain, readings, options


def _override_value(value) -> str:
    """A YAML value from a paper's `unstated:` block as Hydra override text."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def make_readings(base_cfg, overrides: list[str], readings: dict[str, list[str]]) -> tuple[list[Reading], dict]:
    """Every combination of the readings, each composed and checked (the keys must exist in the config),
    and the readings per key that were used (the command line's, or the paper's `unstated:` block)."""
    from omegaconf import OmegaConf

    from replicate.config import compose
    from replicate.config_checks import check_config

    if not readings:
        readings = {entry.key: [_override_value(value) for value in entry.readings] for entry in base_cfg.paper.unstated}
        if not readings:
            raise AuditError(f"paper {base_cfg.paper.id!r} declares no unstated settings; name them with "
                             "readings.<config key>=<a>,<b> (for example readings.conventions.loss_reduction=mean,sum)")
    missing = object()
    for key in readings:
        if key.startswith(("hydra.", "paper.", "readings.")) or OmegaConf.select(base_cfg, key, default=missing) is missing:
            raise AuditError(f"readings.{key}: no config key {key!r}; a reading is a key of `python -m replicate` "
                             "such as conventions.loss_reduction, conventions.momentum_form or optimizer.nesterov")
        if any(item.split("=", 1)[0].lstrip("+~") == key for item in overrides):
            raise AuditError(f"{key} is both set and listed as a reading; drop one of {key}=... and readings.{key}=...")
    result = []
    for values in itertools.product(*readings.values()):
        settings = dict(zip(readings, values))
        reading_overrides = [f"{key}={value}" for key, value in settings.items()]
        try:
            cfg = compose([*overrides, *reading_overrides])
            check_config(cfg)
        except ConfigError as error:
            raise AuditError(f"reading {', '.join(reading_overrides)}: {error}") from None
        except Exception as error:  # Hydra's composition errors: a value of the wrong type, an unknown group
            raise AuditError(f"reading {', '.join(reading_overrides)}: {str(error).splitlines()[0]}") from None
        result.append(Reading(settings, reading_overrides, cfg))
    return result, readings


def update_identity(cfg, reference: dict, n_train: int) -> str:
    """What the update computes, stated in the reference convention (the paper's own, with each
    convention field that is a reading set to its first listed value), with everything else the run
    uses. "" when the conversion to the reference is not exact: then no other reading is proven equal."""
    from omegaconf import OmegaConf

    from replicate import conventions
    from replicate.hyperparameters import conventions_fields, make_plan
    from replicate.identity import result_settings

    target = conventions.Convention(name="reference", **{**conventions_fields(cfg), **reference})
    try:
        plan = make_plan(cfg, n_train=n_train, executed_convention=target)
    except ConfigError:
        return ""
    if not plan.exact:
        return ""
    settings = result_settings(OmegaConf.to_container(cfg, resolve=True))
    settings.pop("conventions", None)
    settings["train"].pop("convention", None)
    for key in CONVERTED_OPTIMIZER_FIELDS:
        settings["optimizer"].pop(key, None)
    settings["applied"] = plan.applied
    return json.dumps(settings, sort_keys=True, default=str)


def equivalence_classes(readings: list[Reading]) -> list[list[int]]:
    """Indices of readings grouped by proven-equal updates, in order of first appearance."""
    classes: dict[str, list[int]] = {}
    for index, reading in enumerate(readings):
        classes.setdefault(reading.identity or f"unproven-{index}", []).append(index)
    return list(classes.values())


def results_signature(report: dict) -> str:
    """Per-seed final metrics and curves, bit for bit: equal signatures mean the same training."""
    return json.dumps([[seed["seed"], seed["metrics"], seed["curve"]] for seed in report["seeds"]], sort_keys=True)


def merge_identical(classes: list[list[int]], readings: list[Reading]) -> list[list[int]]:
    """Classes whose representatives trained to bit-identical results are one class too."""
    merged: dict[str, list[int]] = {}
    for members in classes:
        merged.setdefault(results_signature(readings[members[0]].report), []).extend(members)
    return list(merged.values())


STATUS_ORDER = {"consistent": 0, "inconclusive": 1, "excluded": 2}


def assess(report: dict) -> tuple[str, float]:
    """(status, distance): consistent when every claim is REPRODUCED, excluded when any is NOT_REPRODUCED;
    distance sums each claim's |mean − claimed| in units of its margin plus the seeds' spread (for ranking)."""
    verdicts = [claim["verdict"]["verdict"] for claim in report["claims"]]
    status = ("excluded" if "NOT_REPRODUCED" in verdicts else
              "consistent" if all(verdict == "REPRODUCED" for verdict in verdicts) else "inconclusive")
    distance = 0.0
    for claim in report["claims"]:
        mean, std = claim["verdict"]["mean"], claim["verdict"]["std"]
        scale = claim["tolerance"] + (std if std == std else 0.0) + 1e-12 * max(1.0, abs(claim["claimed"]))
        distance += abs(mean - claim["claimed"]) / scale if mean == mean else float("inf")
    return status, distance


def summarize(readings: list[Reading], classes: list[list[int]]) -> dict:
    """audit.json's content: readings ranked by class, the recommendation and whether readings differ."""
    assessed = {tuple(members): assess(readings[members[0]].report) for members in classes}
    ordered = sorted(classes, key=lambda members: (STATUS_ORDER[assessed[tuple(members)][0]], assessed[tuple(members)][1]))
    entries = []
    for rank, members in enumerate(ordered, start=1):
        status, distance = assessed[tuple(members)]
        report = readings[members[0]].report
        for index in members:
            entries.append({
                "settings": readings[index].settings, "rank": rank, "excluded": status == "excluded", "status": status,
                "class": [readings[other].settings for other in members], "trained_as": readings[members[0]].settings,
                "run_dir": report.get("run_dir"), "distance": distance,
                "claims": [{"name": claim["name"], "claimed": claim["claimed"], "unit": claim["unit"],
                            "statistic": claim["statistic"], "decimals": claim["verdict"]["details"].get("decimals"),
                            "measured": claim["measured"], "verdict": claim["verdict"]}
                           for claim in report["claims"]]})
    consistent = [members for members in ordered if assessed[tuple(members)][0] == "consistent"]
    if len(consistent) == 1 and len(consistent[0]) == 1:
        recommended, reason = readings[consistent[0][0]].settings, "the only reading whose replication reproduces every claim"
    elif len(consistent) == 1:
        recommended = None
        reason = ("the readings " + "; ".join(readings[i].label for i in consistent[0]) +
                  " reproduce the claims and train identically: the claims cannot tell them apart")
    elif consistent:
        recommended = None
        reason = ("several readings reproduce every claim (" + "; ".join(readings[m[0]].label for m in consistent) +
                  "): more seeds, or a claim that separates them, are needed")
    else:
        recommended, reason = None, "no reading reproduces every claim"
    return {"readings": entries, "recommended": recommended, "reason": reason,
            "distinguishable": all(len(members) == 1 for members in classes),
            "classes": [[readings[index].settings for index in members] for members in ordered]}


def run_audit(overrides: list[str], reading_values: dict[str, list[str]], audit_dir: Path | None, *,
              log=print, batch: bool = True) -> tuple[dict, Path]:
    """Train every equivalence class once and judge it; returns (audit dict, audit directory)."""
    from replicate.checkpoint import run_lock
    from replicate.config import compose
    from replicate.data import load_dataset
    from replicate.replication import replicate_paper
    from replicate.sweep import train_runs_together

    started = time.perf_counter()
    try:
        base = compose(overrides)
    except Exception as error:
        raise AuditError(str(error).splitlines()[0]) from None
    readings, reading_values = make_readings(base, overrides, reading_values)
    paper = base.paper.id
    audit_dir = Path(audit_dir or Path("outputs") / paper / f"audit-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    import torch

    data = load_dataset(base.data, dtype={"float32": torch.float32, "float64": torch.float64}[base.train.dtype], device="cpu")
    reference = {key.split(".", 1)[1]: values[0] for key, values in reading_values.items()
                 if key.startswith("conventions.")}
    for reading in readings:
        reading.identity = update_identity(reading.cfg, reference, len(data.y_train))
    classes = equivalence_classes(readings)
    representatives = [readings[members[0]] for members in classes]
    run_dirs = [audit_dir / f"reading-{number}_{reading.slug}" for number, reading in enumerate(representatives, start=1)]
    cfgs = [compose([*overrides, *reading.overrides, f"wandb.group='{paper}/audit/{reading.slug}'"])  # quoted: it holds '='
            for reading in representatives]
    # readings that differ only in the optimizer's numbers: one batched computation, each run as if alone
    together = train_runs_together(cfgs, run_dirs, log=log) if batch else []
    for number, (members, cfg, run_dir) in enumerate(zip(classes, cfgs, run_dirs), start=1):
        representative = readings[members[0]]
        same = "" if len(members) == 1 else " (trained once for " + "; ".join(readings[i].label for i in members) + ")"
        log(f"reading {number}/{len(classes)}: {representative.label}{same}")
        # each replication's own table goes to stderr (stdout is the audit's), and its directory is held
        # against a second audit or run into it, as `python -m replicate` holds its own
        with contextlib.redirect_stdout(sys.stderr), run_lock(run_dir):
            report = replicate_paper(cfg, run_dir, [*overrides, *representative.overrides])
        if not report:
            raise AuditError("dry_run=true trains nothing, so there is nothing to audit; drop dry_run")
        report["run_dir"] = str(run_dir)
        for index in members:
            readings[index].report = report
    classes = merge_identical(classes, readings)
    audit = {"paper": paper, **summarize(readings, classes),
             "trained_together": [[representatives[index].settings for index in group] for group in together],
             "command": "python -m replicate.audit " + " ".join([*overrides, *(f"readings.{key}={','.join(values)}"
                                                                            for key, values in reading_values.items())]),
             "wall_time_s": round(time.perf_counter() - started, 1)}
    return audit, audit_dir


def render_table(audit: dict) -> str:
    lines = [f"audit of {audit['paper']}: {len(audit['readings'])} reading(s)", ""]
    header = ("rank", "reading", "status", "verdicts")
    rows = [(str(entry["rank"]), ", ".join(f"{k}={v}" for k, v in entry["settings"].items()), entry["status"],
             "; ".join(f"{claim['name']}: {claim['verdict']['verdict']} ({_measured(claim)})" for claim in entry["claims"]))
            for entry in audit["readings"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    lines += ["", f"distinguishable: {'yes' if audit['distinguishable'] else 'no'}"]
    for group in audit.get("trained_together", []):
        lines.append("- trained together as one batched computation, each bit for bit as alone: "
                     + "; ".join(", ".join(f"`{k}={v}`" for k, v in m.items()) for m in group))
    for members in audit["classes"]:
        if len(members) > 1:
            lines.append("  one class (the same update): " + " | ".join(", ".join(f"{k}={v}" for k, v in m.items())
                                                                       for m in members))
    recommended = audit["recommended"]
    lines.append("recommended: " + (", ".join(f"{k}={v}" for k, v in recommended.items()) if recommended else "none")
                 + f" ({audit['reason']})")
    return "\n".join(lines)


def _measured(claim: dict) -> str:
    verdict = claim["verdict"]
    unit = "%" if claim["unit"] == "%" else ""
    if verdict.get("n", 0) > 1:
        return f"{verdict['mean']:.4g}{unit} ± {verdict['std']:.2g} vs {claim['claimed']:.10g}{unit}"
    if claim.get("decimals") is not None:  # an exact claim: as many decimals as the source printed
        return f"{verdict['mean']:.{claim['decimals']}f}{unit} vs {claim['claimed']:.{claim['decimals']}f}{unit}"
    return f"{verdict['mean']:.6g}{unit} vs {claim['claimed']:.10g}{unit}"


def render_markdown(audit: dict) -> str:
    lines = [f"# Audit: {audit['paper']}", "", f"Command: `{audit['command']}`", "",
             "| rank | reading | status | claims |", "|---|---|---|---|"]
    for entry in audit["readings"]:
        reading = ", ".join(f"`{k}={v}`" for k, v in entry["settings"].items())
        claims = "<br>".join(f"{claim['name']}: **{claim['verdict']['verdict']}** ({_measured(claim)}); "
                             f"{claim['verdict'].get('explanation', '')}" for claim in entry["claims"])
        lines.append(f"| {entry['rank']} | {reading} | {entry['status']} | {claims} |")
    recommended = audit["recommended"]
    lines += ["", f"- distinguishable: {'yes' if audit['distinguishable'] else 'no'}",
              "- recommended: " + (", ".join(f"`{k}={v}`" for k, v in recommended.items()) if recommended else "none")
              + f" ({audit['reason']})"]
    for group in audit.get("trained_together", []):
        lines.append("- trained together as one batched computation, each bit for bit as alone: "
                     + "; ".join(", ".join(f"`{k}={v}`" for k, v in m.items()) for m in group))
    for members in audit["classes"]:
        if len(members) > 1:
            lines.append("- one equivalence class (exact conversion, or bit-identical results): "
                         + "; ".join(", ".join(f"`{k}={v}`" for k, v in m.items()) for m in members))
    return "\n".join(lines) + "\n"


def write_audit(audit: dict, audit_dir: Path) -> None:
    from replicate.report import render_json_text, write_atomically

    audit_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(audit_dir / "audit.json", render_json_text(audit))
    write_atomically(audit_dir / "audit.md", render_markdown(audit))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        overrides, reading_values, options = parse_arguments(argv)
    except (AuditError, UsageError) as error:
        return fail(error)
    from replicate.checkpoint import Interrupted, describe_write_error
    from replicate.checkpoint import describe_interruption, install_stop_handlers
    from replicate.cli import check_arguments, prepare_process

    # the paper file as `python -m replicate` checks it: known id, valid YAML, its `# @package _global_` header
    check_arguments([*(f"--config-dir={directory}" for directory in options["config_dirs"]), f"paper={options['paper']}"])

    install_stop_handlers()  # a stop signal saves the reading in training; rerunning the audit resumes it
    prepare_process(argv)  # runtime.numerics=... given here applies to every reading
    try:
        audit, audit_dir = run_audit(overrides, reading_values, options["dir"], batch=options["batch"],
                                     log=lambda line: print(line, file=sys.stderr))
        write_audit(audit, audit_dir)
    except (AuditError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(describe_interruption(stop).replace("the same command", "the same audit (same hydra.run.dir)"),
              file=sys.stderr)
        return 128 + stop.signal_number
    except OSError as error:
        print(f"error: {describe_write_error(error)}", file=sys.stderr)
        return 1
    if options["format"] == "json":
        from replicate.report import render_json_text

        print(render_json_text(audit), end="")
    else:
        print(render_table(audit))
        print(f"audit: {audit_dir / 'audit.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
