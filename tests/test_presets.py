"""A framework name resolves per optimizer (issue 16, item 5): `from=tf1 optimizer=rmsprop` is tf1_rmsprop,
and where no form of a framework is on record for an optimizer, the error says so in the command line's words."""
import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ROOT
from replicate import convert as convert_cli
from replicate.conventions import OPTIMIZER_HPARAMS, PRESETS, get_convention

# (framework, optimizer) → the ε placement of the form that runs; every other field stays the preset's.
# Sources: tf.train.RMSPropOptimizer (tf1_rmsprop's evidence), BVLC/caffe src/caffe/solvers/rmsprop_solver.cpp
# (√history, then + delta) and adagrad_solver.cpp, Keras 2 optimizers.py RMSprop, clab/dynet training.cc.
RESOLVED = {
    ("caffe", "rmsprop"): "outside", ("caffe", "adagrad"): "outside",
    ("keras", "rmsprop"): "outside",
    ("dynet", "rmsprop"): "inside_sqrt", ("dynet", "adagrad"): "inside_sqrt",
}


@pytest.mark.parametrize("framework", sorted(PRESETS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_HPARAMS))
def test_each_framework_resolves_per_optimizer(framework, optimizer):
    resolved = get_convention(framework, optimizer)
    if (framework, optimizer) == ("tf1", "rmsprop"):
        assert resolved is PRESETS["tf1_rmsprop"]
        assert (resolved.eps_placement, resolved.momentum_form) == ("inside_sqrt", "lr_inside")
    elif (framework, optimizer) in RESOLVED:
        expected = RESOLVED[framework, optimizer]
        assert resolved == replace(PRESETS[framework], name=f"{framework}(eps_placement={expected})",
                                   eps_placement=expected)
    else:
        assert resolved is PRESETS[framework]  # one form for every optimizer, or none other on record


def test_a_field_given_by_hand_wins_over_the_optimizers_form():
    keras1 = get_convention("keras", "rmsprop", eps_placement="inside_sqrt")  # Keras 1 RMSprop
    assert keras1.eps_placement == "inside_sqrt" and keras1.weight_decay_form == "l2"


def run_convert(capsys, *args):
    code = convert_cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_refused_before_issue_16_converts(capsys):
    code, out, err = run_convert(capsys, "from=tf1", "optimizer=rmsprop", "to=mean", "batch_size=32", "lr=0.001",
                                 "momentum=0.9", "eps=1e-10", "format=json")
    assert code == 0, err
    result = json.loads(out)
    assert result["from"] == "tf1_rmsprop" and result["conventions"]["from"]["eps_placement"] == "inside_sqrt"
    (eps,) = [rule for rule in result["rules"] if rule["field"] == "eps"]
    assert eps["target_value"] == pytest.approx(1e-5) and not eps["exact"]  # √(v + ε) → √v + √ε: not exact


def test_the_target_side_resolves_too(capsys):
    code, out, err = run_convert(capsys, "from=mean", "to=tf1", "optimizer=rmsprop", "batch_size=32", "lr=0.001",
                                 "eps=1e-5", "format=json")
    assert code == 0, err
    assert json.loads(out)["to"] == "tf1_rmsprop"


@pytest.mark.parametrize("args, side, forms", [
    (["from=tf1", "optimizer=adagrad", "to=sum"], "from", "rmsprop → from=tf1_rmsprop"),
    (["from=sum", "optimizer=adagrad", "to=keras"], "to", "rmsprop → to=keras (its rmsprop form)"),
    (["from=sklearn", "optimizer=rmsprop", "to=sum"], "from", "adam → from=sklearn)"),
])
def test_no_form_on_record_is_one_line_in_command_line_syntax(capsys, args, side, forms):
    code, out, err = run_convert(capsys, *args, "batch_size=32", "lr=0.01", "eps=1e-8")
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: ")
    assert forms in err and f"{side}_eps_placement=outside or {side}_eps_placement=inside_sqrt" in err
    assert "get_convention" not in err and "(" not in err.split("say where")[1]  # no Python syntax in the fix


def test_the_vocabulary_imports_nothing_of_the_package():
    """convention.py ↔ presets.py was an import circle: the vocabulary now stands alone, presets build on it."""
    tree = ast.parse(Path(ROOT / "replicate" / "conventions" / "convention.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.startswith("replicate")], imported


@pytest.mark.parametrize("args, message", [
    (["from=per_sequence_sum", "to=mean", "optimizer=sgd", "lr=1"], "from=per_sequence_sum sums the loss over time "
                                                                    "steps: give seq_len=<tokens per sequence>"),
    (["from=mean", "to=airbench", "optimizer=sgd", "lr=1"], "to=airbench divides lr by 1 + 1/(1−μ): give momentum=<μ>"),
])
def test_what_a_convention_needs_is_asked_for_in_command_line_syntax(capsys, args, message):
    code, out, err = run_convert(capsys, *args, "batch_size=32")
    assert code == 2 and err == f"error: {message}\n"
