"""`python -m replicate.study lr_vs_batch`: how the best learning rate moves with the batch size when the
minibatch gradient is a sum, and when it is a mean, measured.

    python -m replicate.study lr_vs_batch                      # about 5 minutes on 2 CPU cores
    python -m replicate.study lr_vs_batch format=json seeds=2 examples=4000 batch_sizes=1,16,256

One model (default: the MNIST-1D MLP of `mnist1d_mlp`, trained with plain SGD) is trained over a log
grid of learning rates, for each batch size and each loss reduction, on the same number of training
examples, through the ordinary training loop (`replicate.train.train_seeds`, seeds trained together).
The best learning rate per batch size and convention is the one with the lowest final training loss
(median over seeds). Writes study.json, study.md and study.png.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from replicate.arguments import Command, Option, UsageError, fail
from replicate.config import ConfigError

STUDIES = ("lr_vs_batch",)
DEFAULTS = {"paper": "mnist1d_mlp", "batch_sizes": [1, 4, 16, 64, 256], "lrs": "1e-4:3e1:12", "examples": 8000, "seeds": 3,
            "format": "table", "dir": None}
CONVENTIONS = ("mean", "sum")


class StudyError(Exception):
    """A mistake on the study's command line; printed as one line, exit code 2."""


COMMAND = Command(
    "replicate.study",
    "Measure how the best learning rate moves with the batch size when the minibatch loss is summed and when "
    "it is averaged: one model trained with plain SGD (no momentum, no weight decay) over a log grid of "
    "learning rates, for each batch size and each reduction, on the same number of training examples; the best "
    "is the lowest final training loss (median over seeds). Writes study.json, study.md and study.png.",
    options=(Option("paper", "the model, data and batch order to use", DEFAULTS["paper"], shown="<catalog id>"),
             Option("batch_sizes", "the batch sizes, comma-separated", DEFAULTS["batch_sizes"], kind="ints", minimum=1),
             Option("lrs", "low:high:n: n log-spaced learning rates from low to high", DEFAULTS["lrs"],
                    shown="<low>:<high>:<points>"),
             Option("examples", "training examples each run sees: steps = examples / batch size", DEFAULTS["examples"],
                    kind="int", minimum=1),
             Option("seeds", "seeds per setting, trained together", DEFAULTS["seeds"], kind="int", minimum=1),
             Option("format", "what to print; study.json, study.md and study.png are written either way", "table",
                    choices=("table", "json")),
             Option("dir", "output directory (default outputs/study/lr_vs_batch-<time>)", shown="<dir>")),
    examples=("python -m replicate.study lr_vs_batch", "python -m replicate.study lr_vs_batch batch_sizes=1,8,64 seeds=2",
              "python -m replicate.study lr_vs_batch format=json seeds=2 examples=4000 batch_sizes=1,16,256"),
    positionals=" | ".join(STUDIES),
    positional_help="the study to run: lr_vs_batch, the best learning rate against the batch size, summed and averaged loss",
)


def parse_arguments(argv: list[str]) -> tuple[str, dict]:
    arguments = COMMAND.parse(argv)
    if len(arguments.positionals) != 1 or arguments.positionals[0] not in STUDIES:
        raise StudyError(f"name a study first: {', '.join(STUDIES)}; e.g. {COMMAND.examples[1]}")
    options = dict(arguments.options)
    options["batch_sizes"] = sorted(set(options["batch_sizes"]))
    try:
        low, high, points = str(options["lrs"]).split(":")
        options["lrs"] = log_grid(float(low), float(high), int(points))
    except ValueError:
        raise StudyError(f"lrs=<low>:<high>:<points> with 0 < low < high and points ≥ 2, got {options['lrs']!r}; "
                         "e.g. lrs=1e-4:3e1:12") from None
    if options["examples"] < max(options["batch_sizes"]):
        raise StudyError(f"examples={options['examples']} must be at least the largest batch size, {max(options['batch_sizes'])}")
    return arguments.positionals[0], options


def log_grid(low: float, high: float, points: int) -> list[float]:
    if not 0 < low < high or points < 2:
        raise ValueError("need 0 < low < high and at least 2 points")
    step = (math.log10(high) - math.log10(low)) / (points - 1)
    return [float(f"{10 ** (math.log10(low) + i * step):.3g}") for i in range(points)]


def final_losses(paper: str, *, convention: str, batch_size: int, lrs: list[float], examples: int, seeds: list[int],
                 data=None) -> list[list[float]]:
    """Final training-set loss per learning rate and seed (inf where a seed diverged). The learning rates
    train together as one computation where the model allows it (replicate.sweep), each bit for bit as alone."""
    import torch

    from replicate.config import compose
    from replicate.config_checks import check_config
    from replicate.data import load_dataset
    from replicate.hyperparameters import make_plan
    from replicate.seed_stack import can_vectorize
    from replicate.sweep import train_plans_together, why_not_together
    from replicate.train import train_seeds

    cfgs = [compose([f"paper={paper}", "optimizer.name=sgd", "optimizer.momentum=0", "optimizer.nesterov=false",
                     "optimizer.weight_decay=0", f"optimizer.lr={lr}", f"train.batch_size={batch_size}",
                     f"train.steps={max(1, examples // batch_size)}", "train.epochs=null", "schedule.name=constant",
                     f"conventions.loss_reduction={convention}", "conventions.momentum_form=lr_outside",
                     "conventions.weight_decay_form=grad", "conventions.lr_unit=per_batch", "train.convention=null",
                     "train.eval_every=0", "checkpoint.every=0", f"seeds={len(seeds)}"]) for lr in lrs]
    for cfg in cfgs:
        check_config(cfg)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfgs[0].train.dtype]
    data = data or load_dataset(cfgs[0].data, dtype=dtype, device="cpu")
    plans = [make_plan(cfg, n_train=len(data.y_train)) for cfg in cfgs]
    if why_not_together(cfgs, plans, data) is None:
        runs = train_plans_together(cfgs[0], data, plans, seeds)
    else:
        vectorize = len(seeds) > 1 and can_vectorize(cfgs[0].model, data, dtype)
        runs = [train_seeds(cfg, data, plan, seeds, vectorize=vectorize) for cfg, plan in zip(cfgs, plans)]
    return [[math.inf if result.diverged_at is not None or not math.isfinite(result.metrics["train_loss"])
             else result.metrics["train_loss"] for result in results] for results in runs]


def run_lr_vs_batch(options: dict, log=print) -> dict:
    import statistics

    import torch

    from replicate.config import compose
    from replicate.cpu import intra_op_threads
    from replicate.data import load_dataset

    started = time.perf_counter()
    seeds = list(range(options["seeds"]))
    base = compose([f"paper={options['paper']}"])
    data = load_dataset(base.data, dtype={"float32": torch.float32, "float64": torch.float64}[base.train.dtype],
                        device="cpu")
    torch.set_num_threads(intra_op_threads(None, batched_seeds=len(seeds), device=torch.device("cpu")))
    losses: dict[str, dict[str, list[float]]] = {convention: {} for convention in CONVENTIONS}
    for batch_size in options["batch_sizes"]:
        for convention in CONVENTIONS:
            if convention == "sum" and batch_size == 1:  # a sum over one example is its mean: the same runs
                losses["sum"]["1"] = losses["mean"]["1"]
                continue
            per_lr = final_losses(options["paper"], convention=convention, batch_size=batch_size, lrs=options["lrs"],
                                  examples=options["examples"], seeds=seeds, data=data)
            medians = [statistics.median(per_seed) for per_seed in per_lr]
            losses[convention][str(batch_size)] = medians
            log(f"batch {batch_size:>4}, {convention:>4}: best lr {best(options['lrs'], medians)}")
    best_lr = {convention: {size: best(options["lrs"], values) for size, values in by_size.items()}
               for convention, by_size in losses.items()}
    return {"study": "lr_vs_batch", "paper": options["paper"], "optimizer": "sgd (no momentum, no weight decay)",
            "examples": options["examples"], "seeds": seeds, "batch_sizes": options["batch_sizes"], "lrs": options["lrs"],
            "criterion": "final training-set loss, median over seeds; diverged runs count as inf",
            "best_lr": best_lr, "final_train_loss": losses, "slopes": slopes(best_lr),
            "wall_time_s": round(time.perf_counter() - started, 1)}


def best(lrs: list[float], values: list[float]) -> float | None:
    finite = [(value, lr) for lr, value in zip(lrs, values) if math.isfinite(value)]
    return min(finite)[1] if finite else None


def slopes(best_lr: dict) -> dict:
    """Least-squares slope of log10(best lr) against log10(batch size), per convention."""
    fitted = {}
    for convention, by_size in best_lr.items():
        points = [(math.log10(int(size)), math.log10(lr)) for size, lr in by_size.items() if lr]
        if len(points) < 2:
            fitted[convention] = None
            continue
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        fitted[convention] = round(sum((x - mean_x) * (y - mean_y) for x, y in points)
                                   / sum((x - mean_x) ** 2 for x, _ in points), 3)
    return fitted


def render_table(study: dict) -> str:
    lines = [f"best learning rate by batch size ({study['paper']}, plain SGD, {study['examples']} examples per run, "
             f"{len(study['seeds'])} seed(s))", "", "batch size  mean        sum         mean/sum"]
    for size in map(str, study["batch_sizes"]):
        mean, total = study["best_lr"]["mean"][size], study["best_lr"]["sum"][size]
        ratio = f"{mean / total:.3g}" if mean and total else "—"
        lines.append(f"{size:<10}  {mean or '—':<10}  {total or '—':<10}  {ratio}")
    lines += ["", "slope of log(best lr) against log(batch size): "
              + ", ".join(f"{convention} {value}" for convention, value in study["slopes"].items())]
    return "\n".join(lines)


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = plt.cm.viridis([i / max(1, len(study["batch_sizes"]) - 1) for i in range(len(study["batch_sizes"]))])
    for axis, convention in zip(axes[:2], CONVENTIONS):
        for colour, size in zip(colours, map(str, study["batch_sizes"])):
            values = [value if math.isfinite(value) else float("nan") for value in study["final_train_loss"][convention][size]]
            axis.plot(study["lrs"], values, marker="o", markersize=3, color=colour, label=f"B = {size}")
        axis.set(xscale="log", yscale="log", xlabel=f"learning rate ({convention} of the minibatch losses)",
                 ylabel="final training loss", title=f"loss = {convention} over the batch")
        axis.legend(fontsize=8)
    for convention, marker in zip(CONVENTIONS, ("o", "s")):
        sizes = [int(size) for size, lr in study["best_lr"][convention].items() if lr]
        axes[2].plot(sizes, [study["best_lr"][convention][str(size)] for size in sizes], marker=marker,
                     label=f"{convention} (slope {study['slopes'][convention]})")
    axes[2].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="best learning rate",
                title="best lr against batch size")
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_study(study: dict, directory: Path) -> None:
    from replicate.report import render_json_text, write_atomically

    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / "study.json", render_json_text(study))
    write_atomically(directory / "study.md", f"# Study: lr_vs_batch\n\n```\n{render_table(study)}\n```\n\n![](study.png)\n")
    plot(study, directory / "study.png")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        name, options = parse_arguments(argv)
    except (StudyError, UsageError) as error:
        return fail(error)
    from replicate.cli import prepare_process

    prepare_process([])  # the default numerics, set before torch loads, as for `python -m replicate`
    try:
        study = run_lr_vs_batch(options, log=lambda line: print(line, file=sys.stderr))
        directory = Path(options["dir"] or Path("outputs") / "study" / f"{name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
        write_study(study, directory)
    except (StudyError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if options["format"] == "json":
        from replicate.report import render_json_text

        print(render_json_text(study), end="")
    else:
        print(render_table(study))
        print(f"study: {directory / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
