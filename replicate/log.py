"""Where results go besides the report: the console table, and wandb as a mirror.

wandb is imported only when logging is on. It runs offline unless the user set WANDB_MODE (or
wandb.mode): runs land under <run dir>/wandb and upload later with `wandb sync`. If an online start
fails (no network, no credentials), the run warns once and logs offline instead; the local report
never depends on wandb. Dashboard layout and tags: docs/wandb.md.

    print_summary(report, report_path); mirror_to_wandb(cfg, report, run_dir, job_type="replicate")
"""
from __future__ import annotations

import json
import math
import os
import secrets
import string
import sys
from pathlib import Path

from replicate.report import format_measured, write_atomically

LOGGERS = ("wandb", "none")  # logger: the wandb mirror (offline unless told otherwise), or the console alone
JOB_TYPES = ("replicate", "verify", "audit")  # what produced the run: a replication, a conversion proof, an audit
RUN_IDS_FILE = "wandb_ids.json"  # {job_type: {seed: wandb run id}}, so logging a run dir again resumes its runs
INIT_TIMEOUT_S = 20.0  # wandb waits 90 s by default; an unreachable server should cost seconds. $WANDB_INIT_TIMEOUT wins
MAX_TAG_LENGTH = 64  # wandb rejects longer tags


def print_summary(report: dict, report_path: str, stream=None) -> None:
    # sys.stdout as it is now, not when this module was imported: replicate.audit redirects it to stderr
    stream = stream or sys.stdout
    rows = [("claim", "claimed", "measured mean ± std (n)", "verdict")]
    for claim in report["claims"]:
        unit = "%" if claim["unit"] == "%" else ""
        rows.append((claim["name"], f"{claim['claimed']:.10g}{unit}", format_measured(claim), claim["verdict"]["verdict"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{report['paper']['id']}: {report['paper']['title']}", file=stream)
    print(line, file=stream)
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)), file=stream)
        if index == 0:
            print(line, file=stream)
    print(line, file=stream)
    for claim in report["claims"]:  # what would settle a verdict the seeds could not give
        if claim["verdict"]["verdict"] == "INCONCLUSIVE":
            needed = claim["verdict"]["details"].get("seeds_needed")
            advice = (f"about {needed} seeds would likely settle it (seeds={needed})" if needed
                      else "more seeds would not settle it; see the report")
            print(f"{claim['name']}: INCONCLUSIVE — {advice}", file=stream)
    print(f"report: {report_path}", file=stream)


def wandb_mode(cfg) -> str:
    return cfg.wandb.mode or os.environ.get("WANDB_MODE") or "offline"


def warn(message: str) -> None:
    """One line on stderr: what happened and what the user still has."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def mirror_to_wandb(cfg, report: dict, run_dir, job_type: str = "replicate") -> list[str]:
    """One wandb run per seed, grouped by paper and executed convention. Returns the run ids.

    Run ids are kept in <run dir>/wandb_ids.json on first use; logging the same run dir again (same
    job_type) reuses them with resume="allow", so a resumed or re-mirrored replication continues its runs.
    """
    if job_type not in JOB_TYPES:
        raise ValueError(f"unknown job_type {job_type!r}; allowed: {', '.join(JOB_TYPES)}")
    try:
        import wandb
    except ImportError:
        warn("wandb is not installed; skipping wandb logging (logger=none silences this)")
        return []
    quiet(wandb)
    run_dir = Path(run_dir)
    paper = report["paper"]["id"]
    convention = report["plan"]["executed_convention"]["name"]
    directory = cfg.wandb.dir or str(run_dir)
    os.makedirs(directory, exist_ok=True)
    run_ids = load_run_ids(run_dir, job_type, [seed["seed"] for seed in report["seeds"]])
    config = run_config(report)
    tags = run_tags(report, job_type)
    plot = run_dir / "curves.png"
    mode, warned, logged = wandb_mode(cfg), False, []
    for index, seed in enumerate(report["seeds"]):
        name = f"{paper}-{convention}-seed{seed['seed']}" + ("" if job_type == "replicate" else f"-{job_type}")
        run, mode, problem = start_run(wandb, mode, project=cfg.wandb.project, entity=cfg.wandb.entity,
                                       group=cfg.wandb.group or f"{paper}/{convention}", job_type=job_type, name=name, tags=tags,
                                       config={**config, "seed": seed["seed"]}, dir=directory,
                                       id=run_ids[str(seed["seed"])], resume="allow", reinit="finish_previous")
        if problem and not warned:
            where = f"logging offline to {directory}/wandb (upload later with `wandb sync`)" if run else "no wandb logging"
            warn(f"wandb could not start {problem}; {where}; results are in the local report")
            warned = True
        if run is None:
            break
        if run.id != run_ids[str(seed["seed"])]:  # started under a new id: the next mirror must resume that one
            run_ids[str(seed["seed"])] = run.id
            save_run_ids(run_dir, job_type, run_ids)
        try:
            log_seed(wandb, run, report, index, plot if plot.exists() else None)
            logged.append(run.id)
            run.finish()
        except Exception as error:  # a logging failure must not cost the local results either
            warn(f"wandb logging stopped ({describe(error)}); results are in the local report")
            try:
                run.finish(exit_code=1)
            except Exception:
                pass
            break
    return logged


def start_run(wandb, mode: str, **init):
    """wandb.init in `mode`; when an online start fails, offline instead. Returns (run or None, mode, problem)."""
    settings = {"console": "off", "silent": True}
    if "WANDB_INIT_TIMEOUT" not in os.environ:
        settings["init_timeout"] = INIT_TIMEOUT_S
    try:
        return wandb.init(mode=mode, settings=wandb.Settings(**settings), **init), mode, None
    except Exception as error:  # network, credentials, server: wandb raises CommError, UsageError, AuthenticationError...
        problem = f"{mode} ({describe(error)})"
    if mode in ("offline", "disabled"):
        return None, mode, problem
    # The failed start still holds the run id in wandb's service process ("run ID ... is in use"): restart
    # the service, or, when it is shared with a parent process ($WANDB_SERVICE), log offline under a new id.
    try:
        wandb.teardown()
        quiet(wandb)
        return wandb.init(mode="offline", settings=wandb.Settings(**settings), **init), "offline", problem
    except Exception:
        pass
    try:
        init = {**init, "id": new_run_id()}
        return wandb.init(mode="offline", settings=wandb.Settings(**settings), **init), "offline", problem
    except Exception as error:
        return None, "offline", f"{problem}, nor offline ({describe(error)})"


def quiet(wandb) -> None:
    """wandb's own console lines off (login notices included) unless the user chose with WANDB_SILENT."""
    if "WANDB_SILENT" not in os.environ:
        try:
            wandb.setup(settings=wandb.Settings(silent=True))
        except Exception:  # wandb.init will fail too, and say why
            pass


def log_seed(wandb, run, report: dict, index: int, plot: Path | None) -> None:
    """One seed's learning curve, the claims beside its final numbers, the verdicts, and the report's plot."""
    seed = report["seeds"][index]
    # custom x-axis: every curve is drawn against the optimizer step, and its summary is the final value,
    # which is what every claim statistic aggregates over seeds (mean_of_n: mean of the finals, best_of_n: max, ...)
    run.define_metric("step")
    for key in sorted({key for point in seed["curve"] for key in point} - {"step"}):
        run.define_metric(key, step_metric="step", summary="last")
    final = {"verdicts": verdict_table(wandb, report, index)}
    if plot is not None:
        final["curves"] = wandb.Image(str(plot), caption=f"{report['paper']['id']}: learning curves of all seeds")
    curve = seed["curve"]
    for position, point in enumerate(curve):
        row = {**point, **(final if position == len(curve) - 1 else {})}  # the plot goes with the final step
        run.log(row, step=point["step"])
    if not curve:
        run.log(final)
    for key, value in (seed.get("early_stopping") or {}).items():  # where the final numbers were measured
        if key != "validations":
            run.summary[f"early_stopping/{key}"] = value
    for claim in report["claims"]:
        metric, verdict = claim["metric"], claim["verdict"]
        run.summary[f"final/{metric}"] = claim["measured"][index]  # in the claim's unit: the number the verdict used
        run.summary[f"claim/{metric}/value"] = claim["claimed"]
        run.summary[f"claim/{metric}/tolerance"] = claim["tolerance"]
        run.summary[f"claim/{metric}/low"] = claim["claimed"] - claim["tolerance"]
        run.summary[f"claim/{metric}/high"] = claim["claimed"] + claim["tolerance"]
        run.summary[f"claim/{metric}/unit"] = claim["unit"]
        run.summary[f"claim/{metric}/statistic"] = claim["statistic"]
        run.summary[f"verdict/{metric}"] = verdict["verdict"]  # judged over all seeds of the report
        run.summary[f"verdict/{metric}/rule"] = verdict["rule"]
        run.summary[f"verdict/{metric}/mean"] = verdict["mean"]
        run.summary[f"verdict/{metric}/n"] = verdict["n"]
        run.summary[f"verdict/{metric}/seeds_needed"] = verdict["details"].get("seeds_needed")  # INCONCLUSIVE: what would settle it
    for name, value in seed["metrics"].items():
        run.summary[f"final/{name}_raw"] = value
    run.summary["diverged_at"] = seed["diverged_at"]


def verdict_table(wandb, report: dict, index: int):
    columns = ["claim", "metric", "unit", "claimed", "tolerance", "statistic", "this seed", "mean", "std", "n",
               "verdict", "explanation"]
    rows = [[claim["name"], claim["metric"], claim["unit"], claim["claimed"], claim["tolerance"], claim["statistic"],
             claim["measured"][index], claim["verdict"]["mean"], claim["verdict"]["std"], claim["verdict"]["n"],
             claim["verdict"]["verdict"], claim["verdict"].get("explanation", "")] for claim in report["claims"]]
    return wandb.Table(columns=columns, data=[[_finite(cell) for cell in row] for row in rows])


def run_config(report: dict) -> dict:
    """What ran: both hyperparameter sets, both conventions, the conversion, the claims and the resolved config."""
    plan = report["plan"]
    claims = [{key: value for key, value in claim.items() if key not in ("measured", "verdict")}
              for claim in report["claims"]]
    return {"paper": report["paper"], "claims": claims,
            "native_hparams": plan["native_hparams"], "executed_hparams": plan["executed_hparams"],
            "native_convention": plan["native_convention"], "executed_convention": plan["executed_convention"],
            "conversion_rules": plan["rules"], "conversion_exact": plan.get("conversion_exact"),
            "config": report["config"], "software": report.get("software"), "hardware": report.get("hardware")}


def run_tags(report: dict, job_type: str) -> list[str]:
    """Paper id, executed convention and one `verdict:<metric>=<VERDICT>` per claim, each within wandb's 64 chars."""
    tags = [report["paper"]["id"], report["plan"]["executed_convention"]["name"]]
    tags += [f"verdict:{claim['metric']}={claim['verdict']['verdict']}" for claim in report["claims"]]
    if job_type != "replicate":
        tags.append(job_type)
    return list(dict.fromkeys(tag[:MAX_TAG_LENGTH] for tag in tags if tag))


def load_run_ids(run_dir: Path, job_type: str, seeds: list[int]) -> dict[str, str]:
    """The wandb run id of each seed: read from <run dir>/wandb_ids.json, new ones made and saved there."""
    try:
        stored = json.loads((run_dir / RUN_IDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    ids = stored.get(job_type) if isinstance(stored, dict) else None
    ids = dict(ids) if isinstance(ids, dict) else {}
    missing = [str(seed) for seed in seeds if str(seed) not in ids]
    for seed in missing:
        ids[seed] = new_run_id()
    if missing:
        save_run_ids(run_dir, job_type, ids)
    return ids


def save_run_ids(run_dir: Path, job_type: str, ids: dict[str, str]) -> None:
    path = run_dir / RUN_IDS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    stored = stored if isinstance(stored, dict) else {}
    stored[job_type] = ids
    write_atomically(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")


def new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits  # like wandb's own ids: 8 base-36 characters
    return "".join(secrets.choice(alphabet) for _ in range(8))


def describe(error: Exception) -> str:
    """The exception as one short line (wandb's messages run over several lines with advice)."""
    text = " ".join(str(error).split("\n")[0].split()) or "no message"
    return f"{type(error).__name__}: {text[:200]}"


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value
