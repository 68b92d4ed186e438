"""Progress that reads well in a log file: one plain line per epoch when stdout is not a
terminal (a SLURM job's output, a pipe), Lightning's bar on a terminal."""

from __future__ import annotations

import io
import re
import sys

import pytest
from omegaconf import OmegaConf

from aesweep.progress import EpochLines, plain_progress

EPOCH_LINE = re.compile(r"^epoch (\d+)/3: train_loss=\S+( val_loss=\S+)? \(\d+\.\d s\)$")


def test_a_run_into_a_file_prints_one_plain_line_per_epoch(aesweep) -> None:
    outcome = aesweep(
        "train",
        "dim_z=4",
        "data.subset=300",
        "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=2",
        "hydra.run.dir=run",
    )
    assert outcome.code == 0, outcome.err
    assert "\r" not in outcome.out and "\r" not in outcome.err
    lines = [m for line in outcome.out.splitlines() if (m := EPOCH_LINE.match(line))]
    assert [m.group(1) for m in lines] == ["1", "2", "3"]
    assert [bool(m.group(2)) for m in lines] == [False, True, False]  # validated epochs only


def test_no_lines_when_the_progress_bar_is_off(aesweep) -> None:
    outcome = aesweep("train", "dim_z=4", "data.subset=300", "trainer=smoke", "hydra.run.dir=r")
    assert outcome.code == 0, outcome.err
    assert not any(line.startswith("epoch ") for line in outcome.out.splitlines())


@pytest.mark.parametrize(
    ("tty", "enabled", "expected"), [(False, True, 1), (True, True, 0), (False, False, 0)]
)
def test_a_terminal_keeps_lightnings_bar(monkeypatch, tty, enabled, expected) -> None:
    class Stdout(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setattr(sys, "stdout", Stdout())
    cfg = OmegaConf.create({"enable_progress_bar": enabled})
    callbacks = plain_progress(cfg)
    assert len(callbacks) == expected
    assert all(isinstance(c, EpochLines) for c in callbacks)
