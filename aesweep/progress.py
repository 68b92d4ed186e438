"""Progress as one plain line per epoch, for output that goes to a file (a SLURM job's log,
a pipe): a TQDM bar there is carriage-return redraws that read as one endless line."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar


class EpochLines(ProgressBar):
    """Prints `epoch i/N: train_loss=… val_loss=… (elapsed s)` once per epoch, when the next
    starts or training ends: the module logs train_loss after callbacks' epoch end."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = 0.0
        self._pending: tuple[int, float, float | None] | None = None  # epoch, elapsed, val
        self._validated = False

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)
        self._validated = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        val = trainer.callback_metrics.get("val_loss") if self._validated else None
        elapsed = time.monotonic() - self._start
        self._pending = (trainer.current_epoch + 1, elapsed, None if val is None else float(val))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exc: Any) -> None:
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self._pending is None or not self._enabled:
            return
        epoch, elapsed, val = self._pending
        self._pending = None
        parts = [f"epoch {epoch}/{trainer.max_epochs}:"]
        train = trainer.callback_metrics.get("train_loss")
        if train is not None:
            parts.append(f"train_loss={float(train):.5g}")
        if val is not None:
            parts.append(f"val_loss={val:.5g}")
        parts.append(f"({elapsed:.1f} s)")
        print(" ".join(parts), flush=True)


def plain_progress(trainer_cfg: Any) -> list[EpochLines]:
    """[EpochLines()] where Lightning's bar is enabled but stdout is not a terminal."""
    enabled = trainer_cfg.get("enable_progress_bar", True) is not False
    return [EpochLines()] if enabled and not sys.stdout.isatty() else []
