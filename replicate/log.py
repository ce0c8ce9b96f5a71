"""Where results go besides the report: the console table, and wandb as a mirror.

wandb is imported only when logging is on. It runs offline unless the user set WANDB_MODE (or
wandb.mode): runs land under <run dir>/wandb and upload later with `wandb sync`. If wandb cannot
start, the run warns once and finishes with all local results.

    print_summary(report); mirror_to_wandb(cfg, report, run_dir)
"""
from __future__ import annotations

import os
import sys
import warnings

from replicate.report import format_measured


def print_summary(report: dict, report_path: str, stream=sys.stdout) -> None:
    rows = [("claim", "claimed", "measured mean ± std (n)", "verdict")]
    for claim in report["claims"]:
        unit = "%" if claim["unit"] == "%" else ""
        rows.append((claim["name"], f"{claim['claimed']:g}{unit}", format_measured(claim), claim["verdict"]["verdict"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{report['paper']['id']}: {report['paper']['title']}", file=stream)
    print(line, file=stream)
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)), file=stream)
        if index == 0:
            print(line, file=stream)
    print(line, file=stream)
    print(f"report: {report_path}", file=stream)


def wandb_mode(cfg) -> str:
    return cfg.wandb.mode or os.environ.get("WANDB_MODE") or "offline"


def mirror_to_wandb(cfg, report: dict, run_dir) -> list[str]:
    """One wandb run per seed, grouped by paper and executed convention. Returns the run ids."""
    try:
        import wandb
    except ImportError:
        warnings.warn("wandb is not installed; skipping wandb logging (logger=none silences this)", stacklevel=2)
        return []
    paper = report["paper"]["id"]
    convention = report["plan"]["executed_convention"]["name"]
    config = {"paper": report["paper"], "native_hparams": report["plan"]["native_hparams"],
              "executed_hparams": report["plan"]["executed_hparams"],
              "native_convention": report["plan"]["native_convention"],
              "executed_convention": report["plan"]["executed_convention"],
              "conversion_rules": report["plan"]["rules"], "config": report["config"]}
    directory = cfg.wandb.dir or str(run_dir)
    os.makedirs(directory, exist_ok=True)
    run_ids = []
    for index, seed in enumerate(report["seeds"]):
        try:
            run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, group=f"{paper}/{convention}",
                             job_type="replicate", name=f"{paper}-{convention}-seed{seed['seed']}",
                             tags=[paper, convention], config={**config, "seed": seed["seed"]},
                             dir=directory, mode=wandb_mode(cfg), reinit="finish_previous",
                             settings=wandb.Settings(console="off", silent=True))
        except Exception as error:  # any failure to start (network, credentials) must not cost local results
            warnings.warn(f"wandb could not start ({type(error).__name__}: {error}); results are in the local report",
                          stacklevel=2)
            return run_ids
        for point in seed["curve"]:
            run.log({key: value for key, value in point.items() if key != "step"}, step=point["step"])
        for claim in report["claims"]:
            run.summary[f"final/{claim['metric']}"] = claim["measured"][index]
            run.summary[f"claim/{claim['metric']}/value"] = claim["claimed"]
            run.summary[f"claim/{claim['metric']}/tolerance"] = claim["tolerance"]
            run.summary[f"verdict/{claim['metric']}"] = claim["verdict"]["verdict"]
        for name, value in seed["metrics"].items():
            run.summary[f"final/{name}_raw"] = value
        run.summary["diverged_at"] = seed["diverged_at"]
        run_ids.append(run.id)
        run.finish()
    return run_ids
