"""`aesweep <command> [overrides]`: dispatch to Hydra apps, after a preflight that composes
every job's config and validates it, so a typo fails in a second with one line and no job
starts. Heavy imports (torch, Lightning) happen only once a command really runs.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import sys
from pathlib import Path
from typing import Any

from aesweep import __version__, config
from aesweep.config import ConfigError, show
from aesweep.config import override_key as _key
from aesweep.lock import lock_folder, unlock_all

USAGE = """\
usage: aesweep <command> [key=value ...]

Train undercomplete autoencoders across bottleneck sizes (Hydra configs, Lightning training).

commands:
  train [overrides]     train one autoencoder, e.g. aesweep train dim_z=32
  train -m [overrides]  a Hydra multirun, e.g. aesweep train -m dim_z=64,8,2 optimizer=adam,sgd
  sweep [overrides]     train every dim_z in sweep.dims, then write the sweep report
                        (aesweep sweep resume=DIR finishes an interrupted sweep)
  report DIR            rebuild the report of a finished or partial sweep folder
  pca [overrides]       closed-form PCA error for every k on the same data, in seconds
  report DIR DIR ...    compare sweeps: one plot and one table (--out DIR, default
                        outputs/compare/<timestamp>)
  encode RUN_DIR [split=test|train|val]
                        write a split's codes as RUN_DIR/codes_<split>.npz

options:
  -h, --help            this help; aesweep <command> --help for the command's settings
  --version             print the version

Outputs go to outputs/runs/ and outputs/sweeps/. See README.md for more."""

CONFIG_MODULE = "aesweep.configs"
COMMANDS = ("train", "sweep", "report", "pca", "encode")
HELP_HEADERS = {  # `aesweep <command> --help` prints Hydra's app help under this line
    "sweep": "aesweep sweep: train every dim_z in sweep.dims (a Hydra multirun), then write "
    "loss_vs_dim.csv/.png, reconstructions.png and report.md; resume=DIR finishes a sweep",
    "pca": "aesweep pca: closed-form PCA error for every k on the configured data (pca_vs_dim.csv)",
}


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes exit 2 with one line on stderr, no traceback."""
    try:
        dispatch(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"aesweep: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("aesweep: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # e.g. `aesweep train --help | head`: the reader left, fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    finally:
        unlock_all()  # the command's folders are free again (in-process callers go on)


def dispatch(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("-V", "--version"):
        print(f"aesweep {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        if os.environ.get("LOCAL_RANK"):
            # Lightning's DDP re-launches sys.argv[0] for ranks > 0 with the parent's Hydra
            # arguments and run folder, but without our subcommand: it is a train job.
            return run_hydra("aesweep.train:run_job", argv)
        raise ConfigError(f"command {command!r} is unknown: must be one of {', '.join(COMMANDS)}")
    if command == "report":
        return report_command(rest)
    if command == "encode":
        return encode_command(rest)
    if command == "pca":
        return run_hydra("aesweep.pca:run_pca", prepare(rest, job_name="pca"))
    if command == "sweep":
        rest = sweep_arguments(rest)
    return run_hydra("aesweep.train:run_job", prepare(rest, job_name="train"))


def report_command(rest: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="aesweep report",
        description="Rebuild a sweep's report; with several sweep folders, compare them.",
    )
    parser.add_argument("sweep_dir", nargs="+", help="sweep folders, e.g. outputs/sweeps/<...>")
    parser.add_argument("--out", help="where a comparison goes (default outputs/compare/<time>)")
    args = parser.parse_args(rest)
    sweep_dirs = [Path(d) for d in args.sweep_dir]
    for sweep_dir in sweep_dirs:
        if not sweep_dir.is_dir() or not any(sweep_dir.glob("*/result.json")):
            raise ConfigError(
                f"DIR={sweep_dir} is invalid: must be a sweep folder holding */result.json"
            )
    from aesweep.report import compare_and_exit_code, report_and_exit_code

    if len(sweep_dirs) == 1 and args.out is None:
        raise SystemExit(report_and_exit_code(sweep_dirs[0]))
    raise SystemExit(compare_and_exit_code(sweep_dirs, Path(args.out) if args.out else None))


def run_hydra(task_path: str, args: list[str]) -> None:
    """Run `module:function` as the Hydra app over the packaged config tree, keeping
    sys.argv[0] (Lightning's DDP re-launches it)."""
    import hydra

    config.register()
    register_launcher()
    module, name = task_path.split(":")
    task = getattr(importlib.import_module(module), name)
    sys.argv = [sys.argv[0], *args]
    hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")(
        task
    )()


def register_launcher() -> None:
    """aesweep's launchers, by Hydra's own API (its plugin scan does not see packages of an
    editable install): hydra/launcher=basic (the default) becomes aesweep's, which ends a
    sweep whose next job cannot start in one line; hydra/launcher=submitit_slurm."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    from hydra_plugins.aesweep_submitit.basic import BasicLauncher

    plugins = Plugins.instance()  # scans Hydra's own plugins first: our "basic" replaces its
    plugins.register(BasicLauncher)
    target = f"{BasicLauncher.__module__}.{BasicLauncher.__name__}"
    ConfigStore.instance().store(
        group="hydra/launcher", name="basic", node={"_target_": target}, provider="aesweep"
    )
    try:
        from hydra_plugins.aesweep_submitit.launcher import SlurmLauncher
    except ImportError:  # no `launchers` extra
        return
    plugins.register(SlurmLauncher)


def hydra_arguments(rest: list[str]) -> Any:
    """Hydra's own command-line parser (private; pinned by tests/test_hydra_contract.py), so
    that flags (-m, --cfg, --config-dir, ...) mean exactly what they mean to @hydra.main;
    then the group choices Hydra itself would get wrong (check_group_choices)."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(rest)
    check_group_choices(args.overrides)
    return args


def prepare(rest: list[str], job_name: str) -> list[str]:
    """Validate every job's config and return Hydra's argv, naming multirun job folders by
    the swept settings only (dim_z=32, or dim_z=32,optimizer=sgd)."""
    args = hydra_arguments(rest)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return rest + _help_header(job_name, args)  # Hydra explains itself; nothing runs
    overrides = list(args.overrides)
    resume = _value(overrides, "resume")
    if resume is not None and not args.multirun:
        overrides = resume_overrides(overrides, resume, sweep=False)
    extra = [f"hydra.job.name={job_name}"]
    if job_name == "pca" and _value(overrides, "hydra.run.dir") is None:
        extra.append("hydra.run.dir=outputs/pca/${now:%Y-%m-%d_%H-%M-%S}-${aesweep_uid:}")
    jobs, swept = expand(overrides, args)
    if args.multirun:  # each job's config names its own folder, numbered as the sweeper does
        extra += dirname_overrides(overrides, swept)
        jobs = [[*job, f"hydra.job.num={i}"] for i, job in enumerate(jobs)]
    configs = [compose(job + extra, args) for job in jobs]
    for cfg in configs:
        validate_job(cfg, job_name, multirun=args.multirun)
    extra.append(lock_output(configs[0], resume, multirun=args.multirun))
    if args.multirun:
        extra.append(f"hydra.callbacks.sweep_report.n_jobs={len(jobs)}")  # progress lines
    flags = [a for a in rest if a not in args.overrides]
    return [*flags, *(absolute_data_path(o) for o in overrides), *extra]


DERIVED_GROUPS = ("recipe_for_data", "optimizer_for_data")  # train.yaml picks them


def check_group_choices(overrides: list[str]) -> None:
    """Group choices Hydra would answer with a traceback (model=null: a group takes an
    option) or silently ignore (a group train.yaml derives from the recipe and the data)."""
    from importlib.resources import files

    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in DERIVED_GROUPS:
            raise ConfigError(
                f"{override} is invalid: {key} follows the recipe, optimizer and data chosen "
                f"(configs/train.yaml); set its settings instead, e.g. model.input_noise=0.1"
            )
        if value != "null" or "." in key:
            continue
        if key.startswith("hydra/"):
            raise ConfigError(
                f"{override} is invalid: must be one of the options --hydra-help lists"
            )
        folder = files(CONFIG_MODULE).joinpath(key)
        if key.isidentifier() and folder.is_dir():
            options = sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))
            raise ConfigError(f"{override} is invalid: must be one of {', '.join(options)}")


def absolute_data_path(override: str) -> str:
    """A relative `data.path=`/`data.root=` made absolute after validation (messages show what
    was typed), so the saved config finds the data from any folder (encode, load, resume)."""
    key, _, value = override.partition("=")
    if _key(override) not in ("data.path", "data.root") or value in ("", "null"):
        return override
    if value.startswith(("/", "~", "$")) or "://" in value:
        return override
    return f"{key}={Path(value).absolute()}"


def _help_header(command: str, args: Any) -> list[str]:
    if not args.help or command not in HELP_HEADERS or _value(args.overrides, "hydra.help.header"):
        return []
    return [f"hydra.help.header='{HELP_HEADERS[command]}'"]


def _value(overrides: list[str], key: str) -> str | None:
    return next((o.partition("=")[2] for o in overrides if _key(o) == key), None)


def _is_hydra_key(key: str) -> bool:
    return key.startswith(("hydra.", "hydra/"))


def expand(overrides: list[str], args: Any) -> tuple[list[list[str]], list[str]]:
    """Every job's overrides as the basic sweeper would launch them (an experiment's
    hydra.sweeper.params included) and the swept keys; only the fixed ones for another
    sweeper (Optuna, ...), which picks its own values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = _parse(parser, overrides)
    if not args.multirun:
        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(f"{sweeps[0]} is invalid: sweeping a setting needs -m (multirun)")
        return [overrides], []
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeper = compose(fixed, args).hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return [fixed], []
    params = sweeper.get("params") or {}
    parsed = _parse(parser, [f"{k}={v}" for k, v in params.items()]) + parsed
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    swept = [o.key_or_group for o in parsed if o.is_sweep_override()]
    return [list(job) for job in itertools.product(*choices)], swept


def _parse(parser: Any, overrides: list[str]) -> list[Any]:
    from hydra.errors import OverrideParseException

    parsed = []
    for override in overrides:
        try:
            parsed += parser.parse_overrides([override])
        except OverrideParseException as e:
            reason = " ".join(str(e).split()).split(" See https")[0]
            raise ConfigError(
                f"{override} is invalid: Hydra cannot parse it ({reason}); quote values with "
                f"special characters, e.g. 'key=\"a b\"'"
            ) from None
    return parsed


def compose(overrides: list[str], args: Any) -> Any:
    """One job's config, as Hydra would build it; composition errors become ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import ConfigCompositionException, MissingConfigException

    config.register()
    extra = (
        [f"hydra.searchpath=[file://{Path(args.config_dir).absolute()}]"] if args.config_dir else []
    )
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(
                args.config_name or "train", overrides + extra, return_hydra_config=True
            )
    except MissingConfigException as e:
        group, _, choice = (e.missing_cfg_file or "").rpartition("/")
        if not group:
            raise ConfigError(" ".join(str(e).split("\n")[0].split())) from None
        hint = ""
        if group == "hydra/launcher":
            hint = " (joblib and submitit_* come with: pip install 'aesweep[launchers]')"
        raise ConfigError(
            f"{group}={choice} is invalid: must be one of {', '.join(e.options or [])}{hint}"
        ) from None
    except ConfigCompositionException as e:
        raise ConfigError(_composition_error(e, overrides)) from None


def _composition_error(e: Exception, overrides: list[str]) -> str:
    """One line from the schema's own error (OmegaConf names the key): the override that
    set it, and what the schema allows there."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = e.__cause__
    if not isinstance(cause, OmegaConfBaseException) or not cause.full_key:
        reason = f" ({' '.join(str(cause).split())})" if cause else ""
        return " ".join(str(e).split()) + reason
    key = cause.full_key.split("[")[0]
    given = [o for o in overrides if _key(o) == key or _key(o).startswith(key + ".")]
    shown = given[-1].lstrip("+~") if given else key
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        name, _, value = shown.partition("=")
        return (
            f"{shown} is invalid: there is no such setting (check the spelling with "
            f"aesweep train --cfg job; add a new key with +{name}={value})"
        )
    return f"{shown} is invalid: must be {config.expected(key)}"


def validate_job(cfg: Any, job_name: str, multirun: bool) -> None:
    from aesweep.data import check_available

    facts = check_available(cfg.data)
    if job_name == "pca":  # the curve covers every k: dim_z plays no part
        cfg.dim_z = min(cfg.dim_z, facts.input_dim)
    config.validate(cfg, facts.input_dim, facts.unit_range)
    config.validate_launcher(cfg.hydra.launcher)
    if not config.is_remote(cfg.hydra.launcher):  # remote jobs check the machine they land on
        config.check_machine(cfg.trainer)
    from aesweep.loggers import check_loggers  # a chosen logger's package is there

    check_loggers(cfg)
    resume = cfg.get("resume")
    if resume is not None and not Path(str(resume)).is_dir():
        raise ConfigError(f"resume={resume} is invalid: must be an existing run or sweep folder")
    check_continued_checkpoint(cfg, multirun)
    key, folder, marker, command = (
        ("hydra.sweep.dir", cfg.hydra.sweep.dir, "multirun.yaml", "aesweep sweep")
        if multirun
        else ("hydra.run.dir", cfg.hydra.run.dir, "result.json", "aesweep train")
    )
    config.check_writable(key, folder)
    if resume is None and (Path(folder) / marker).exists():
        raise ConfigError(  # a new run would overwrite finished work
            f"{key}={folder} is invalid: it already holds a {'sweep' if multirun else 'run'}; "
            f"continue it with {command} resume={folder}, or choose a new folder"
        )


def lock_output(cfg: Any, resume: str | None, multirun: bool) -> str:
    """One writer per folder: hold the sweep or run folder (a resumed run's sweep too) until
    the command ends, refusing one another live process writes. Returns the override that
    pins the folder for Hydra (its default name, ${now:} and a random id, resolves anew)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir))
    setting = f"resume={resume}" if resume is not None else f"{key}={folder}"
    if not multirun and (folder.parent / "multirun.yaml").is_file():
        lock_folder(folder.parent, setting)
    lock_folder(folder, setting)
    return f"{key}='{str(folder).replace(chr(39), chr(92) + chr(39))}'"


def check_continued_checkpoint(cfg: Any, multirun: bool) -> None:
    """ckpt_path=FILE or resume=DIR: a checkpoint that holds more than data, is damaged,
    belongs to another model or (resume) would continue with another recipe is refused
    before any job starts; a finished job that resume keeps as it is is not read."""
    from aesweep import checkpoints

    where = cfg.hydra.sweep if multirun else cfg.hydra.run  # the job's folder: resume reads it
    folder = Path(str(where.dir), str(where.subdir) if multirun else "")
    path = checkpoints.checkpoint_to_continue(cfg, folder)
    previous = config.read_result(folder) if cfg.resume is not None else None
    if path is None or config.kept_as_finished(previous, cfg.hydra.overrides.task):
        return
    checkpoints.check_continuation(path, checkpoints.shapes_of(cfg), cfg)  # data's: in the job


def dirname_overrides(overrides: list[str], swept: list[str]) -> list[str]:
    """Name job folders by the swept settings (dim_z always): exclude every other override
    from Hydra's override_dirname."""
    task_keys = [k for k in map(_key, overrides) if not _is_hydra_key(k)]
    named = set(swept) | {"dim_z"}
    excluded = sorted({k for k in task_keys if k not in named} | set(config.NOT_JOB_SETTINGS))
    if not any(k in named for k in task_keys) and not swept:
        return ["hydra.sweep.subdir=job${hydra.job.num}"]
    return [f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]"]


def sweep_arguments(rest: list[str]) -> list[str]:
    """`aesweep sweep` = a multirun over sweep.dims (resuming: the folder's own overrides)."""
    args = hydra_arguments(rest)
    overrides = list(args.overrides)
    flags = [a for a in rest if a not in args.overrides and a not in ("-m", "--multirun")]
    if args.help or args.hydra_help or args.cfg or args.info:
        return rest + _help_header("sweep", args)
    resume = _value(overrides, "resume")
    if resume is not None:
        return ["-m", *flags, *resume_overrides(overrides, resume, sweep=True)]
    from aesweep.data import check_available

    args.multirun = True
    cfg = compose(expand(overrides, args)[0][0], args)
    if _value(overrides, "dim_z") is None:
        d = check_available(cfg.data).input_dim
        dims = config.default_dims(d) if cfg.sweep.dims is None else cfg.sweep.dims
        dims = config.validate_dims("sweep.dims", dims, d)
        overrides.append("dim_z=" + ",".join(str(k) for k in dims))
    seeds = cfg.sweep.seeds
    if seeds is not None and _value(overrides, "seed") is None:
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ConfigError(f"sweep.seeds={show(seeds)} is invalid: must be null or a list "
                              f"of distinct integers >= 0, e.g. [0,1,2]")  # fmt: skip
        overrides.append("seed=" + ",".join(str(s) for s in seeds))
    return ["-m", *flags, *overrides]


def resume_overrides(overrides: list[str], resume: str, sweep: bool) -> list[str]:
    """The folder's own overrides plus resume=DIR, into the same folder: finished jobs are
    kept, the others continue from checkpoints/last.ckpt."""
    folder = Path(resume)
    path = folder / ("multirun.yaml" if sweep else ".hydra/overrides.yaml")
    if not path.is_file():
        kind = "sweep" if sweep else "run"
        raise ConfigError(f"resume={resume} is invalid: no {path.relative_to(folder)} there "
                          f"(not a {kind} folder)")  # fmt: skip
    saved = config.saved_overrides(path)
    task = resumed_task(saved["task"], overrides)
    hydra = [o for o in overrides if _is_hydra_key(_key(o))]
    if sweep and not hydra:
        hydra = [o for o in saved["hydra"] if not o.startswith(config.GENERATED)]
    where = f"hydra.{'sweep' if sweep else 'run'}.dir={folder}"
    return [*task, *hydra, f"resume={folder}", where]


# What a resumed run may change: how long it trains, what it prints and how fast this
# machine runs it, never the model or the data its checkpoint was made with.
RESUMABLE_CHANGES = ("trainer.max_epochs", "trainer.max_steps", "checkpoint_every_s",
                     "trainer.enable_progress_bar", "steps_per_call", "cuda_graph")  # fmt: skip


def resumed_task(saved: list[str], given: list[str]) -> list[str]:
    """The saved task overrides, with the duration settings the user gives on resume."""
    skip = config.NOT_JOB_SETTINGS
    changes = [o for o in given if not _is_hydra_key(_key(o)) and _key(o) not in skip]
    for o in changes:
        if _key(o) not in RESUMABLE_CHANGES:
            raise ConfigError(
                f"{o} is invalid with resume=DIR: a resumed run keeps the model and data its "
                f"checkpoint was made with; only {', '.join(RESUMABLE_CHANGES)} and hydra.* "
                f"may change"
            )
    changed = {_key(o) for o in changes}
    kept = [o for o in saved if _key(o) not in changed and _key(o) not in skip]
    return [*kept, *changes]


def encode_command(rest: list[str]) -> None:
    """`aesweep encode RUN_DIR [split=test|train|val]`: the codes of a split, as .npz."""
    parser = argparse.ArgumentParser(
        prog="aesweep encode",
        description="Write the codes of a run's split as RUN_DIR/codes_<split>.npz "
        "(arrays codes (n, dim_z), labels, index into the split) and print its path.",
    )
    parser.add_argument("run_dir", help="a run folder, e.g. outputs/sweeps/<...>/dim_z=32")
    parser.add_argument("split", nargs="?", default="split=test", help="split=test|train|val")
    args = parser.parse_args(rest)
    key, _, split = args.split.partition("=")
    if key != "split":
        raise ConfigError(f"{args.split} is invalid: must be split=test, split=train or split=val")
    from aesweep.data import DataError
    from aesweep.trained import encode_split

    try:
        print(encode_split(args.run_dir, split))
    except DataError as e:
        raise ConfigError(str(e)) from None
