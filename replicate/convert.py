"""`python -m replicate.convert`: restate a hyperparameter set in another convention, rule by rule.

    python -m replicate.convert from=sum to=mean batch_size=32 optimizer=sgd lr=0.01 momentum=0.9 verify=true
    python -m replicate.convert paper=sklearn_digits_momentum to=pytorch format=json

Arguments are key=value (values parsed as YAML, as in Hydra overrides). Convention fields can be
overridden per side: `from_eps_placement=inside_sqrt`, `to_momentum_form=lr_inside`. Batch-size scaling
(`new_batch_size=… scaling=linear|sqrt|none`) is a labelled heuristic applied after the conversion.
"""
from __future__ import annotations

import json
import math
import signal
import sys
from dataclasses import asdict, fields

import yaml

from replicate import conventions

CONVENTION_FIELDS = tuple(f.name for f in fields(conventions.Convention) if f.name != "name")
HPARAMS = ("lr", "weight_decay", "momentum", "nesterov", "eps", "beta1", "beta2", "alpha", "rho", "centered",
           "lr_decay", "initial_accumulator_value", "grad_clip", "grad_clip_value")
OPTIONS = ("from", "to", "paper", "optimizer", "batch_size", "seq_len", "world_size", "accum_steps", "format",
           "verify", "steps", "schedule", "new_batch_size", "scaling")


# what a catalog entry fixes: given beside paper=<id>, these would be silently ignored
PAPER_SETS = ("from", "optimizer", "batch_size")


class UsageError(ValueError):
    """A mistyped command: one line, what is wrong and what is allowed."""


def parse_arguments(argv: list[str]) -> dict:
    allowed = set(OPTIONS) | set(HPARAMS) | {f"{side}_{field}" for side in ("from", "to") for field in CONVENTION_FIELDS}
    parsed = {}
    for argument in argv:
        key, separator, text = argument.partition("=")
        if not separator:
            raise UsageError(f"arguments are key=value, got {argument!r}; e.g. from=sum to=mean batch_size=32 optimizer=sgd lr=0.01")
        if key not in allowed:
            raise UsageError(f"unknown argument {key!r}; allowed: {', '.join(OPTIONS + HPARAMS)}, "
                             f"and from_<field>/to_<field> for {', '.join(CONVENTION_FIELDS)}")
        if key in parsed:
            raise UsageError(f"{key}= is given twice ({key}={parsed[key]} and {argument}); give it once")
        value = parse_value(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{argument}: {key} must be a finite number")
        parsed[key] = value
    return parsed


def parse_value(text: str):
    """'5e-4' → 0.0005 (YAML alone would read a string), '32' → 32, 'true' → True, 'sum' → 'sum'."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text) if text else None


def _convention(args: dict, side: str, default=None):
    name = args.get(side, default)
    if name is None:
        raise UsageError(f"{side}=<convention> is required; presets: {', '.join(conventions.PRESETS)}")
    if isinstance(name, conventions.Convention):
        base, name = name, None
    overrides = {field: args[f"{side}_{field}"] for field in CONVENTION_FIELDS if f"{side}_{field}" in args}
    if name is None:
        return conventions.Convention(**{**asdict(base), **overrides})
    return conventions.get_convention(str(name), **overrides)


def _positive_int(args: dict, key: str, default=None):
    value = args.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{key} must be a positive integer, got {value!r}")
    return value


def request_from_paper(args: dict) -> dict:
    """Source convention, optimizer, batch size and native hyperparameters of a catalog entry."""
    import torch

    from replicate.cli import available_papers
    from replicate.config import compose
    from replicate.data import load_dataset
    from replicate.hyperparameters import conventions_fields, has_constant_batch, native_hparams

    if args["paper"] not in available_papers():
        raise UsageError(f"unknown paper {args['paper']!r}; available: {', '.join(available_papers())}")
    cfg = compose([f"paper={args['paper']}"])
    n_train = len(load_dataset(cfg.data, dtype=torch.float32, device="cpu").y_train)
    batch_size = cfg.train.batch_size
    source = conventions.Convention(name=args["paper"], **conventions_fields(cfg))
    return {"source": source, "optimizer": cfg.optimizer.name, "batch_size": batch_size,
            "hparams": native_hparams(cfg.optimizer), "constant_lr": cfg.schedule.name == "constant",
            "constant_batch": has_constant_batch(cfg, n_train)}


def convert_request(args: dict) -> dict:
    """The JSON-ready result of one command line (without printing)."""
    if "paper" in args:
        ignored = [key for key in PAPER_SETS if key in args]
        if ignored:
            raise UsageError(f"paper={args['paper']} sets {', '.join(PAPER_SETS)} itself; drop "
                             f"{' '.join(f'{key}={args[key]}' for key in ignored)}, or drop paper= to convert your own set "
                             "(from_<field>=... overrides one field of the paper's convention)")
        request = request_from_paper(args)
        request["source"] = _convention({**args, "from": request["source"]}, "from")
        for key in HPARAMS:
            if key in args:
                request["hparams"][key] = args[key]
    else:
        for key in ("optimizer", "batch_size", "lr"):
            if key not in args:
                raise UsageError(f"{key}=… is required (or paper=<id>); e.g. from=sum to=mean batch_size=32 optimizer=sgd lr=0.01")
        request = {"source": _convention(args, "from"), "optimizer": args["optimizer"],
                   "batch_size": _positive_int(args, "batch_size"), "constant_lr": args.get("schedule", "constant") == "constant",
                   "constant_batch": True, "hparams": {key: args[key] for key in HPARAMS if key in args}}
    target = _convention(args, "to")
    seq_len = _positive_int(args, "seq_len")
    conversion = conventions.convert(
        request["hparams"], request["source"], target, optimizer=request["optimizer"], batch_size=request["batch_size"],
        seq_len=seq_len, constant_batch=request["constant_batch"], constant_lr=request["constant_lr"],
        world_size=_positive_int(args, "world_size", 1), accum_steps=_positive_int(args, "accum_steps", 1))
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
        if output not in ("table", "json"):
            raise UsageError(f"unknown format {output!r}; allowed: table, json")
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
