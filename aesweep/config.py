"""Config plumbing: the resolvers the config tree uses and the up-front validation of every
setting a user can type, so that mistakes fail in a second with one clear line, not deep
inside torch after the data has loaded."""

from __future__ import annotations

import math
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "identity")
OUTPUTS = ("sigmoid", "identity")
LOSSES = ("mse", "bce", "l1")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "bf16-mixed", "bf16-true", "16-true")


class ConfigError(ValueError):
    """A user's setting is invalid; the message is the one line we print."""


def register_resolvers() -> None:
    """`aesweep_uid`: a random suffix that keeps run and sweep folders started in the same
    second apart. Cached, so every job of one sweep resolves the same folder."""
    if not OmegaConf.has_resolver("aesweep_uid"):
        OmegaConf.register_new_resolver("aesweep_uid", lambda: secrets.token_hex(3), use_cache=True)


def input_dim(cfg: DictConfig) -> int:
    """Pixels per image, from the data config's declared image shape."""
    return math.prod(int(s) for s in cfg.data.image_shape)


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={_show(value)} is invalid: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value)
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(key: str, value: Any, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        _fail(key, value, f"must be an integer {span}")


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, value, f"must be one of {', '.join(allowed)}")


def _check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(key, value, "must be true or false")


def validate_dims(key: str, dims: Any, d: int) -> list[int]:
    """`sweep.dims`: a non-empty list of distinct bottleneck sizes in [1, d]."""
    if not isinstance(dims, ListConfig | list) or len(dims) == 0:
        _fail(key, dims, f"must be a non-empty list of integers in [1, {d}], e.g. [64,8,2]")
    for k in dims:
        if not _is_int(k) or not 1 <= k <= d:
            _fail(key, dims, f"every entry must be an integer in [1, {d}]; got {_show(k)}")
    if len(set(dims)) != len(dims):
        _fail(key, dims, "entries must be distinct")
    return [int(k) for k in dims]


def validate(cfg: DictConfig) -> None:
    """Check every user-facing setting of one job's config; raise ConfigError on the first
    bad one. Pure: reads nothing but the config and the machine's devices."""
    data, model, opt, trainer = cfg.data, cfg.model, cfg.optimizer, cfg.trainer
    shape = data.image_shape
    if not isinstance(shape, ListConfig) or not all(_is_int(s) and s > 0 for s in shape):
        _fail("data.image_shape", shape, "must be a list of positive integers, e.g. [1,28,28]")
    d = input_dim(cfg)

    _check_int("dim_z", cfg.dim_z, 1, d)
    _check_int("seed", cfg.seed, 0)
    validate_dims("sweep.dims", cfg.sweep.dims, d)

    hidden = model.hidden
    if not isinstance(hidden, ListConfig) or not all(_is_int(h) and h > 0 for h in hidden):
        _fail("model.hidden", hidden, "must be a list of positive integers, e.g. [256,64] or []")
    _check_choice("model.activation", model.activation, ACTIVATIONS)
    _check_choice("model.output", model.output, OUTPUTS)
    _check_bool("model.center", model.center)
    if model.center and model.output != "identity":
        _fail("model.center", True, "needs model.output=identity (the mean is added back)")

    _check_choice("loss.name", cfg.loss.name, LOSSES)
    if cfg.loss.name == "bce" and model.output != "sigmoid":
        _fail("loss", "bce", f"needs model.output=sigmoid; got model.output={model.output}")

    if not _is_number(opt.get("lr")) or opt.lr <= 0:
        _fail("optimizer.lr", opt.get("lr"), "must be a number > 0, e.g. 1e-3")
    if "weight_decay" in opt and (not _is_number(opt.weight_decay) or opt.weight_decay < 0):
        _fail("optimizer.weight_decay", opt.weight_decay, "must be a number >= 0")
    if "momentum" in opt and (not _is_number(opt.momentum) or not 0 <= opt.momentum < 1):
        _fail("optimizer.momentum", opt.momentum, "must be a number in [0, 1)")

    if data.subset is not None:
        _check_int("data.subset", data.subset, 1)
    _check_int("data.batch_size", data.batch_size, 1)
    _check_int("data.n_val", data.n_val, 1)
    if "n_test" in data:
        _check_int("data.n_test", data.n_test, 1)
    if "download" in data:
        _check_bool("data.download", data.download)
    _check_data_root(data)

    _validate_trainer(trainer)
    if cfg.threads is not None:
        _check_int("threads", cfg.threads, 1)
    if not _is_number(cfg.checkpoint_every_s) or cfg.checkpoint_every_s <= 0:
        _fail("checkpoint_every_s", cfg.checkpoint_every_s, "must be a number of seconds > 0")
    if cfg.scheduler is not None and "_target_" not in cfg.scheduler:
        _fail("scheduler", cfg.scheduler, "must be null or a config with _target_ (and _partial_)")
    if cfg.ckpt_path is not None and not Path(str(cfg.ckpt_path)).is_file():
        _fail("ckpt_path", cfg.ckpt_path, "must be an existing checkpoint file")


def _check_data_root(data: DictConfig) -> None:
    """data.root is a folder, and offline torchvision data are already in it: say which
    files go where."""
    from aesweep.data import TORCHVISION_FILES, data_root, missing_files_message, missing_idx_files

    root = data_root(data)
    if root.exists() and not root.is_dir():
        _fail("data.root", data.root, "must be a folder (this path is a file)")
    if data.name in TORCHVISION_FILES and not data.get("download", False):
        missing = missing_idx_files(data.name, root)
        if missing:
            raise ConfigError(missing_files_message(data.name, root, missing))


def _validate_trainer(trainer: DictConfig) -> None:
    epochs = trainer.get("max_epochs")
    if not _is_int(epochs) or epochs < 1:
        _fail("trainer.max_epochs", epochs, "must be an integer >= 1")
    _check_choice("trainer.accelerator", trainer.get("accelerator"), ACCELERATORS)
    devices = trainer.get("devices")
    ok = devices == "auto" or (_is_int(devices) and (devices >= 1 or devices == -1))
    if not ok and not (isinstance(devices, ListConfig) and all(_is_int(i) for i in devices)):
        _fail("trainer.devices", devices, "must be auto, -1, a positive integer or a list of ids")
    _check_choice("trainer.precision", str(trainer.get("precision")), PRECISIONS)
    if trainer.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail(
                "trainer.accelerator",
                trainer.accelerator,
                "no CUDA GPU is visible here; use auto or cpu",
            )
    if trainer.accelerator == "mps":
        import torch

        if not torch.backends.mps.is_available():
            _fail("trainer.accelerator", "mps", "MPS is not available here; use auto or cpu")
    known = _trainer_arguments()
    for key in trainer:
        if key != "_target_" and key not in known:
            _fail(f"trainer.{key}", trainer[key], "is not a pytorch_lightning.Trainer argument")


def _trainer_arguments() -> set[str]:
    import inspect

    from pytorch_lightning import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def check_writable(key: str, folder: str) -> None:
    """Fail before training when the output folder cannot be created: try it for real in
    the nearest existing parent (permission bits alone mislead root)."""
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
