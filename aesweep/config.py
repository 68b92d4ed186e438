"""The config schema (dataclasses in Hydra's ConfigStore, so OmegaConf rejects `dim_z=abc` at
composition) and the ranges and rules between settings that a schema cannot express, each a
one-line ConfigError. Imports nothing heavy: the CLI's preflight runs it for every job."""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import secrets
import tempfile
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, is_dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

RESULT = "result.json"  # a run's record: metrics, settings and status
FEATURE_ERRORS = "feature_errors.csv"  # a vector run's test error per feature
NOT_JOB_SETTINGS = ("resume", "ckpt_path")  # overrides that say where to continue, not what
# Overrides that aesweep's CLI adds to a user's command (cli.prepare): not part of it.
GENERATED = ("hydra.job.name=", "hydra.job.config.override_dirname.", "hydra.sweep.subdir=",
             "hydra.mode=", "hydra.sweep.dir=", "resume=",
             "hydra.callbacks.sweep_report.n_jobs=")  # fmt: skip


# Each choice list, once: the schema checks them, model.py maps them to torch.
Activation = StrEnum(
    "Activation", ["relu", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "identity"]
)
Output = StrEnum("Output", ["sigmoid", "identity", "clamp"])
Loss = StrEnum("Loss", ["mse", "sse", "bce", "l1"])
ModelKind = StrEnum("ModelKind", ["mlp", "residual"])
Select = StrEnum("Select", ["last", "best"])
Scale = StrEnum("Scale", ["auto", "minmax", "standard", "none"])
UNITS = {"minmax": "values in [0, 1]", "standard": "standardised features",
         "none": "values as stored"}  # what an error sums over, per data.scale  # fmt: skip
MatmulPrecision = StrEnum("MatmulPrecision", ["highest", "high", "medium"])
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# Not 16-true: float16 weights under Adam (eps 1e-8 is 0 in float16) diverge within steps.
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "bf16-mixed", "bf16-true")


@dataclass
class DataConfig:
    name: str = MISSING
    root: str = MISSING
    image_shape: list[int] | None = None  # null: from the data (data=array)
    path: str | None = None  # data=array: a .npy, .npz, .pt or .csv file
    label_column: str | None = None  # data=array, .csv: the column of integer labels
    scale: Scale = Scale.auto  # auto: images to [0, 1], other vectors standardised
    n_val: Any = None  # a count, a fraction of the rows, or null (data=array: 10%)
    n_test: Any = None  # data without an official test split hold one out (count, fraction)
    download: bool = False
    split_seed: int = 0
    subset: int | None = None
    batch_size: int = 128


@dataclass
class ModelConfig:
    kind: ModelKind = ModelKind.mlp  # residual: a PCA path plus MLP branches (model.py)
    hidden: list[int] = field(default_factory=list)
    activation: Activation = Activation.relu
    output: Output = Output.sigmoid
    center: bool = False
    input_noise: float = 0.0  # std of Gaussian noise on the inputs while training
    linear_lr_scale: float = 1.0  # the residual model's PCA path learns at lr x this


@dataclass
class LossConfig:
    name: Loss = Loss.mse


@dataclass
class SweepConfig:
    dims: list[int] | None = None  # null: the data's d and the powers of two below it
    seeds: list[int] | None = None  # several: every dim once per seed (null: `seed` alone)


@dataclass
class TrainConfig:
    """The schema of train.yaml; optimizer, scheduler and trainer stay open (any argument)."""

    dim_z: int = 32
    seed: int = 0
    ckpt_path: str | None = None
    resume: str | None = None
    checkpoint_every_s: float = 10.0
    threads: int | None = None
    steps_per_call: int | None = None  # null: 32 on one CUDA device, else 1
    cuda_graph: bool = True
    select: Select = Select.last  # best: the weights of the best validation (val_mse)
    patience: int | None = None  # stop after this many validations without a better one
    probe: bool = True  # linear probe and 5-NN on the codes, where the data have labels
    matmul_precision: MatmulPrecision = MatmulPrecision.highest
    scheduler: Any = None  # null or a config with _target_ (OmegaConf cannot merge into an
    # Optional[Dict] that is null)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)  # name -> a Lightning logger config


def override_key(override: str) -> str:
    """The key an override sets: `+key=v`, `~key` and `key=v` all name `key`."""
    return override.partition("=")[0].lstrip("+~")


def job_settings(overrides: Any, skip: tuple[str, ...] = NOT_JOB_SETTINGS) -> dict[str, str]:
    """key -> value of the overrides that describe a job (not those in `skip`)."""
    return {
        override_key(o): o.partition("=")[2]
        for o in overrides
        if "=" in o and override_key(o) not in skip
    }


def job_overrides(task: Any) -> list[str]:
    """The overrides that describe a job (result.json's `overrides`)."""
    return [o for o in task if override_key(o) not in NOT_JOB_SETTINGS]


def saved_overrides(path: Path) -> dict[str, list[str]]:
    """The `task` and `hydra` overrides Hydra saved (multirun.yaml, or a run's
    .hydra/overrides.yaml: task only), as typed: `job${hydra.job.num}` stays a string."""
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if isinstance(saved, list):
        return {"task": saved, "hydra": []}
    return {key: list(saved["hydra"]["overrides"][key]) for key in ("task", "hydra")}


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's result.json, None where it has none (or half of one)."""
    try:
        return json.loads((Path(run_dir) / RESULT).read_text())
    except (OSError, ValueError):
        return None


def kept_as_finished(previous: dict[str, Any] | None, task: Any) -> bool:
    """resume=DIR keeps a job that finished (`previous`: its result.json) with these very
    task overrides, and runs it again otherwise (e.g. with a longer trainer.max_epochs)."""
    same = bool(previous) and previous.get("overrides") == job_overrides(task)
    return same and previous.get("status") == "ok"


class ConfigError(ValueError):
    """A user's setting is invalid; the message is the one line we print."""


def register() -> None:
    """The schema, and `aesweep_uid`: a random suffix that keeps folders started in the same
    second apart (cached, so every job of one sweep resolves the same folder)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="aesweep_schema", node=TrainConfig)
    quiet_launcher_schema()
    if not OmegaConf.has_resolver("aesweep_uid"):
        OmegaConf.register_new_resolver("aesweep_uid", lambda: secrets.token_hex(3), use_cache=True)


def quiet_launcher_schema() -> None:
    """Our submitit_slurm.yaml extends submitit's schema of the same name: Hydra 1.3 warns
    that this is deprecated, yet does it, and no other way keeps the name."""
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_slurm' is validated against ConfigStore"
    )


def expected(key: str) -> str:
    """What the schema allows at a dotted key ('model.hidden[2]' included), in words."""
    node: Any = TrainConfig
    for part in key.split("[")[0].split("."):
        hints = typing.get_type_hints(node) if is_dataclass(node) else {}
        if part not in hints:
            return "a valid value"
        node = hints[part]
    return _describe(node)


def _describe(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if type(None) in typing.get_args(tp):
        return f"{_describe(args[0])} or null"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(m.value for m in tp)
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict or is_dataclass(tp):
        return "a config (key: value), with _target_ where it names a class"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


def input_dim(cfg: DictConfig) -> int:
    """Pixels per image, from the data config's declared image shape."""
    if cfg.data.image_shape is None:
        _fail("data.path", cfg.data.path, "must name a .npy, .npz, .pt or .csv file")
    return math.prod(int(s) for s in cfg.data.image_shape)


LECTURE_DIMS = [784, 256, 64, 32, 16, 8, 4, 2, 1]


def default_dims(d: int) -> list[int]:
    """The sizes a sweep runs when sweep.dims is null: d and the powers of two below it;
    the lecture's list for MNIST's d = 784."""
    if d == 784:
        return LECTURE_DIMS
    return [d, *(2**i for i in reversed(range(math.ceil(math.log2(d)))))]


def check_split_size(key: str, value: Any) -> None:
    """data.n_val / data.n_test: null, a count >= 1 or a fraction in (0, 1)."""
    ok = value is None or (_is_int(value) and value >= 1)
    if not ok and not (_is_number(value) and 0 < value < 1):
        _fail(key, value, "must be a count >= 1, a fraction in (0, 1) or null")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={show(value)} is invalid: {allowed}")


def show(value: Any) -> str:
    """A value as a user would type it on the command line."""
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value)
    if isinstance(value, list):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(key: str, value: Any, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        _fail(key, value, f"must be an integer {span}")


def validate_dims(key: str, dims: Any, d: int) -> list[int]:
    """`sweep.dims`: a non-empty list of distinct bottleneck sizes in [1, d]."""
    if not isinstance(dims, ListConfig | list) or len(dims) == 0:
        _fail(key, dims, f"must be a non-empty list of integers in [1, {d}], e.g. [64,8,2]")
    for k in dims:
        if not _is_int(k) or not 1 <= k <= d:
            _fail(key, dims, f"every entry must be an integer in [1, {d}]; got {show(k)}")
    if len(set(dims)) != len(dims):
        _fail(key, dims, "entries must be distinct")
    return [int(k) for k in dims]


# Integer settings with a lower bound the schema's types cannot say (null is allowed).
AT_LEAST = {"seed": 0, "threads": 1, "steps_per_call": 1, "patience": 1, "data.subset": 1,
            "data.batch_size": 1,
            "trainer.max_epochs": 1}  # fmt: skip


def validate(cfg: DictConfig, d: int | None = None, unit_range: bool = True) -> None:
    """Check one job's composed config beyond its types; ConfigError on the first bad
    setting. `d` and `unit_range` come from data.check_available (the data's features, and
    whether they are scaled into [0, 1])."""
    shape = cfg.data.image_shape
    if shape is not None and not all(s > 0 for s in shape):
        _fail("data.image_shape", shape, "must be a list of positive integers")
    d = input_dim(cfg) if d is None else d
    _check_int("dim_z", cfg.dim_z, 1, d)
    if cfg.sweep.dims is not None:
        validate_dims("sweep.dims", cfg.sweep.dims, d)
    check_split_size("data.n_val", cfg.data.n_val)
    check_split_size("data.n_test", cfg.data.n_test)
    for key, low in AT_LEAST.items():
        value = OmegaConf.select(cfg, key)
        if value is not None or key == "trainer.max_epochs":
            _check_int(key, value, low)

    model = cfg.model
    if not all(h > 0 for h in model.hidden):
        _fail("model.hidden", model.hidden, "must be a list of positive integers, e.g. [256,64]")
    if model.input_noise < 0:
        _fail("model.input_noise", model.input_noise, "must be a number >= 0")
    if model.linear_lr_scale <= 0:
        _fail("model.linear_lr_scale", model.linear_lr_scale, "must be a number > 0")
    if model.center and model.output != Output.identity:
        _fail("model.center", True, "needs model.output=identity (the mean is added back)")
    if not unit_range and model.output == Output.sigmoid:
        _fail("model.output", "sigmoid", f"data.scale={cfg.data.scale} puts the data outside "
              f"[0, 1]; use model.output=identity, or data.scale=minmax")  # fmt: skip
    if cfg.loss.name == Loss.bce and model.output != Output.sigmoid:
        _fail("loss", "bce", f"needs model.output=sigmoid; got model.output={model.output}")

    opt = cfg.optimizer
    if not _is_number(opt.get("lr")) or opt.lr <= 0:
        _fail("optimizer.lr", opt.get("lr"), "must be a number > 0, e.g. 1e-3")
    if "weight_decay" in opt and (not _is_number(opt.weight_decay) or opt.weight_decay < 0):
        _fail("optimizer.weight_decay", opt.weight_decay, "must be a number >= 0")
    if "momentum" in opt and (not _is_number(opt.momentum) or not 0 <= opt.momentum < 1):
        _fail("optimizer.momentum", opt.momentum, "must be a number in [0, 1)")

    _validate_trainer(cfg.trainer)
    check_validation_runs(cfg)
    if cfg.checkpoint_every_s <= 0:
        _fail("checkpoint_every_s", cfg.checkpoint_every_s, "must be a number of seconds > 0")
    if cfg.scheduler is not None and not (
        isinstance(cfg.scheduler, DictConfig) and "_target_" in cfg.scheduler
    ):
        _fail("scheduler", cfg.scheduler, "must be null or a config with _target_ (and _partial_)")
    if cfg.ckpt_path is not None and not Path(str(cfg.ckpt_path)).is_file():
        _fail("ckpt_path", cfg.ckpt_path, "must be an existing checkpoint file")


def _validate_trainer(trainer: DictConfig) -> None:
    accelerator = trainer.get("accelerator")
    if accelerator not in ACCELERATORS:
        _fail("trainer.accelerator", accelerator, f"must be one of {', '.join(ACCELERATORS)}")
    devices = trainer.get("devices")
    ok = devices == "auto" or (_is_int(devices) and (devices >= 1 or devices == -1))
    if not ok and not (isinstance(devices, ListConfig) and all(_is_int(i) for i in devices)):
        _fail("trainer.devices", devices, "must be auto, -1, a positive integer or a list of ids")
    precision = trainer.get("precision")
    if str(precision) not in PRECISIONS:
        _fail("trainer.precision", precision, f"must be one of {', '.join(PRECISIONS)}")
    from pytorch_lightning import Trainer

    known = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    for key in trainer:
        if key != "_target_" and key not in known:
            _fail(f"trainer.{key}", trainer[key], "is not a pytorch_lightning.Trainer argument")
        if key in LOOP_RULES and not LOOP_RULES[key][0](trainer[key]):
            _fail(f"trainer.{key}", trainer[key], LOOP_RULES[key][1])


def _fraction_or_count(value: Any, low: int) -> bool:
    """Lightning's batch limits: a fraction of an epoch, or a count of batches >= low."""
    if _is_int(value):
        return value >= low
    return _is_number(value) and (0 < value <= 1 if low else 0 <= value <= 1)


def _duration(value: Any) -> bool:
    return isinstance(value, DictConfig) or bool(re.fullmatch(r"\d+:\d+:\d+:\d+", str(value)))


# Trainer arguments that Lightning checks only once a job runs, or that break it mid-run
# (log_every_n_steps=0: a modulo by zero after the first epoch); null is Lightning's default.
NONE_OR_SOME_BATCHES = (
    lambda v: v is None or _fraction_or_count(v, 0),
    "must be a fraction of the batches in [0, 1] or a number of batches >= 0",
)
LOOP_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "log_every_n_steps": (lambda v: v is None or _is_int(v) and v >= 1, "must be an integer >= 1"),
    "check_val_every_n_epoch": (
        lambda v: v is None or _is_int(v) and v >= 1,
        "must be an integer >= 1, or null to validate every val_check_interval batches",
    ),
    "val_check_interval": (
        lambda v: v is None or _fraction_or_count(v, 1),
        "must be a fraction of an epoch in (0, 1] or a number of batches >= 1",
    ),
    "limit_train_batches": (
        lambda v: v is None or _fraction_or_count(v, 1),
        "must be a fraction of the batches in (0, 1] or a number of batches >= 1",
    ),
    "limit_val_batches": NONE_OR_SOME_BATCHES,
    "overfit_batches": NONE_OR_SOME_BATCHES,
    "max_steps": (lambda v: v == -1 or _is_int(v) and v >= 1, "must be -1 (no limit) or >= 1"),
    "accumulate_grad_batches": (lambda v: _is_int(v) and v >= 1, "must be an integer >= 1"),
    "num_sanity_val_steps": (
        lambda v: v is None or _is_int(v) and v >= -1,
        "must be an integer >= 0, or -1 for every validation batch",
    ),
    "gradient_clip_val": (lambda v: v is None or _is_number(v) and v >= 0, "must be >= 0 or null"),
    "gradient_clip_algorithm": (lambda v: v in (None, "norm", "value"), "must be norm or value"),
    "deterministic": (lambda v: v in (None, True, False, "warn"), "must be true, false or warn"),
    "max_time": (
        lambda v: v is None or _duration(v),
        "must be DD:HH:MM:SS or a config of days, hours, minutes, seconds",
    ),
}


def check_validation_runs(cfg: DictConfig) -> None:
    """select=best chooses among validations: refuse a config that runs none, rather than
    hand back the untrained start."""
    trainer, none = cfg.trainer, None
    every, epochs = trainer.get("check_val_every_n_epoch"), trainer.get("max_epochs")
    if trainer.get("limit_val_batches", 1) == 0:
        none = f"trainer.limit_val_batches={show(trainer.limit_val_batches)}"
    elif _is_int(every) and _is_int(epochs) and every > epochs:
        none = f"trainer.check_val_every_n_epoch={every} > trainer.max_epochs={epochs}"
    if cfg.select == Select.best and none:
        _fail("select", "best", f"needs a validation to choose by, and {none} runs none; "
                                f"use select=last, or validate more often")  # fmt: skip


def check_machine(trainer: DictConfig) -> None:
    """The asked device exists on the machine that runs the job. The CLI checks it before
    local jobs start; a job checks it again where it lands (a cluster node, say)."""
    import socket

    import torch

    where = f"no CUDA GPU is visible on {socket.gethostname()}"
    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        _fail("trainer.accelerator", trainer.accelerator, f"{where}; use auto or cpu")
    if trainer.accelerator == "mps" and not torch.backends.mps.is_available():
        _fail("trainer.accelerator", "mps", "MPS is not available here; use auto or cpu")


def check_writable(key: str, folder: str) -> None:
    """The output folder can be created: tried for real in the nearest existing parent
    (permission bits alone mislead root)."""
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".aesweep-write-test-"))
    except OSError as e:
        _fail(key, folder, f"cannot write there ({existing}: {e.strerror})")


def validate_launcher(launcher: DictConfig) -> None:
    """The launcher settings a user types most (hydra.launcher.*)."""
    target = str(launcher.get("_target_", ""))
    if "joblib" in target:
        n_jobs = launcher.get("n_jobs")
        if not _is_int(n_jobs) or n_jobs == 0 or n_jobs < -1:
            _fail("hydra.launcher.n_jobs", n_jobs, "must be a positive integer or -1 (all cores)")
    if "submitit" in target:
        for key in ("timeout_min", "cpus_per_task", "tasks_per_node", "nodes"):
            if key in launcher and launcher[key] is not None:
                _check_int(f"hydra.launcher.{key}", launcher[key], 1)
        if "max_num_timeout" in launcher:
            _check_int("hydra.launcher.max_num_timeout", launcher.max_num_timeout, 0)


def is_remote(launcher: DictConfig) -> bool:
    """Jobs run on other machines (a SLURM cluster): checks about the machine wait for them."""
    return "SlurmLauncher" in str(launcher.get("_target_", ""))
