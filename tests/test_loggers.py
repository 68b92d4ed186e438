"""The logger config group: metrics.csv by default at no extra import, TensorBoard event
files and an MLflow SQLite store read back with their own libraries, several loggers at
once, and a missing package refused before training."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.error import URLError

import pandas as pd
import pytest

from tests.conftest import SMOKE, result_of, run_subprocess

OPTIONAL = ("tensorboard", "mlflow", "sqlalchemy", "tensorboardX")


def test_csv_is_the_default_and_imports_no_optional_logger(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom aesweep.cli import main\n"
        f"main(['train', 'dim_z=4', *{SMOKE!r}, 'hydra.run.dir=run'])\n"
        f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"  # the default costs no optional import
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "outputs").exists()


def test_tensorboard_and_csv_together_write_both(aesweep, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome = aesweep("train", "dim_z=4", *SMOKE, "logger=[csv,tensorboard]", "hydra.run.dir=r")
    assert outcome.code == 0, outcome.err
    run = tmp_path / "r"
    result = result_of(run)
    assert "train_loss_step" in (run / "metrics.csv").read_text().splitlines()[0]

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train_loss_step", "val_loss", "test_sse", "pca_test_sse", "n_params"} <= set(scalars)
    steps = events.Scalars("train_loss_step")
    assert len(steps) == result["steps"]  # every step (log_every_n_steps=1), not just the first
    for name in ("test_sse", "pca_test_sse"):
        assert events.Scalars(name)[-1].value == pytest.approx(result[name], rel=1e-6)


def test_a_sweep_is_one_mlflow_experiment_with_a_run_per_job(aesweep, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    import mlflow

    outcome = aesweep("sweep", "sweep.dims=[4,2]", *SMOKE, "logger=mlflow", "hydra.sweep.dir=sw")
    assert outcome.code == 0, outcome.err
    store = tmp_path / "outputs" / "mlflow.db"  # relative sqlite path, taken from the cwd
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("sw")  # named after the sweep folder
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["dim_z=2", "dim_z=4"]
    for run in runs:
        result = result_of(tmp_path / "sw" / run.info.run_name)
        assert run.info.status == "FINISHED"
        for name in ("test_mse", "test_sse", "pca_test_sse", "val_sse", "seconds"):
            assert run.data.metrics[name] == pytest.approx(result[name], rel=1e-6)
        assert run.data.params["overrides/dim_z"] == str(result["dim_z"])
        assert run.data.params["overrides/logger"] == "mlflow"
        assert not (tmp_path / "sw" / run.info.run_name / "metrics.csv").exists()  # csv not chosen
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    ("choice", "missing", "line"),
    [
        ("logger=mlflow", "mlflow", "needs the mlflow package: pip install 'aesweep[mlflow]'"),
        (
            "logger=mlflow",
            "sqlalchemy",
            "needs the sqlalchemy package: pip install 'aesweep[mlflow]'",
        ),
        (
            "logger=[csv,tensorboard]",
            "tensorboard",
            "needs the tensorboard package: pip install 'aesweep[tensorboard]'",
        ),
    ],
)
def test_a_missing_logger_package_is_refused_before_training(
    aesweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str, missing: str, line: str
) -> None:
    from aesweep import loggers

    real = loggers.find_spec
    monkeypatch.setattr(loggers, "find_spec", lambda m: None if m == missing else real(m))
    outcome = aesweep("train", choice, "hydra.run.dir=r")
    assert outcome.code == 2
    key = "mlflow" if "mlflow" in choice else "tensorboard"
    assert outcome.lines == [f"aesweep: error: logger={key} is invalid: {line}"]
    assert not (tmp_path / "r").exists()


def test_an_unknown_logger_lists_the_choices(aesweep) -> None:
    outcome = aesweep("train", "logger=wandb")
    assert outcome.code == 2
    assert outcome.lines == [
        "aesweep: error: logger=wandb is invalid: must be one of csv, mlflow, tensorboard"
    ]


def test_four_parallel_jobs_share_one_fresh_mlflow_store(tmp_path: Path) -> None:
    """The store and the sweep's experiment are created once, before the jobs start; jobs
    that each migrated a fresh SQLite schema and created the experiment failed 7 of 8."""
    pytest.importorskip("mlflow")
    import mlflow

    dims = [16, 8, 4, 2, 1, 3, 5, 6]
    done = run_subprocess(
        "sweep", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "logger=mlflow",
        f"sweep.dims=[{','.join(map(str, dims))}]", "trainer=smoke", "data.subset=200",
        "hydra.sweep.dir=sw",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "sw" / "loss_vs_dim.csv")
    assert sorted(rows["dim_z"]) == sorted(dims) and (rows["status"] == "ok").all()
    assert rows["failed_loggers"].isna().all()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sw").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(f"dim_z={k}" for k in dims)
    assert {r.info.status for r in runs} == {"FINISHED"}


def a_folder(tmp_path: Path) -> str:
    (tmp_path / "store.db").mkdir()  # SQLite cannot open it
    return "sqlite:///store.db"


def not_a_database(tmp_path: Path) -> str:
    (tmp_path / "store.db").write_bytes(b"not a database\n" * 100)
    return "sqlite:///store.db"


def under_a_file(tmp_path: Path) -> str:
    (tmp_path / "stores").write_text("a file, where the store's folder would go\n")
    return "sqlite:///stores/mlflow.db"


def no_server(tmp_path: Path) -> str:
    with socket.socket() as free:  # a port nothing listens on: the connection is refused
        free.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{free.getsockname()[1]}"


@pytest.mark.parametrize(
    ("store", "reason"),
    [
        (a_folder, "unable to open database file"),
        (not_a_database, "file is not a database"),
        (under_a_file, "FileExistsError"),
        (no_server, "ConnectionError: no server answers at http://127.0.0.1:"),
    ],
    ids=["a-folder", "not-a-database", "under-a-file", "no-server"],
)
def test_a_logger_that_cannot_open_costs_the_run_nothing(
    aesweep, tmp_path: Path, store, reason: str
) -> None:
    """The store is reached once, directly: MLflow itself retries a SQLite store it cannot
    open nine times (101 s) and a server that does not answer seven times (about 4 min), in
    the sweep's process and again in every job."""
    pytest.importorskip("mlflow")
    uri = store(tmp_path)
    retries: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = retries.append  # type: ignore[method-assign]
    mlflow_db = logging.getLogger("mlflow.store.db.utils")
    mlflow_db.addHandler(handler)
    try:
        outcome = aesweep(
            "sweep", "sweep.dims=[4]", *SMOKE, "logger=[csv,mlflow]",
            f"logger.mlflow.tracking_uri={uri}", "hydra.sweep.dir=sw",
        )  # fmt: skip
    finally:
        mlflow_db.removeHandler(handler)
    assert outcome.code == 0, outcome.err
    assert not [r.getMessage() for r in retries if "could not be created" in r.getMessage()]
    result = result_of(tmp_path / "sw" / "dim_z=4")
    assert result["status"] == "ok" and result["epochs"] == 2
    assert reason in result["failed_loggers"]["mlflow"]
    assert (tmp_path / "sw" / "dim_z=4" / "metrics.csv").is_file()  # the CSV logger went on
    assert "logger mlflow failed: " in (tmp_path / "sw" / "report.md").read_text()


def test_a_server_that_answers_is_left_to_mlflow(monkeypatch) -> None:
    """Only a server where nothing answers fails at once: a rate limit or a login is MLflow's
    to retry, and a self-signed certificate its TLS settings' to accept
    (MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH)."""
    from aesweep.loggers import open_store

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(429)  # Too Many Requests

        def log_message(self, *args: object) -> None:
            pass

    with HTTPServer(("127.0.0.1", 0), Busy) as server:
        threading.Thread(target=server.handle_request, daemon=True).start()
        open_store(f"http://127.0.0.1:{server.server_port}")

    def self_signed(*args: object, **kwargs: object) -> None:
        raise URLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))

    monkeypatch.setattr("urllib.request.urlopen", self_signed)
    open_store("https://mlflow.example.org")
