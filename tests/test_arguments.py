"""`--help` on every entry point, through one argument layer (issue 16, item 4), and that layer's contract:
Hydra's override grammar, every option checked, each mistake one line naming what is allowed."""
import importlib

import pytest

from conftest import run_command
from replicate.arguments import Command, Option, UsageError
from replicate.config import DEVICES, DTYPES
from replicate.hydra_setup import available_papers
from replicate.log import LOGGERS
from replicate.numerics import MODES as NUMERICS_MODES

TOOLS = ("convert", "compare", "bench", "catalog", "audit", "study", "check", "calibrate", "dashboard")


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_says_what_it_does_its_options_and_an_example(tool, capsys):
    module = importlib.import_module(f"replicate.{tool}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert out.startswith(f"usage: python -m replicate.{tool}")
    assert len(module.COMMAND.summary) > 80 and module.COMMAND.summary[:60] in out.replace("\n", " ")
    lines = out.splitlines()
    for option in module.COMMAND.options:
        (line,) = [line for line in lines if line.startswith(f"  {option.name} ")]  # name, allowed values, default
        assert option.allowed() in line and option.allowed() not in ("", "text"), line
        if option.choices:
            assert "|".join(map(str, option.choices)) in line, line
        shown = (str(option.default).lower() if isinstance(option.default, bool) else
                 ",".join(map(str, option.default)) if isinstance(option.default, list) else str(option.default))
        assert (f"(default: {shown})" in line) == (option.default is not None), line
    examples = out.split("Examples:\n", 1)[1]
    assert f"python -m replicate.{tool}" in examples


def test_python_m_replicate_help_describes_the_keys_not_the_config():
    result = run_command(["replicate", "--help"], timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for key in ("paper=<id>", "seeds=<n>", "seed=<k>", "train.steps=<n>", "train.convention=", "resume=true|false",
                "hydra.run.dir=", "runtime.threads=<n>", "--config-dir my_papers"):
        assert key in out, key
    # the allowed values as the config checks them: a new device or mode must reach the help too
    for key, values in (("device", DEVICES), ("logger", LOGGERS), ("runtime.numerics", NUMERICS_MODES),
                        ("train.dtype", DTYPES)):
        assert f"{key}={'|'.join(values)}" in out, key
    assert "paper: " + ", ".join(sorted(available_papers())) in out  # the catalog ids, from conf/paper
    assert "claims:" not in out and len(out.splitlines()) < 60  # not the composed config (that is --cfg job)


EXAMPLE = Command("replicate.example", "An example tool.", options=(
    Option("format", "what to print", "table", choices=("table", "json")),
    Option("steps", "how many", 10, kind="int", minimum=1),
    Option("lr", "a rate", kind="number"),
    Option("verify", "check it", False, kind="bool"),
    Option("sizes", "batch sizes", kind="ints", minimum=1),
    Option("dir", "where"),
), examples=("python -m replicate.example steps=3",), positionals="<run dir> ...")


def test_values_are_read_with_hydras_grammar():
    arguments = EXAMPLE.parse(["steps=3", "lr=5e-4", "verify=true", "sizes=1,4,16", "dir=out/a b", "runs/x"])
    assert arguments.options == {"format": "table", "steps": 3, "lr": 0.0005, "verify": True, "sizes": [1, 4, 16],
                                 "dir": "out/a b"}
    assert arguments.positionals == ["runs/x"] and arguments.given == {"steps", "lr", "verify", "sizes", "dir"}
    assert EXAMPLE.parse(["sizes=[2,8]"]).options["sizes"] == [2, 8]


def test_a_path_with_an_equals_sign_is_a_path(tmp_path):
    run_dir = tmp_path / "paper=mnist1d_mlp,seed=1"  # Hydra's override dirnames
    run_dir.mkdir()
    assert EXAMPLE.parse([str(run_dir)]).positionals == [str(run_dir)]
    assert EXAMPLE.parse(["multirun/*/paper=*"]).positionals == ["multirun/*/paper=*"]  # a glob


@pytest.mark.parametrize("argv, message", [
    (["format=xml"], "unknown format 'xml'; allowed: table, json"),
    (["steps=0"], "steps must be a positive integer, got '0'"),
    (["steps=2.5"], "steps must be a positive integer, got '2.5'"),
    (["lr=.nan"], "lr must be a finite number, got '.nan'"),
    (["lr=inf"], "lr must be a finite number, got 'inf'"),
    (["verify=maybe"], "verify must be true or false, got 'maybe'"),
    (["sizes=1,0"], "sizes must be a positive integer (or several, comma-separated), got '1,0'"),
    (["colour=red"], "unknown option 'colour'; allowed: format, steps, lr, verify, sizes, dir"),
    (["steps=1", "steps=2"], "steps= is given twice (steps=1 and steps=2); give it once"),
    (["--verbose"], "unknown flag --verbose; options are key=value"),
    (["lr=[1,"], "cannot read 'lr=[1,'"),
])
def test_each_mistake_is_one_line_naming_what_is_allowed(argv, message):
    with pytest.raises(UsageError) as error:
        EXAMPLE.parse(argv)
    text = str(error.value)
    assert message in text and "\n" not in text
    assert text.endswith("(python -m replicate.example --help lists every option)")


def test_a_tool_without_positionals_refuses_a_bare_word():
    no_positionals = Command("replicate.x", "X.", options=(Option("format", "what", "table", choices=("table",)),),
                             examples=("python -m replicate.x format=table",))
    with pytest.raises(UsageError, match="options are key=value, got 'table'; e.g. format=table"):
        no_positionals.parse(["table"])


def test_config_dirs_are_taken_as_hydra_takes_them():
    from replicate.arguments import split_config_dirs

    assert split_config_dirs(["--config-dir", "a", "paper=x", "-cd", "b", "--config-dir=c"]) == (["a", "b", "c"], ["paper=x"])
    with pytest.raises(UsageError, match="--config-dir needs a directory, e.g. --config-dir my_papers"):
        split_config_dirs(["paper=x", "--config-dir"])
