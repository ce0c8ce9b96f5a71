"""The catalog records in papers/ and the README table built from them.

Each papers/<id>.md is written by people (claim, source, conventions with evidence, deviations)
except its measured-result block, which this module fills from a full-length run's report.json:

    python -m replicate.catalog update outputs/mnist1d_mlp/2026-11-25_19-00-00   # record a run
    python -m replicate.catalog update outputs/sklearn_digits_momentum/audit-…    # record an audit
    python -m replicate.catalog readme                                           # rebuild the README table

The README table lies between `<!-- catalog:start -->` and `<!-- catalog:end -->`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from replicate.arguments import Command, Option, UsageError, fail
from replicate.report import format_measured, write_atomically

ROOT = Path(__file__).resolve().parent.parent
RESULT_START, RESULT_END = "<!-- result:start -->", "<!-- result:end -->"
TABLE_START, TABLE_END = "<!-- catalog:start -->", "<!-- catalog:end -->"
AUDIT_START, AUDIT_END = "<!-- audit:start -->", "<!-- audit:end -->"


def read_result(record: Path) -> dict:
    """The JSON result block of a record (empty when the entry has not been run at full length)."""
    text = record.read_text()
    if RESULT_START not in text:
        return {}
    block = text.split(RESULT_START, 1)[1].split(RESULT_END, 1)[0]
    payload = block.split("```json", 1)[1].split("```", 1)[0] if "```json" in block else "{}"
    return json.loads(payload)


def result_from_report(report: dict) -> dict:
    seeds = report["seeds"]
    return {
        "paper": report["paper"]["id"],
        "claims": [{"name": claim["name"], "claimed": claim["claimed"], "unit": claim["unit"],
                    "statistic": claim["statistic"], "measured": format_measured(claim),
                    "per_seed": [round(value, 6) for value in claim["measured"]],
                    "per_seed_exact": claim["measured"],  # full precision: replicate.check compares bit for bit
                    "verdict": claim["verdict"]["verdict"], "rule": claim["verdict"]["rule"],
                    "explanation": claim["verdict"]["explanation"]} for claim in report["claims"]],
        "seeds": [seed["seed"] for seed in seeds],
        "steps": report["steps"],
        "executed_convention": report["plan"]["executed_convention"]["name"],
        "training_path": report["training_path"],
        "wall_time_s": round(report["wall_time_s"], 1),
        "hardware": f"{report['hardware']['cpu']}, {report['hardware']['threads']} thread(s), {report['hardware']['device']}",
        "software": {key: report["software"].get(key) for key in ("replicate", "torch", "python", "mnist1d", "scikit-learn")},
        "command": f"python -m replicate paper={report['paper']['id']}"
                   + (f" seeds={len(seeds)}" if len(seeds) != report["config"]["seeds"] else ""),
        "overrides": report.get("overrides", []),
        "numerics": report.get("numerics"),  # what replicate.check reruns under
    }


def render_result(result: dict) -> str:
    lines = [RESULT_START, "", f"Measured with `{result['command']}` ({len(result['seeds'])} seed(s), "
             f"{result['steps']} steps, {result['training_path']}; {result['wall_time_s']} s on {result['hardware']}; "
             + ", ".join(f"{k} {v}" for k, v in result["software"].items() if v) + ").", "",
             "| claim | claimed | measured | verdict | rule |", "|---|---|---|---|---|"]
    for claim in result["claims"]:
        unit = "%" if claim["unit"] == "%" else ""
        lines.append(f"| {claim['name']} | {claim['claimed']:.10g}{unit} ({claim['statistic'].replace('_', ' ')}) | "
                     f"{claim['measured']} | **{claim['verdict']}** | {claim['rule']} |")
    lines += ["", *[f"- {claim['name']}: {claim['explanation']}; per seed: {claim['per_seed']}" for claim in result["claims"]],
              "", "```json", json.dumps(result, indent=1), "```", "", RESULT_END]
    return "\n".join(lines)


def update_record(run_dir: Path, papers_dir: Path = ROOT / "papers") -> Path:
    """Write a run's measured result, or an audit's ranking (a directory holding audit.json), into the record."""
    if (Path(run_dir) / "audit.json").exists():
        return update_audit(run_dir, papers_dir)
    report = json.loads((Path(run_dir) / "report.json").read_text())
    record = _record(papers_dir, report["paper"]["id"])
    text = _replace_block(record.read_text(), RESULT_START, RESULT_END, render_result(result_from_report(report)),
                          "Measured result")
    write_atomically(record, text)
    return record


def update_audit(audit_dir: Path, papers_dir: Path = ROOT / "papers") -> Path:
    from replicate.audit import render_markdown

    audit = json.loads((Path(audit_dir) / "audit.json").read_text())
    record = _record(papers_dir, audit["paper"])
    body = render_markdown(audit).split("\n", 1)[1].strip()  # without its own title
    block = "\n".join([AUDIT_START, "", body, "", AUDIT_END])
    write_atomically(record, _replace_block(record.read_text(), AUDIT_START, AUDIT_END, block, "Audit of the unstated settings"))
    return record


def _record(papers_dir: Path, paper: str) -> Path:
    record = papers_dir / f"{paper}.md"
    if not record.exists():
        raise FileNotFoundError(f"no record {record}; write the human part first (claim, source, conventions)")
    return record


def _replace_block(text: str, start: str, end: str, block: str, heading: str) -> str:
    """The record with its block between the markers replaced, or appended under `heading`."""
    if start in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"


def unmeasured_claims(record: Path) -> list[dict]:
    """For a record without a measured result: its config's claims, each measured as the record's status line says
    (`**Status:** not yet run here (needs dataset / GPU)`), never a number."""
    import re

    from omegaconf import OmegaConf

    status = re.search(r"^\*\*Status:\*\* (.+)$", record.read_text(), re.MULTILINE)
    config = record.parent.parent / "conf" / "paper" / f"{record.stem}.yaml"
    if not status or not config.exists():
        return [{}]
    claims = OmegaConf.to_container(OmegaConf.load(config)).get("paper", {}).get("claims", [])
    return [{"name": claim["name"], "claimed": claim["value"], "unit": claim["unit"],
             "measured": status.group(1).strip()} for claim in claims] or [{}]


def catalog_table(papers_dir: Path = ROOT / "papers") -> str:
    lines = ["| id | claim | claimed | measured (ours) | verdict | record |", "|---|---|---|---|---|---|"]
    for record in sorted(papers_dir.glob("*.md")):
        result = read_result(record)
        for claim in result.get("claims", []) or unmeasured_claims(record):
            unit = "%" if claim.get("unit") == "%" else ""
            claimed = f"{claim['claimed']:.10g}{unit}" if claim else "—"
            lines.append(f"| `{record.stem}` | {claim.get('name', 'not yet run')} | {claimed} | "
                         f"{claim.get('measured', '—')} | {claim.get('verdict', '—')} | [papers/{record.name}](papers/{record.name}) |")
    return "\n".join(lines)


def update_readme(readme: Path = ROOT / "README.md", papers_dir: Path = ROOT / "papers") -> None:
    text = readme.read_text()
    head, rest = text.split(TABLE_START, 1)
    write_atomically(readme, head + TABLE_START + "\n" + catalog_table(papers_dir) + "\n" + TABLE_END + rest.split(TABLE_END, 1)[1])


COMMAND = Command(
    "replicate.catalog",
    "Keep a checkout's catalog records current: `update` writes each finished full-length run's measured "
    "result (or an audit's ranking) into papers/<id>.md, then rebuilds the README's catalog table; `readme` "
    "only rebuilds the table. Both edit files of a git checkout of replicate, not of an installed wheel.",
    options=(Option("papers", "the directory of the records", str(ROOT / "papers"), shown="<dir>"),
             Option("readme", "the README whose table is rebuilt", str(ROOT / "README.md"), shown="<file>")),
    examples=("python -m replicate.catalog update outputs/mnist1d_mlp/2026-11-25_19-00-00",
              "python -m replicate.catalog update outputs/sklearn_digits_momentum/audit-2026-11-30_10-00-00",
              "python -m replicate.catalog readme"),
    positionals="update <run or audit dir> ... | readme",
    positional_help="update: record each run (a directory with report.json) or audit (with audit.json), then "
                    "rebuild the table; readme: rebuild the table only",
)


def parse_arguments(argv: list[str]) -> tuple[str, list[Path], Path, Path]:
    """(action, run dirs, papers dir, README path), with the checkout's files checked before anything is read."""
    arguments = COMMAND.parse(argv)
    action, *run_dirs = arguments.positionals or [""]
    if action not in ("update", "readme"):
        raise UsageError(f"name an action first: update <run or audit dir> ... | readme, got {action or 'none'}; "
                         f"e.g. {COMMAND.examples[0]}")
    if action == "readme" and run_dirs:
        raise UsageError(f"readme takes no directories (got {' '.join(run_dirs)}); to record runs: update <dir> ...")
    if action == "update" and not run_dirs:
        raise UsageError("update needs the run or audit directories to record: update <dir> ...")
    papers, readme = Path(arguments["papers"]), Path(arguments["readme"])
    if not papers.is_dir() or not readme.is_file():
        missing = papers if not papers.is_dir() else readme
        raise UsageError(f"{missing} does not exist: replicate.catalog edits the records of a git checkout "
                         "(git clone the replicate repository, pip install -e . there, run it from there), "
                         "or give papers=<dir> readme=<README.md>")
    return action, [Path(run_dir) for run_dir in run_dirs], papers, readme


def main(argv: list[str] | None = None) -> int:
    try:
        action, run_dirs, papers, readme = parse_arguments(sys.argv[1:] if argv is None else argv)
        for run_dir in run_dirs:
            print(f"updated {update_record(run_dir, papers)}")
        update_readme(readme, papers)
    except (OSError, ValueError, KeyError) as error:  # UsageError is a ValueError
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
