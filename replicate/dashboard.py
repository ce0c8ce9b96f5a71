"""The wandb dashboard of replications, as a saved workspace: `python -m replicate.dashboard`.

Builds, with the wandb-workspaces library, the workspace docs/wandb.md describes: learning curves
grouped by paper/convention with mean ± std bands, each claim's final value against the claimed number,
and the verdict table. Building needs no server; saving does. Offline (WANDB_MODE=offline or no
WANDB_API_KEY) it prints what it would create and the command that creates it later.

    python -m replicate.dashboard wandb.project=replicate mnist1d_mlp mnist1d_cnn
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from replicate.arguments import Command, Option, UsageError, fail
from replicate.hydra_setup import conf_dir

PAPERS_DIR = conf_dir() / "paper"  # conf/ in a checkout, replicate/conf in an installed wheel
# how the seeds of one group aggregate into the claim's statistic (docs/wandb.md)
AGGREGATION = {"single_run": "mean", "mean_of_n": "mean", "threshold": "mean", "median_of_n": "median", "exact": "mean"}


def catalog_claims(papers: list[str]) -> dict[str, list[dict]]:
    """The claims of each paper id, read from conf/paper/<id>.yaml (the catalog's configs)."""
    claims = {}
    for paper in papers:
        path = PAPERS_DIR / f"{paper}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in PAPERS_DIR.glob("*.yaml")))
            raise ValueError(f"unknown paper {paper!r}; catalog entries: {known}")
        config = yaml.safe_load(path.read_text())
        claims[paper] = list((config.get("paper", config) or {}).get("claims", []))
    return claims


def build_workspace(project: str, entity: str | None, papers: list[str], name: str | None = None):
    """The workspace object (wandb_workspaces.workspaces.Workspace); no network is used."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    claims = catalog_claims(papers)
    metrics = list(dict.fromkeys(claim["metric"] for paper in papers for claim in claims[paper]))
    curves = [wr.LinePlot(title=f"{metric} (mean ± std over seeds, by paper/convention)", x="step", y=[metric],
                          groupby_aggfunc="mean", groupby_rangefunc="stddev", aggregate=True)
              for metric in ["train_loss", *metrics] if metric != "train_epoch_loss"]
    finals = []
    for metric in metrics:
        statistics = {claim["statistic"] for paper in papers for claim in claims[paper] if claim["metric"] == metric}
        directions = {claim.get("direction", "higher") for paper in papers for claim in claims[paper]
                      if claim["metric"] == metric}
        aggregation = (("max" if directions == {"higher"} else "min") if statistics == {"best_of_n"}
                       else AGGREGATION.get(next(iter(statistics)), "mean") if len(statistics) == 1 else "mean")
        finals.append(wr.BarPlot(title=f"final/{metric} ({aggregation} over seeds) against the claim",
                                 metrics=[f"final/{metric}", f"claim/{metric}/value", f"claim/{metric}/low",
                                          f"claim/{metric}/high"],
                                 groupby_aggfunc=aggregation, groupby_rangefunc="stddev", orientation="v"))
    verdicts = [wr.WeavePanelSummaryTable(table_name="verdicts"),
                wr.MediaBrowser(media_keys=["curves"]) if hasattr(wr, "MediaBrowser") else None]
    runset = ws.RunsetSettings(
        filters=ws.And(ws.Metric("JobType") == "replicate", ws.Tags("tags").isin(papers)),
        groupby=[ws.Metric("Group")],
        pinned_columns=[column for metric in metrics for column in
                        (f"summary:verdict/{metric}", f"summary:verdict/{metric}/mean", f"summary:verdict/{metric}/n",
                         f"summary:claim/{metric}/value", f"summary:claim/{metric}/tolerance")])
    return ws.Workspace(
        entity=entity or "", project=project, name=name or f"replicate: {', '.join(papers)}",
        sections=[ws.Section(name="Learning curves", panels=curves, is_open=True),
                  ws.Section(name="Final value against the claim", panels=finals, is_open=True),
                  ws.Section(name="Verdicts", panels=[panel for panel in verdicts if panel is not None], is_open=True)],
        settings=ws.WorkspaceSettings(x_axis="step"), runset_settings=runset)


def describe(workspace) -> str:
    lines = [f"workspace {workspace.name!r} in project {workspace.project!r}"
             + (f" (entity {workspace.entity})" if workspace.entity else "")]
    for section in workspace.sections:
        lines.append(f"  section {section.name}:")
        for panel in section.panels:
            title = getattr(panel, "title", None) or getattr(panel, "table_name", None) or ""
            lines.append(f"    {type(panel).__name__}: {title}")
    lines.append(f"  runs: filter {workspace.runset_settings.filters}; grouped by group; "
                 f"columns {', '.join(workspace.runset_settings.pinned_columns)}")
    return "\n".join(lines)


COMMAND = Command(
    "replicate.dashboard",
    "Create the saved wandb workspace of the replications (docs/wandb.md): learning curves grouped by "
    "paper/convention with mean ± std bands, each claim's final value beside the claimed number, and the "
    "verdict table. Offline (WANDB_MODE=offline, or no credentials) it prints what it would create and the "
    "command that creates it later.",
    options=(Option("wandb.project", "the wandb project the runs were logged to", "replicate", shown="<name>"),
             Option("wandb.entity", "your wandb user or team (needed to save)", shown="<name>"),
             Option("name", "the workspace's name (default: one derived from the papers)", shown="<name>")),
    examples=("python -m replicate.dashboard wandb.project=replicate wandb.entity=<you> mnist1d_mlp mnist1d_cnn",),
    positionals="[<paper id> ...]",
    positional_help="the catalog entries to show (default: all)",
)


def main(argv: list[str] | None = None) -> int:
    try:
        arguments = COMMAND.parse(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        return fail(error)
    options, papers = arguments.options, arguments.positionals
    papers = papers or sorted(path.stem for path in PAPERS_DIR.glob("*.yaml"))
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print("error: the dashboard needs the wandb-workspaces library; pip install wandb-workspaces", file=sys.stderr)
        return 2
    try:
        workspace = build_workspace(options["wandb.project"], options["wandb.entity"], papers, options["name"])
    except ValueError as error:
        return fail(f"{error}; usage: {COMMAND.usage()}")
    print(describe(workspace))
    offline = os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or not (
        os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").exists())
    if offline or not options["wandb.entity"]:
        command = " ".join(["WANDB_MODE=online python -m replicate.dashboard", f"wandb.project={options['wandb.project']}",
                            f"wandb.entity={options['wandb.entity'] or '<your entity>'}", *papers])
        reason = "offline (WANDB_MODE or no credentials)" if offline else "no wandb.entity given"
        print(f"not saved: {reason}. Upload the runs with `wandb sync <run dir>/wandb/offline-run-*`, "
              f"then `wandb login` and run: {command}")
        return 0
    try:
        workspace.save()
    except Exception as error:  # network, credentials, permissions: wandb raises several kinds
        print(f"error: the workspace could not be saved ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
              f"check `wandb login` and the entity/project, or run offline to see what would be created", file=sys.stderr)
        return 1
    print(f"saved: {workspace.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
