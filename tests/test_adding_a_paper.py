"""docs/adding-a-paper.md as a newcomer follows it (issue 16, item 6): the paper file and the commands are
copied from the page into a temporary directory and run, shortened by overrides appended at the end."""
import json
import re
import shlex
import sys

import pytest

from conftest import ROOT
from replicate import conventions
from replicate.data import DATA_ORDERS, DATASETS
from replicate.models import MODELS
from replicate.report import UNITS
from replicate.schedule import SCHEDULES
from replicate.evaluation import METRICS
from replicate.verdict import DIRECTIONS, STATISTICS

DOC = (ROOT / "docs" / "adding-a-paper.md").read_text()
SHORTENED = ["seeds=2", "train.steps=20", "logger=none"]  # appended: Hydra keeps the last value of a key


def block_after(marker: str) -> str:
    """The fenced block that follows `<!-- tested: marker -->` in the page."""
    match = re.search(re.escape(f"<!-- tested: {marker} -->") + r"\n```\w*\n(.*?)```", DOC, re.S)
    assert match, f"docs/adding-a-paper.md lost its tested block {marker!r}"
    return match.group(1)


def write_example(directory):
    path = directory / "my_papers" / "paper" / "my_logistic.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(block_after("my_papers/paper/my_logistic.yaml"))
    return path


def run(argv, monkeypatch, capsys):
    """A documented `python -m ...` line, in this process, as the shell would split it."""
    from replicate import audit, cli

    module, args = argv[2], argv[3:]
    monkeypatch.setattr(sys, "argv", [module, *args])
    try:
        code = (cli.main() or 0) if module == "replicate" else audit.main(args)  # cli.main returns None when done
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_documented_paper_runs_with_every_documented_command(tmp_path, monkeypatch, capsys):
    write_example(tmp_path)
    monkeypatch.chdir(tmp_path)  # the page's paths are relative: my_papers/
    commands = [shlex.split(line) for line in block_after("commands").splitlines() if line.strip()]
    assert [command[:3] for command in commands] == [["python", "-m", "replicate"]] * 2 + [["python", "-m", "replicate.audit"]]
    for number, command in enumerate(commands):
        code, out, err = run([*command, *SHORTENED, f"hydra.run.dir={tmp_path / f'run-{number}'}"], monkeypatch, capsys)
        assert code == 0, err
        if command[2] == "replicate":
            report = json.loads((tmp_path / f"run-{number}" / "report.json").read_text())
            assert report["paper"]["id"] == "my_logistic" and report["claims"][0]["verdict"]["n"] == 2
            assert report["plan"]["native_hparams"]["lr"] == 1.0e-2
        else:
            audit = json.loads((tmp_path / f"run-{number}" / "audit.json").read_text())
            assert [reading["settings"] for reading in audit["readings"]] == [
                {"conventions.loss_reduction": "mean"}, {"conventions.loss_reduction": "sum"}]


@pytest.mark.parametrize("module", ["replicate", "replicate.audit"])
def test_a_paper_file_without_the_header_is_one_line_that_says_what_to_add(tmp_path, monkeypatch, capsys, module):
    path = write_example(tmp_path)
    path.write_text(path.read_text().replace("# @package _global_\n", ""))
    monkeypatch.chdir(tmp_path)
    readings = ["readings.conventions.loss_reduction=mean,sum"] if module == "replicate.audit" else []
    code, out, err = run(["python", "-m", module, "--config-dir", "my_papers", "paper=my_logistic", *readings,
                          *SHORTENED, f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "lacks the header `# @package _global_`: add it as the first line" in err and "PaperConfig" not in err
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_the_page_lists_every_allowed_value_the_config_checks():
    """The page's lists are the code's: a new metric, model or convention value must reach the page too."""
    lists = (STATISTICS, METRICS, MODELS, DATASETS, DATA_ORDERS, SCHEDULES, UNITS, DIRECTIONS,
             tuple(conventions.OPTIMIZER_HPARAMS), *(tuple(values) for values in conventions.FIELD_VALUES.values()))
    missing = [value for values in lists for value in values if f"`{value}`" not in DOC]
    assert not missing, f"docs/adding-a-paper.md does not name {missing}"


def test_the_readme_links_the_page():
    assert "(docs/adding-a-paper.md)" in (ROOT / "README.md").read_text()
