"""`python -m replicate.convert`: restate a hyperparameter set in another convention, rule by rule.

    python -m replicate.convert from=sum to=mean batch_size=32 optimizer=sgd lr=0.01 momentum=0.9 verify=true
    python -m replicate.convert paper=sklearn_digits_momentum to=pytorch format=json

Arguments are key=value, read with Hydra's override grammar (replicate.arguments; --help lists them all). A
framework name resolves per optimizer (from=tf1 optimizer=rmsprop is tf1_rmsprop). Convention fields can be
overridden per side: `from_eps_placement=inside_sqrt`, `to_momentum_form=lr_inside`. Batch-size scaling
(`new_batch_size=… scaling=linear|sqrt|none`) is a labelled heuristic applied after the conversion.
"""
from __future__ import annotations

import json
import math
import signal
import sys
from dataclasses import asdict, fields, replace

from replicate import conventions
from replicate.arguments import Command, Option, UsageError

CONVENTION_FIELDS = tuple(f.name for f in fields(conventions.Convention) if f.name != "name")
HPARAMS = ("lr", "weight_decay", "momentum", "nesterov", "eps", "beta1", "beta2", "alpha", "rho", "centered",
           "lr_decay", "initial_accumulator_value", "grad_clip", "grad_clip_value")
FLAGS = ("nesterov", "centered")
OPTIONS = ("from", "to", "paper", "optimizer", "batch_size", "seq_len", "world_size", "accum_steps", "format",
           "verify", "steps", "schedule", "new_batch_size", "scaling")


# what a catalog entry fixes: given beside paper=<id>, these would be silently ignored
PAPER_SETS = ("from", "optimizer", "batch_size")


def _field_option(side: str, name: str) -> Option:
    if name in conventions.FIELD_VALUES:
        return Option(f"{side}_{name}", f"replace the {side} convention's {name}", choices=tuple(conventions.FIELD_VALUES[name]))
    kind = "bool" if name == "lr_momentum_normalized" else "int"
    return Option(f"{side}_{name}", f"replace the {side} convention's {name}", kind=kind, minimum=1 if kind == "int" else None)


_PRESETS = ", ".join(conventions.PRESETS)
_FRAMEWORKS = "; ".join(f"{name}: {conventions.optimizer_forms(name)}" for name in conventions.OPTIMIZER_FORMS)
COMMAND = Command(
    "replicate.convert",
    "Restate a hyperparameter set in another convention (how the loss is reduced, where weight decay, momentum "
    "and ε sit, what the learning rate is per), rule by rule, each rule marked exact or not with the reason. "
    "A framework name resolves per optimizer: from=tf1 optimizer=rmsprop is tf1_rmsprop. verify=true trains "
    "a small model both ways in float64 and compares the parameters.",
    options=(
        Option("from", f"convention the numbers are stated in: a preset ({_PRESETS}); required unless paper= "
                       f"(frameworks whose optimizers differ: {_FRAMEWORKS})", shown="<preset>"),
        Option("to", "convention to restate them in: a preset, as for from=; required", shown="<preset>"),
        Option("paper", "convert that catalog entry's whole native set (it sets from, optimizer and batch_size)",
               shown="<catalog id>"),
        Option("optimizer", "the optimizer the numbers are for; required unless paper=",
               choices=tuple(conventions.OPTIMIZER_HPARAMS)),
        Option("batch_size", "examples per optimizer step, over all ranks and accumulation steps; required unless paper=",
               kind="int", minimum=1),
        Option("seq_len", "tokens per sequence, for losses summed over tokens", kind="int", minimum=1),
        Option("world_size", "data-parallel ranks", 1, kind="int", minimum=1),
        Option("accum_steps", "gradient accumulation steps per optimizer step", 1, kind="int", minimum=1),
        Option("format", "what to print", "table", choices=("table", "json")),
        Option("verify", "prove the conversion by training both sides in float64", False, kind="bool"),
        Option("steps", "training steps of verify=true", 100, kind="int", minimum=1),
        Option("schedule", "the learning-rate schedule: some rules are exact only at a constant lr "
                           "(multistep: lr × 0.1 halfway through verify=true)", "constant", choices=("constant", "multistep")),
        Option("new_batch_size", "then scale to this batch size (a labelled heuristic, after the conversion)",
               kind="int", minimum=1),
        Option("scaling", "rule of the batch-size heuristic (Goyal et al. 2017: linear; Krizhevsky 2014: sqrt)",
               "linear", choices=("linear", "sqrt", "none")),
        *(Option(key, f"the optimizer's {key}" + (", true or false" if key in FLAGS else ""),
                 kind="bool" if key in FLAGS else "number") for key in HPARAMS),
        *(_field_option(side, name) for side in ("from", "to") for name in CONVENTION_FIELDS),
    ),
    examples=("python -m replicate.convert from=sum to=mean batch_size=32 optimizer=sgd lr=0.01 momentum=0.9 verify=true",
              "python -m replicate.convert from=tf1 to=mean optimizer=rmsprop batch_size=32 lr=0.001 eps=1e-10 momentum=0.9",
              "python -m replicate.convert from=keras from_eps_placement=inside_sqrt to=mean optimizer=rmsprop batch_size=32 lr=0.001 eps=1e-7",
              "python -m replicate.convert paper=sklearn_digits_momentum to=pytorch format=json"),
    sections=(("conventions", ("from", "to", "paper")), ("the setup", ("optimizer", "batch_size", "seq_len", "world_size",
                                                                       "accum_steps", "schedule")),
              ("hyperparameters (those of the optimizer)", HPARAMS),
              ("one field of a side's convention", tuple(f"{side}_{name}" for side in ("from", "to") for name in CONVENTION_FIELDS)),
              ("output, proof and batch-size scaling", ("format", "verify", "steps", "new_batch_size", "scaling"))),
)


def parse_arguments(argv: list[str]) -> dict:
    """The options written on the command line (absent ones stay absent: paper= and an hparam's presence matter)."""
    arguments = COMMAND.parse(argv)
    return {key: arguments[key] for key in COMMAND_ORDER if key in arguments.given}


COMMAND_ORDER = tuple(option.name for option in COMMAND.options)


def _convention(args: dict, side: str, optimizer: str, default=None):
    name = args.get(side, default)
    if name is None:
        raise UsageError(f"{side}=<convention> is required; presets: {_PRESETS}")
    if isinstance(name, conventions.Convention):
        base, name = name, None
    overrides = {field: args[f"{side}_{field}"] for field in CONVENTION_FIELDS if f"{side}_{field}" in args}
    if name is None:
        return conventions.Convention(**{**asdict(base), **overrides})
    if name not in conventions.PRESETS:
        raise UsageError(f"{side}={name}: unknown convention {name!r}; presets: {_PRESETS}")
    return conventions.get_convention(str(name), optimizer, **overrides)


def unstated_eps_message(error, args: dict, source, target) -> str:
    """The library's 'which ε?' question in the command line's words: the side, its forms on record, the fix."""
    side = "from" if error.convention is source else "to"
    name = args.get(side) or error.convention.name
    base = str(name).split("(")[0]
    forms = [f"{optimizer} → {side}={form}" if isinstance(form, str) else f"{optimizer} → {side}={base} (its {optimizer} form)"
             for optimizer, form in conventions.OPTIMIZER_FORMS.get(base, {}).items()]
    on_record = f"forms on record: adam → {side}={base}" + "".join(f", {form}" for form in forms)
    return (f"{side}={name} records Adam's ε form (eps_hat), and no {error.optimizer} form of {base} is on record "
            f"({on_record}); say where {error.optimizer}'s ε sits: {side}_eps_placement=outside or "
            f"{side}_eps_placement=inside_sqrt")


def _positive_int(args: dict, key: str, default=None):
    value = args.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{key} must be a positive integer, got {value!r}")
    return value


# training-set sizes of the standard files, for converting an entry before its files are downloaded: MNIST "a
# training set of 60,000 examples" (yann.lecun.com/exdb/mnist), CIFAR-10 "50000 training images" (cs.toronto.edu/~kriz/cifar.html)
PUBLISHED_TRAIN_SIZES = {"mnist": 60000, "cifar10": 50000}


def request_from_paper(args: dict) -> dict:
    """Source convention, optimizer, batch size and native hyperparameters of a catalog entry."""
    import torch

    from replicate.hydra_setup import available_papers
    from replicate.config import ConfigError, compose
    from replicate.data import load_dataset
    from replicate.hyperparameters import conventions_fields, has_constant_batch, native_hparams, native_param_groups

    if args["paper"] not in available_papers():
        raise UsageError(f"unknown paper {args['paper']!r}; available: {', '.join(available_papers())}")
    cfg = compose([f"paper={args['paper']}"])
    try:
        n_train = len(load_dataset(cfg.data, dtype=torch.float32, device="cpu").y_train)
    except ConfigError:  # files not downloaded: only the size matters here (does every batch hold batch_size?)
        if cfg.data.name == "ptb" and cfg.data.seq_len:  # windows × rows examples: a multiple of the batch size (data.rows)
            n_train = cfg.train.batch_size
        elif cfg.data.name not in PUBLISHED_TRAIN_SIZES:
            raise
        else:
            n_train = PUBLISHED_TRAIN_SIZES[cfg.data.name] - cfg.data.holdout
    batch_size = cfg.train.batch_size
    source = conventions.Convention(name=args["paper"], **conventions_fields(cfg))
    return {"source": source, "optimizer": cfg.optimizer.name, "batch_size": batch_size,
            "hparams": native_hparams(cfg.optimizer), "constant_lr": cfg.schedule.name == "constant",
            "constant_batch": has_constant_batch(cfg, n_train), "param_groups": native_param_groups(cfg.optimizer),
            "seq_len": cfg.data.seq_len, "language_model": cfg.data.name == "ptb" and cfg.data.seq_len is not None}


def convert_request(args: dict) -> dict:
    """The JSON-ready result of one command line (without printing)."""
    if "paper" in args:
        ignored = [key for key in PAPER_SETS if key in args]
        if ignored:
            raise UsageError(f"paper={args['paper']} sets {', '.join(PAPER_SETS)} itself; drop "
                             f"{' '.join(f'{key}={args[key]}' for key in ignored)}, or drop paper= to convert your own set "
                             "(from_<field>=... overrides one field of the paper's convention)")
        request = request_from_paper(args)
        request["source"] = _convention({**args, "from": request["source"]}, "from", request["optimizer"])
        for key in HPARAMS:
            if key in args:
                request["hparams"][key] = args[key]
    else:
        for key in ("optimizer", "batch_size", "lr"):
            if key not in args:
                raise UsageError(f"{key}=… is required (or paper=<id>); e.g. from=sum to=mean batch_size=32 optimizer=sgd lr=0.01")
        request = {"source": _convention(args, "from", args["optimizer"]), "optimizer": args["optimizer"],
                   "batch_size": _positive_int(args, "batch_size"), "constant_lr": args.get("schedule", "constant") == "constant",
                   "constant_batch": True, "hparams": {key: args[key] for key in HPARAMS if key in args}}
    target = _convention(args, "to", request["optimizer"])
    seq_len = _positive_int(args, "seq_len", request.get("seq_len"))
    for side, convention in (("from", request["source"]), ("to", target)):  # what the conversion needs, asked for here
        if convention.loss_reduction == "per_sequence_sum" and seq_len is None:
            raise UsageError(f"{side}={convention.name} sums the loss over time steps: give seq_len=<tokens per sequence>")
        if convention.lr_momentum_normalized and "momentum" not in request["hparams"]:
            raise UsageError(f"{side}={convention.name} divides lr by 1 + 1/(1−μ): give momentum=<μ>")
    try:
        conversion = conventions.convert(
            request["hparams"], request["source"], target, optimizer=request["optimizer"], batch_size=request["batch_size"],
            seq_len=seq_len, constant_batch=request["constant_batch"], constant_lr=request["constant_lr"],
            world_size=_positive_int(args, "world_size", 1), accum_steps=_positive_int(args, "accum_steps", 1))
        groups = [group_rules(request, target, group, seq_len) for group in request.get("param_groups", [])]
    except conventions.UnstatedEpsPlacement as error:
        raise UsageError(unstated_eps_message(error, args, request["source"], target)) from None
    for rules in groups:
        conversion.rules += rules
        conversion.exact = conversion.exact and all(rule.exact for rule in rules)
    result = {"from": request["source"].name, "to": target.name, "optimizer": request["optimizer"],
              "batch_size": request["batch_size"], "source_hparams": request["hparams"], "hparams": conversion.hparams,
              "exact": conversion.exact, "rules": [asdict(rule) for rule in conversion.rules],
              "warnings": list(conversion.warnings),
              "conventions": {"from": conventions.describe(request["source"]), "to": conventions.describe(target)}}
    if "new_batch_size" in args or "scaling" in args:
        scaled = conventions.scale_batch_size(
            conversion.hparams, optimizer=request["optimizer"], batch_size=request["batch_size"],
            new_batch_size=_positive_int(args, "new_batch_size", request["batch_size"]),
            scaling=str(args.get("scaling", "linear")), convention=target, seq_len=seq_len)
        result["batch_scaling"] = {"new_batch_size": args.get("new_batch_size"), "scaling": args.get("scaling", "linear"),
                                   "hparams": scaled.hparams, "rules": [asdict(rule) for rule in scaled.rules],
                                   "heuristic": True}
    check_finite(result)
    if args.get("verify"):
        result["verify"] = run_verification(args, request, target, seq_len)
    return result


def group_rules(request: dict, target, group: tuple, seq_len) -> list:
    """One optimizer.param_groups entry's lr and weight decay, converted by the same rules as the global ones, at
    the group's own lr (lr × lr_mult: the forms whose decay conversion involves lr see what these parameters
    step with); the fields read `lr[<pattern>]` and `weight_decay[<pattern>]`."""
    match, lr_mult, weight_decay = group
    hparams = {**request["hparams"], "lr": request["hparams"]["lr"] * lr_mult, "weight_decay": weight_decay}
    converted = conventions.convert(hparams, request["source"], target, optimizer=request["optimizer"],
                                    batch_size=request["batch_size"], seq_len=seq_len,
                                    constant_batch=request["constant_batch"], constant_lr=request["constant_lr"])
    return [replace(rule, field=f"{rule.field}[{match}]") for rule in converted.rules if rule.field in ("lr", "weight_decay")]


def check_finite(result: dict) -> None:
    """A conversion whose result overflows a float64 (lr=1e308 × B) is refused, never printed as inf."""
    converted = [("", result["hparams"])] + [(" after batch-size scaling", result.get("batch_scaling", {}).get("hparams", {}))]
    for where, hparams in converted:
        for key, value in hparams.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"{key}={result['source_hparams'].get(key)} converts to {value}{where}, beyond what a "
                                 f"float64 can hold; check the value's unit and magnitude")


def run_verification(args: dict, request: dict, target, seq_len) -> dict:
    from replicate.conversion_proof import verify_conversion

    source = request["source"]
    if request["optimizer"] == "adadelta" and (source.loss_reduction, source.lr_unit) != (target.loss_reduction, target.lr_unit):
        raise UsageError("verify=true needs a convertible optimizer: adadelta has no exact conversion between "
                         "different loss scales (one ε in two accumulators); convertible: sgd, adam, adamw, rmsprop, adagrad")
    steps = _positive_int(args, "steps", 100)
    if request.get("language_model"):  # the entry's own LSTM and loop (conversion_proof says why not the MLP)
        from replicate.conversion_proof import verify_language_model_conversion

        return verify_language_model_conversion(args["paper"], source, target, request["hparams"], steps=steps)
    schedule = args.get("schedule", "constant")
    if schedule not in ("constant", "multistep"):
        raise UsageError(f"schedule must be constant or multistep (lr × 0.1 halfway), got {schedule!r}")
    return verify_conversion(source, target, request["hparams"], optimizer=request["optimizer"],
                             batch_size=request["batch_size"], steps=steps, seq_len=seq_len, schedule=schedule)


def render_table(result: dict) -> str:
    lines = [f"{result['from']} → {result['to']}  ({result['optimizer']}, batch {result['batch_size']})", ""]
    rows = [("hparam", result["from"], result["to"], "exact", "rule")]
    for rule in result["rules"]:
        rows.append((rule["field"], _number(rule["source_value"]), _number(rule["target_value"]),
                     "yes" if rule["exact"] else "NO", rule["formula"] + ("" if rule["exact"] else f"  [{rule['reason']}]")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
    lines += ["", f"exact: {'yes' if result['exact'] else 'NO'}"]
    lines += [f"warning: {warning}" for warning in result["warnings"]]
    if "batch_scaling" in result:
        scaling = result["batch_scaling"]
        lines += ["", f"batch-size scaling (HEURISTIC, {scaling['scaling']}) to batch {scaling['new_batch_size']}:"]
        lines += [f"  {rule['field']}: {_number(rule['target_value'])}  ({rule['formula']})" for rule in scaling["rules"]]
    if "verify" in result:
        check = result["verify"]
        lines += ["", f"verify: trained {check['model']} for {check['steps']} steps in {check['dtype']} under both "
                      f"conventions ({check['schedule']} lr): max |Δparam| = {check['max_abs_diff']:.3g} → "
                      f"{'PASSED' if check['passed'] else 'DIFFERENT'} (tolerance {check['tolerance']:g})"]
    return "\n".join(lines)


def _number(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... | head` ends quietly
    try:
        args = parse_arguments(argv)
        output = args.get("format", "table")
        result = convert_request(args)
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str, allow_nan=False) if output == "json" else render_table(result))
    if "verify" in result and result["exact"] and not result["verify"]["passed"]:
        print("error: a rule claimed exact failed its numerical proof; please report this", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
