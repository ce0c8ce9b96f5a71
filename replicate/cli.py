"""`python -m replicate paper=<id>`: the command line. It checks the arguments (one line for each
mistake), lets Hydra compose conf/, takes the run directory's lock and calls the replication pipeline
(replicate.replication.replicate_paper); a stop signal, a user error or a full disk is one line.

    python -m replicate                      # the embedded default (MNIST-1D), no download
    python -m replicate paper=mnist1d_cnn seeds=3 train.steps=500 logger=none
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from replicate.checkpoint import Interrupted, describe_interruption, describe_write_error, install_stop_handlers, run_lock
from replicate.config import register_schema
from replicate.errors import ConfigError
from replicate.hydra_setup import available_papers, conf_dir, config_dirs, register_resolvers


# the only joblib backend settings hydra/launcher=parallel accepts: each job in a worker process of its own
PROCESS_BACKEND = ("hydra.launcher.backend=loky", "hydra.launcher.prefer=processes", "hydra.launcher.require=null")


def fail(message: str, code: int = 2) -> None:
    from replicate.parallel import JOB_LABEL

    print(f"{JOB_LABEL['text']}error: {message}", file=sys.stderr)
    sys.exit(code)


def check_arguments(argv: list[str]) -> None:
    """Mistakes Hydra would answer with a traceback or a long message, answered in one line first:
    an unknown paper id, a paper file that is not valid YAML (or states a key twice), an output directory
    that cannot be written, a misspelt setting (with or without a leading +)."""
    import itertools
    import re

    import yaml

    UniqueKeyLoader = _unique_key_loader()
    papers = ["mnist1d_mlp"]  # the default in conf/config.yaml
    for argument in argv:
        if argument.startswith("paper="):
            names = argument.split("=", 1)[1]
            papers = [] if names.startswith(("glob(", "choice(", "range(")) else names.split(",")
    for name in papers:
        files = [directory / "paper" / f"{name}.yaml" for directory in config_dirs(argv)]
        existing = [path for path in files if path.exists()]
        if not existing:
            fail(f"unknown paper {name!r}; available: {', '.join(available_papers(argv))}")
        try:
            content = yaml.load(existing[-1].read_text(), Loader=UniqueKeyLoader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            fail(f"{existing[-1]} is not valid YAML{where}: {problem}")
        if content is not None and not isinstance(content, dict):
            fail(f"{existing[-1]} holds a YAML {type(content).__name__}, not a mapping of settings; "
                 "start from a file in conf/paper/")
        # Hydra reads the header from the comment lines that open the file; without it Hydra nests the file
        # under `paper.` and answers "Key 'paper' not in 'PaperConfig'"
        header = itertools.takewhile(lambda line: line.startswith("#") or not line.strip(),
                                     existing[-1].read_text().splitlines())
        if content and not any(re.fullmatch(r"#\s*@package\s+_global_\s*", line) for line in header):
            fail(f"{existing[-1]} lacks the header `# @package _global_`: add it as the first line, so that its paper:, "
                 "model:, data:, optimizer:, conventions: and train: set the top-level keys (docs/adding-a-paper.md)")
    for argument in argv:
        if argument.startswith("hydra.run.dir="):
            check_writable(Path(argument.split("=", 1)[1]))
        if argument.lstrip("+~") == "hydra/launcher=joblib":
            fail("hydra/launcher=joblib would let a stop signal or one job's error kill the other jobs mid-step; "
                 "use hydra/launcher=parallel (the same launcher and keys, with replicate's stop handling)")
        if argument.startswith(("hydra.launcher.backend=", "hydra.launcher.prefer=", "hydra.launcher.require=")) \
                and "hydra/launcher=parallel" in argv and argument not in PROCESS_BACKEND:
            fail(f"{argument}: hydra/launcher=parallel runs each job in its own process (backend=loky), as a job's "
                 "threads, signals and numerics are per process; leave hydra.launcher.backend, prefer and require as they are")
    check_override_keys(argv)


def check_override_keys(argv: list[str]) -> None:
    """A misspelt key is one line naming the allowed ones, with or without a leading + (Hydra's own
    message suggests the +, which would add the misspelt key and run the defaults); a value of the wrong
    type (train.steps=abc, seeds=2.5) is one line too, checked by OmegaConf against the schema as Hydra would."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from replicate.config import Config, allowed_keys, unknown_override

    schema = None
    for argument in argv:
        key, separator, _ = argument.partition("=")
        key = key.lstrip("+~")
        if not separator or argument.startswith("-") or "/" in key or key.split(".")[0] == "hydra" or key == "paper":
            continue  # options, config groups (hydra/launcher=slurm), Hydra's own settings, the paper group
        unknown = unknown_override(key)
        if unknown is not None:
            parent = unknown.rpartition(".")[0]
            fail(f"unknown setting {unknown}; allowed under {parent or 'the top level'}: "
                 f"{', '.join(allowed_keys(parent))}; correct the name (a leading + does not make a misspelt key valid)")
        try:
            override = OverridesParser.create().parse_overrides([argument])[0]
            if override.is_delete() or override.is_sweep_override():
                continue
            schema = schema if schema is not None else OmegaConf.structured(Config)
            OmegaConf.update(schema, key, override.value(), merge=True)
        except (HydraException, OmegaConfBaseException) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            fail(f"{argument}: {detail}; give {key} a value of its type (see --cfg job for the current values)")


def _unique_key_loader():
    """PyYAML's safe loader, refusing a mapping that states a key twice (OmegaConf refuses it too, with a
    traceback; plain PyYAML would silently keep the last)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, (str, int, float, bool)):
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, Loader.construct_mapping)
    return Loader


def check_writable(directory: Path) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 probes; every rank writing one file would race
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".replicate-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        fail(f"cannot write the output directory {directory} ({error.strerror}); choose another with hydra.run.dir=...")


def prepare_process(argv: list[str]) -> None:
    """What must be set before torch loads, for every command that trains in its own process: OpenMP
    workers that wait passively (their runtime reads the policy once) and runtime.numerics's pins (each
    library reads its dispatch setting once)."""
    from replicate.cpu import wait_passively

    wait_passively()
    pin_numerics(argv)


def pin_numerics(argv: list[str]) -> None:
    """runtime.numerics: its pins enter the environment before torch loads, as each library reads them
    once, when it loads (replicate.numerics); the report records what took effect."""
    from replicate.numerics import DEFAULT_MODE, apply_numerics, check_mode, requested_mode

    mode = requested_mode(argv) or DEFAULT_MODE
    problem = check_mode(mode)
    if problem:
        fail(problem)
    for problem in apply_numerics(mode):
        print(f"warning: {problem}", file=sys.stderr)


def main() -> None:
    from replicate.parallel import JobsEnded, mark_launching_process

    prepare_process(sys.argv[1:])  # first: checking the arguments may import torch
    mark_launching_process()
    install_stop_handlers()
    try:
        check_arguments(sys.argv[1:])
        run_hydra()
    except Interrupted as stop:
        print(describe_interruption(stop), file=sys.stderr)
        sys.exit(128 + stop.signal_number)
    except JobsEnded as ended:  # hydra/launcher=parallel: each such job has printed its own line
        print(ended.message, file=sys.stderr)
        sys.exit(ended.code)


def run_hydra() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from replicate.parallel import JobsEnded, register_launcher
    from replicate.replication import end_distributed, keep_out_of_collector, replicate_paper

    register_schema()
    register_resolvers()
    register_launcher()

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
    def run(cfg) -> int | None:
        from replicate.parallel import in_worker, run_in_worker

        if in_worker():  # hydra/launcher=parallel: the job's ending is returned to the launcher, never raised
            return run_in_worker(f"#{HydraConfig.get().job.num} {cfg.paper.id}", lambda: replicate_job(cfg))
        try:
            replicate_job(cfg)
        except Interrupted as stop:
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                raise
            # a multirun's sweep directory is new for every command (its default holds the time): name it
            raise JobsEnded(describe_interruption(stop, advice=f"; rerun the same command with "
                                                             f"hydra.sweep.dir={HydraConfig.get().sweep.dir} to resume"),
                            128 + stop.signal_number) from None
        return None

    def replicate_job(cfg) -> None:
        try:
            hydra_config = HydraConfig.get()
            import torch  # noqa: F401  (imported before the freeze below)

            keep_out_of_collector(once=True)
            run_dir = Path(hydra_config.runtime.output_dir)
            # under torchrun, rank 0 holds the directory and writes; the other ranks only read it
            with run_lock(run_dir) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext():
                if os.environ.get("RANK", "0") == "0":
                    save_hydra_files(cfg, hydra_config, run_dir)
                replicate_paper(cfg, run_dir, list(hydra_config.overrides.task))
        except ConfigError as error:
            fail(str(error))
        except Interrupted:
            raise
        except OSError as error:
            fail(describe_write_error(error), code=1)
        except (MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            fail("out of memory while training (" + (str(error).splitlines() or ["MemoryError"])[0][:120] + "); "
                 "reduce model.hidden_size or model.channels, seeds, or train.batch_size", code=1)

    run()
    end_distributed()
    keep_out_of_collector()  # and out of the collector's last pass at interpreter exit


def save_hydra_files(cfg, hydra_config, run_dir: Path) -> None:
    """.hydra/config.yaml, hydra.yaml and overrides.yaml, as Hydra writes them, but only once this run
    holds the directory (conf/config.yaml sets hydra.output_subdir to null so that Hydra does not write
    them before the lock: a refused run would overwrite the settings of the run that holds it)."""
    from omegaconf import OmegaConf, open_dict

    from replicate.report import write_atomically

    hydra_copy = OmegaConf.create({"hydra": OmegaConf.to_container(hydra_config)})
    with open_dict(hydra_copy):
        hydra_copy.hydra.output_subdir = ".hydra"
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_copy), ("overrides.yaml", hydra_config.overrides.task)):
        write_atomically(run_dir / ".hydra" / name, OmegaConf.to_yaml(node))


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    text = str(error)
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text
            or "out of memory" in text)
