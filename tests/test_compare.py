"""`python -m replicate.compare` over real reports: rows equal the reports, combine=true equals judge() on the
pooled seeds, and bad input is one line with exit code 2."""
import json
import math
import shutil

import pytest

from conftest import run_command, run_in_process
from replicate.verdict import judge

TINY = ["paper=mnist1d_logistic", "train.steps=200", "logger=none"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Five real runs: one paper under two conventions (3 seeds each), and two single-seed jobs in a multirun tree."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:  # module scope runs before conftest's per-test cache fixture
        patch.setenv("REPLICATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run_in_process([*TINY, "seeds=3"], root / "native")
        run_in_process([*TINY, "seeds=3", "train.convention=sum"], root / "sum")
        run_in_process([*TINY, "seed=2"], root / "multirun" / "0_mnist1d_logistic")  # seed 2 again: must count once
        run_in_process([*TINY, "seed=3"], root / "multirun" / "1_mnist1d_logistic")
    return root


def read(path):
    return json.loads((path / "report.json").read_text())


def compare(*args):
    return run_command(["replicate.compare", *map(str, args)])


def rows_of(*args):
    result = compare(*args, "format=json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


def test_each_row_carries_the_numbers_of_its_report(runs):
    rows = rows_of(runs / "native", runs / "sum" / "report.json")
    assert [(row["convention"], row["run_dir"]) for row in rows] == [("native", str(runs / "native")),
                                                                    ("sum", str(runs / "sum"))]
    for row in rows:
        report = read(runs / row["convention"])
        claim = report["claims"][0]
        assert row["paper"] == report["paper"]["id"] == "mnist1d_logistic"
        assert row["convention"] == report["plan"]["executed_convention"]["name"]
        assert (row["claim"], row["claimed"], row["unit"]) == (claim["name"], claim["claimed"], claim["unit"])
        for key in ("mean", "std", "n", "verdict", "rule"):
            assert row[key] == claim["verdict"][key]
        assert row["values"] == claim["measured"] and row["seeds"] == [0, 1, 2]
        assert row["wall_time_s"] == report["wall_time_s"]


def test_the_table_and_markdown_print_the_reports_numbers(runs):
    verdict = read(runs / "native")["claims"][0]["verdict"]
    measured = f"{verdict['mean']:.2f} ± {verdict['std']:.2f} (n=3)"
    table = compare(runs / "native", runs / "sum")
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if line.startswith("mnist1d_logistic")]
    assert len(lines) == 2
    assert measured in lines[0] and verdict["verdict"] in lines[0] and str(runs / "native") in lines[0]
    markdown = compare(runs / "native", runs / "sum", "format=markdown").stdout.splitlines()
    assert markdown[0].startswith("| paper | convention | claim |") and markdown[1].startswith("|---|")
    assert len(markdown) == 4 and f"| {measured} | **{verdict['verdict']}** |" in markdown[2]


def test_a_multirun_tree_is_searched_and_globs_are_expanded(runs):
    expected = [str(runs / "multirun" / "0_mnist1d_logistic"), str(runs / "multirun" / "1_mnist1d_logistic")]
    assert [row["run_dir"] for row in rows_of(runs / "multirun")] == expected
    assert [row["run_dir"] for row in rows_of(f"{runs}/multirun/*")] == expected
    assert len(rows_of(f"{runs}/*")) == 4  # native, sum, and the two reports under the multirun directory
    assert len(rows_of(runs / "native", f"{runs}/nat*")) == 1  # one report reached twice counts once


def test_sort_by_wall_time_and_by_verdict(runs, tmp_path):
    rows = rows_of(runs / "native", runs / "sum", runs / "multirun", "sort=wall_time")
    assert [row["wall_time_s"] for row in rows] == sorted(row["wall_time_s"] for row in rows)
    failed = read(runs / "native")
    failed["claims"][0]["verdict"]["verdict"] = "NOT_REPRODUCED"
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "report.json").write_text(json.dumps(failed))
    passed = read(runs / "native")  # three seeds cannot reproduce a single run (MIN_SEEDS_TO_AGREE): set the word
    passed["claims"][0]["verdict"]["verdict"] = "REPRODUCED"
    (tmp_path / "passed").mkdir()
    (tmp_path / "passed" / "report.json").write_text(json.dumps(passed))
    rows = rows_of(tmp_path / "failed", runs / "multirun", tmp_path / "passed", "sort=verdict")
    order = ["REPRODUCED", "INCONCLUSIVE", "NOT_REPRODUCED"]
    verdicts = [row["verdict"] for row in rows]
    assert verdicts == sorted(verdicts, key=order.index) and verdicts[0] == "REPRODUCED" and verdicts[-1] == order[-1]


def test_combine_pools_the_seeds_of_separate_jobs_and_judges_them_again(runs):
    rows = rows_of(runs / "native", runs / "multirun", runs / "sum", "combine=true")
    assert [row["convention"] for row in rows] == ["native", "sum"]
    pooled = rows[0]
    assert pooled["seeds"] == [0, 1, 2, 3] and pooled["n"] == 4  # seed 2 ran twice and counts once
    by_seed = {}  # a seed found twice is taken from the first run in path order
    for directory in sorted([runs / "native", *(runs / "multirun").iterdir()], key=str):
        report = read(directory)
        for seed, value in zip(report["seeds"], report["claims"][0]["measured"]):
            by_seed.setdefault(seed["seed"], value)
    values = [by_seed[seed] for seed in sorted(by_seed)]
    claim = read(runs / "native")["claims"][0]
    expected = judge(values, claimed=claim["claimed"], tolerance=claim["tolerance"], statistic=claim["statistic"],
                     direction=claim["direction"], n_claimed=claim["n"], std_claimed=claim["std"])
    assert pooled["values"] == values
    assert (pooled["verdict"], pooled["rule"], pooled["mean"], pooled["std"]) == (
        expected.verdict, expected.rule, expected.mean, expected.std)
    pooled_runs = [runs / "native", *sorted((runs / "multirun").iterdir())]
    assert pooled["wall_time_s"] == pytest.approx(sum(read(path)["wall_time_s"] for path in pooled_runs))
    # a group of one run is judged exactly as the run judged itself
    assert {key: rows[1][key] for key in ("verdict", "rule", "mean", "std", "n")} == {
        key: read(runs / "sum")["claims"][0]["verdict"][key] for key in ("verdict", "rule", "mean", "std", "n")}


def test_combine_counts_diverged_seeds_and_prints_them_as_null(runs, tmp_path):
    report = read(runs / "native")
    report["claims"][0]["measured"][1] = math.nan  # json.dumps writes NaN, as report.json does for a diverged seed
    (tmp_path / "report.json").write_text(json.dumps(report))
    [row] = rows_of(tmp_path, "combine=true")
    assert row["values"][1] is None and row["diverged"] == 1 and row["n"] == 2
    assert row["verdict"] == judge(report["claims"][0]["measured"], claimed=32.0, tolerance=0.5,
                                   statistic="single_run").verdict


def test_combine_refuses_runs_of_different_experiments(runs, tmp_path):
    other = read(runs / "multirun" / "1_mnist1d_logistic")
    other["config"]["train"]["steps"] = 100
    (tmp_path / "report.json").write_text(json.dumps(other))
    result = compare(runs / "native", tmp_path, "combine=true")
    assert result.returncode == 2 and "train.steps is 200 vs 100" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_plot_draws_one_panel_per_claim_with_every_run(runs, tmp_path):
    from matplotlib.image import imread

    result = compare(runs / "native", runs / "sum", f"plot={tmp_path / 'compare.png'}")
    assert result.returncode == 0, result.stderr
    height, width, _ = imread(tmp_path / "compare.png").shape
    assert width >= 400 and height >= 300


def test_a_corrupt_report_among_good_ones_is_skipped_with_one_warning(runs, tmp_path):
    shutil.copytree(runs / "native", tmp_path / "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text('{"paper": {"id": "mnist1d_logistic"')  # cut short
    result = compare(f"{tmp_path}/*", "format=json")
    assert result.returncode == 0
    assert result.stderr.strip().startswith("warning: skipping") and len(result.stderr.strip().splitlines()) == 1
    assert [row["run_dir"] for row in json.loads(result.stdout)] == [str(tmp_path / "good")]


@pytest.mark.parametrize("arguments, message", [
    (["missing"], "no such file or directory"),
    (["nothing-*"], "matches nothing"),
    (["empty"], "no report.json found"),
    (["corrupt.json"], "not valid JSON"),
    (["list.json"], "not a replicate report"),
    (["corrupt.json", "format=xml"], "unknown format 'xml'; allowed: table, markdown, json"),
    (["corrupt.json", "sort=seed"], "unknown sort 'seed'"),
    (["corrupt.json", "combine=maybe"], "combine must be true or false"),
    (["corrupt.json", "plot=compare.jpg"], "must name a .png, .pdf or .svg file"),
    (["corrupt.json", "colour=red"], "unknown option 'colour'"),
    (["format=json"], "no run directory given"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, arguments, message):
    (tmp_path / "corrupt.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "empty").mkdir()
    result = compare(*(argument if "=" in argument else tmp_path / argument for argument in arguments))
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr + result.stdout
