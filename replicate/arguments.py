"""The command line of every `python -m replicate.<tool>`: one table of options per tool, read with
Hydra's override grammar (`key=value`, as `python -m replicate` takes them), and `--help` written from
that table: what the tool does, each option with its allowed values and default, and examples.

    COMMAND = Command("replicate.bench", "Measure ...", options=(Option("format", "what to print", "table",
                      choices=("table", "json")),), examples=("python -m replicate.bench format=json",))
    arguments = COMMAND.parse(sys.argv[1:])   # --help: prints the help, exit 0; a mistake: UsageError

`python -m replicate` itself is a Hydra app: its --help is conf/hydra/help/replicate.yaml.
"""
from __future__ import annotations

import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field

HELP_FLAGS = ("-h", "--help")
KINDS = ("text", "choice", "int", "number", "bool", "ints")


class UsageError(ValueError):
    """A mistyped command line: one line, what is wrong and what is allowed (printed as `error: ...`, exit 2)."""


@dataclass(frozen=True)
class Option:
    """One `name=value` a tool takes.

    kind: text (taken as written: names, paths), choice (one of `choices`), int (≥ minimum), number
    (a finite int or float), bool (true or false), ints (one or more integers: 1,4,16 or [1,4,16])."""

    name: str
    help: str
    default: object = None
    choices: tuple = ()
    kind: str = "text"
    minimum: float | None = None
    shown: str = ""  # the allowed values in words where the kind alone says too little: "cpu|cuda|cuda:<index>"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.choices and self.kind != "choice":
            object.__setattr__(self, "kind", "choice")

    def allowed(self) -> str:
        """The allowed values in words, as the help and the errors show them."""
        if self.shown:
            return self.shown
        if self.kind == "choice":
            return "|".join(map(str, self.choices))
        if self.kind == "bool":
            return "true|false"
        if self.kind in ("int", "ints"):
            lowest = "" if self.minimum is None else f" ≥ {self.minimum:g}"
            return f"integer{lowest}" if self.kind == "int" else f"integers{lowest}, comma-separated"
        return "number" if self.kind == "number" else "text"

    def read(self, argument: str, value, text: str):
        """The checked value of `argument` (`value` as Hydra's grammar read it, `text` as written)."""
        if self.kind == "text":
            return text
        if self.kind == "choice":
            if text not in map(str, self.choices):
                raise UsageError(f"unknown {self.name} {text!r}; allowed: {', '.join(map(str, self.choices))}")
            return next(choice for choice in self.choices if str(choice) == text)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise UsageError(f"{self.name} must be true or false, got {text!r}")
            return value
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"{argument}: {self.name} must be a finite number, got {text!r}")
            return value
        values = getattr(value, "list", value) if self.kind == "ints" else [value]
        values = values if isinstance(values, list) else [values]
        lowest = -math.inf if self.minimum is None else self.minimum
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < lowest for v in values):
            what = "a positive integer" if self.minimum == 1 else f"an integer ≥ {self.minimum:g}" \
                if self.minimum is not None else "an integer"
            plural = " (or several, comma-separated)" if self.kind == "ints" else ""
            raise UsageError(f"{self.name} must be {what}{plural}, got {text!r}")
        return values if self.kind == "ints" else values[0]


@dataclass
class Arguments:
    """What a command line said: options (every option, defaults filled in), positionals, and the
    `key=value` overrides a tool passes on to `python -m replicate` (audit, check)."""

    options: dict
    positionals: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    given: set = field(default_factory=set)  # the option names written on the command line

    def __getitem__(self, name: str):
        return self.options[name]


@dataclass(frozen=True)
class Command:
    """One tool: `python -m <name> [positionals] [option=value ...]`."""

    name: str                        # replicate.convert
    summary: str                     # what it does, a paragraph
    options: tuple[Option, ...] = ()
    examples: tuple[str, ...] = ()
    positionals: str = ""            # e.g. "<run dir | report.json | glob> ...": "" takes none
    positional_help: str = ""
    overrides: str = ""              # help for keys passed on to `python -m replicate`; "" refuses other keys
    sections: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (heading, option names) to group a long table

    def usage(self) -> str:
        shown = " ".join(f"[{option.name}={option.allowed() if option.kind in ('choice', 'bool') else '…'}]"
                         for option in self.options[:6])
        more = " [...]" if len(self.options) > 6 or self.overrides else ""
        return f"python -m {self.name} {self.positionals + ' ' if self.positionals else ''}{shown}{more}".rstrip()

    def help_text(self) -> str:
        width = max([len(option.name) for option in self.options] + [12]) + 2
        lines = [f"usage: {self.usage()}", "", *textwrap.wrap(self.summary, 100), ""]
        if self.positionals:
            lines += [f"  {self.positionals}", *(f"      {line}" for line in textwrap.wrap(self.positional_help, 94)), ""]
        grouped = self.sections or (("options", tuple(option.name for option in self.options)),)
        by_name = {option.name: option for option in self.options}
        for heading, names in grouped:
            lines.append(f"{heading[0].upper()}{heading[1:]}:")
            for name in names:
                option = by_name[name]
                default = "" if option.default is None else f" (default: {_shown(option.default)})"
                lines.append(f"  {option.name.ljust(width)}{option.allowed()}{default}")
                lines += [f"  {' ' * width}{line}" for line in textwrap.wrap(option.help, 96 - width)]
            lines.append("")
        if self.overrides:
            lines += ["Other keys:", *(f"  {line}" for line in textwrap.wrap(self.overrides, 98)), ""]
        lines += ["Examples:", *(f"  {example}" for example in self.examples)]
        return "\n".join(lines)

    def parse(self, argv: list[str]) -> Arguments:
        """The command line read and checked. `-h`/`--help` prints the help and exits 0; a mistake raises
        UsageError with one line that names the option, what is allowed and where the help is."""
        if any(argument in HELP_FLAGS for argument in argv):
            print(self.help_text())
            raise SystemExit(0)
        try:
            return self._parse(argv)
        except UsageError as error:
            raise UsageError(f"{error} (python -m {self.name} --help lists every option)") from None

    def _parse(self, argv: list[str]) -> Arguments:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        by_name = {option.name: option for option in self.options}
        arguments = Arguments({option.name: option.default for option in self.options})
        given = {}
        parser = OverridesParser.create()
        for argument in argv:
            key, separator, text = argument.partition("=")
            # a run directory may itself hold "=" (Hydra's override dirnames): an existing path, or a glob
            # whose part before "=" is no option name, is a path
            path_like = os.path.exists(argument) or not re.fullmatch(r"[A-Za-z_+~][\w.]*", key)
            if not separator or (self.positionals and path_like):
                if argument.startswith("-"):
                    raise UsageError(f"unknown flag {argument}; options are key=value")
                if not self.positionals:
                    example = next((line.split(" ", 3)[3] for line in self.examples if line.count(" ") >= 3), "key=value")
                    raise UsageError(f"options are key=value, got {argument!r}; e.g. {example}")
                arguments.positionals.append(argument)
                continue
            try:
                (override,) = parser.parse_overrides([argument])
                value = override.value()
            except HydraException as error:
                if key in by_name and by_name[key].kind == "text":
                    value = text  # a path or a name need not follow the override grammar
                else:
                    raise UsageError(f"cannot read {argument!r}: {str(error).strip().splitlines()[0]}") from None
            option = by_name.get(key)
            if option is None:
                if self.overrides:
                    arguments.overrides.append(argument)
                    continue
                raise UsageError(f"unknown option {key!r}; allowed: {', '.join(by_name)}")
            if key in given:
                raise UsageError(f"{key}= is given twice ({given[key]} and {argument}); give it once")
            given[key] = argument
            text = value if option.kind in ("text", "choice") and isinstance(value, str) else text
            arguments.options[key] = option.read(argument, value, text)
        arguments.given = set(given)
        return arguments


def split_config_dirs(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the directories of `--config-dir <dir>` / `-cd <dir>` / `--config-dir=<dir>`, the other arguments):
    Hydra's option for a directory of the user's own configs, taken as `python -m replicate` takes it."""
    directories, rest, arguments = [], [], iter(argv)
    for argument in arguments:
        if argument in ("--config-dir", "-cd"):
            directory = next(arguments, None)
            if directory is None:
                raise UsageError(f"{argument} needs a directory, e.g. {argument} my_papers")
            directories.append(directory)
        elif argument.startswith("--config-dir="):
            directories.append(argument.split("=", 1)[1])
        else:
            rest.append(argument)
    return directories, rest


def _shown(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def fail(error: Exception, code: int = 2) -> int:
    """Print a mistake as the one line `error: ...` on stderr; returns the exit status."""
    print(f"error: {error}", file=sys.stderr)
    return code
