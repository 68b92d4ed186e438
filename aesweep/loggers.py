"""Experiment loggers from the `logger` config group: each file puts one Lightning logger
under its own key, as in lightning-hydra-template, so `logger=[csv,tensorboard]` merges
them. Optional packages are imported only when their logger is chosen."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from aesweep.config import ConfigError, job_settings

# logger key -> (modules it imports, the aesweep extra that installs them)
REQUIREMENTS = {
    "tensorboard": (("tensorboard",), "tensorboard"),
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), "mlflow"),  # SQLite store: SQLAlchemy
}
SQLITE = "sqlite:///"


def check_loggers(cfg: DictConfig) -> None:
    """Refuse a logger whose package is missing before any job starts: one line naming the
    install command (find_spec looks, it imports nothing)."""
    for key, conf in (cfg.get("logger") or {}).items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ConfigError(f"logger.{key} is invalid: must be a config with _target_")
        modules, extra = REQUIREMENTS.get(str(key), ((), ""))
        missing = [m for m in modules if find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"logger={key} is invalid: needs the {missing[0]} package: "
                f"pip install 'aesweep[{extra}]'"
            )


def sqlite_uri(uri: str, cwd: Path) -> str:
    """`sqlite:///relative/path.db` made absolute against `cwd`, its folder created, so that
    every job of a sweep writes to the same store wherever it runs."""
    if not uri.startswith(SQLITE):
        return uri
    path = cwd / uri.removeprefix(SQLITE)  # an absolute path stays as it is
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLITE + str(path)


def open_store(uri: str) -> None:
    """Reach a tracking store once, directly, before MLflow does: MLflow retries a SQLite
    store that cannot open nine times (101 s), and a server that does not answer seven
    times (about 4 min), in the sweep's process and again in every job. A server that
    answers at all, even with an error (a rate limit, a login) or a certificate that only
    MLflow's TLS settings accept, is left to MLflow."""
    if uri.startswith(SQLITE):
        with contextlib.closing(sqlite3.connect(uri.removeprefix(SQLITE))) as db:
            db.execute("PRAGMA schema_version")  # reads the header: "file is not a database"
    elif uri.startswith(("http://", "https://")):
        import ssl
        from urllib.error import HTTPError, URLError
        from urllib.request import urlopen

        try:
            urlopen(uri.rstrip("/") + "/health", timeout=10).close()
        except HTTPError:
            return  # it answers
        except (URLError, OSError) as e:
            reason = e.reason if isinstance(e, URLError) else e
            if isinstance(reason, ssl.SSLError):
                return  # it answers
            why = " ".join(str(reason).split())
            raise ConnectionError(f"no server answers at {uri} ({why})") from None


def job_names(run_dir: Path) -> tuple[str, str]:
    """(experiment, run) names: a sweep's jobs are runs of one experiment named after the
    sweep folder, and each run is named after its job folder (e.g. dim_z=32)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name, run_dir.name
    return "aesweep", run_dir.name  # single runs share one experiment


def build_loggers(cfg: DictConfig, run_dir: Path, failed: dict[str, str]) -> list[Any]:
    """The configured Lightning loggers, each opened here: one that cannot open is left out,
    its reason in `failed`, and training goes on. Null save_dir and names and relative
    SQLite paths are filled in from the run folder and the folder aesweep started in."""
    from hydra.utils import instantiate

    experiment, run = job_names(run_dir)
    nulls = {"save_dir": str(run_dir), "experiment_name": experiment, "run_name": run}
    loggers = []
    for key, conf in (cfg.get("logger") or {}).items():
        fill = {k: v for k, v in nulls.items() if conf.get(k, "") is None}
        try:
            if conf.get("tracking_uri"):  # its folder is made here: that, too, may fail
                fill["tracking_uri"] = sqlite_uri(str(conf.tracking_uri), Path.cwd())
                if "artifact_location" not in conf:
                    fill["artifact_location"] = _artifact_location(fill["tracking_uri"])
                open_store(fill["tracking_uri"])
            logger = instantiate(conf, **fill)
            _ = logger.experiment  # MLflow: connects, creates the run
        except Exception as e:
            failed[str(key)] = _reason(e)
            print(f"aesweep: logger {key} failed, training goes on without it: {_reason(e)}")
            continue
        loggers.append(logger)
    return loggers


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


def prepare_stores(cfg: DictConfig, experiment: str) -> None:
    """Create each MLflow store and the sweep's experiment once, before any job starts:
    parallel jobs on a fresh store would all migrate its schema, and all but one fail.
    SQLite stores use WAL, so that readers never wait for the one writer."""
    for conf in (cfg.get("logger") or {}).values():
        target = str(conf.get("_target_", ""))
        if not target.endswith("MLFlowLogger") or not conf.get("tracking_uri"):
            continue
        from mlflow import MlflowClient

        uri = sqlite_uri(str(conf.tracking_uri), Path.cwd())
        open_store(uri)
        client = MlflowClient(tracking_uri=uri)  # a SQLite store is created and migrated here
        if uri.startswith(SQLITE):
            with contextlib.closing(sqlite3.connect(uri.removeprefix(SQLITE))) as db:
                db.execute("PRAGMA journal_mode=WAL")
        name = conf.get("experiment_name") or experiment
        if client.get_experiment_by_name(name) is None:
            location = conf.get("artifact_location", _artifact_location(uri))
            client.create_experiment(name, artifact_location=location)


class SharedStores(Callback):
    """Hydra callback: prepare_stores in the submitting process, before the jobs start."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            prepare_stores(config, Path(str(config.hydra.sweep.dir)).name)
        except Exception as e:  # each job then tries on its own, and trains either way
            print(f"aesweep: could not prepare the loggers' store: {_reason(e)}")


def _artifact_location(tracking_uri: str) -> str | None:
    """Beside a local SQLite store (MLflow's default would be ./mlruns in whatever folder)."""
    if not tracking_uri.startswith(SQLITE):
        return None
    return (Path(tracking_uri.removeprefix(SQLITE)).parent / "mlartifacts").as_uri()


def job_parameters() -> dict[str, str]:
    """The job's own overrides as logger parameters, under `overrides/` so that they never
    clash with the model's hyperparameters that Lightning logs (MLflow refuses a changed
    value: `scheduler=null` against the logged `scheduler: None`)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    settings = job_settings(HydraConfig.get().overrides.task)
    return {f"overrides/{k}": v for k, v in settings.items()}


def log_results(
    loggers: list[Any], metrics: dict[str, Any], step: int, failed: dict[str, str]
) -> None:
    """result.json's numbers and the overrides to every logger but the CSV one (its
    metrics.csv keeps its shape); a logger that fails here costs the run nothing: its reason
    goes into `failed` (MLFlowLogger as mlflow)."""
    from pytorch_lightning.loggers import CSVLogger

    numbers = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    params = job_parameters()
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            continue
        try:
            if params:
                logger.log_hyperparams(params)
            logger.log_metrics(numbers, step)
            logger.finalize("success")
        except Exception as e:
            failed[type(logger).__name__.removesuffix("Logger").lower()] = _reason(e)
