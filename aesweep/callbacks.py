"""The run folder's Lightning callbacks and checkpoint IO: what Lightning's ModelCheckpoint
lacks for aesweep's guarantees (a time-based last.ckpt that is one consistent state, the
untrained start as a best candidate, paths that follow a moved folder, resume across chunk
sizes), and checkpoints read as data and written atomically, never non-finite.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from aesweep.checkpoints import CheckpointError, read_checkpoint, write_checkpoint
from aesweep.model import DivergenceError


class RunFolderCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO for the run folder: reads a checkpoint as data (never runs
    what it carries), writes it through a temporary file in its own folder with the umask's
    permissions (Lightning's goes through the system temp folder: on another file system
    that is a copy, which a full disk truncates), and never writes a non-finite state."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None):
        require_finite(checkpoint)
        write_checkpoint(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None):
        return read_checkpoint(Path(path))


def require_finite(checkpoint: dict[str, Any]) -> None:
    """DivergenceError unless every weight is finite (one device sync for all of them)."""
    tensors = [t for t in checkpoint["state_dict"].values() if t.is_floating_point()]
    norms = torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors])
    if not bool(torch.isfinite(norms.sum())):
        raise DivergenceError(
            f"the weights became non-finite by epoch {checkpoint['epoch']}, step "
            f"{checkpoint['global_step']}; the last finite checkpoint is kept; try a lower "
            f"optimizer.lr"
        )


class RunFolderCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose saved paths follow the run folder: a moved or copied
    folder continues with its own files (Lightning keeps the old folder's paths)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        def here(path: str) -> str:
            return str(Path(str(self.dirpath)) / Path(path).name) if path else path

        super().load_state_dict({
            **state_dict, "dirpath": self.dirpath,
            "best_model_path": here(state_dict["best_model_path"]),
            "kth_best_model_path": here(state_dict.get("kth_best_model_path", "")),
            "last_model_path": here(state_dict.get("last_model_path", "")),
            "best_k_models": {here(k): v for k, v in state_dict.get("best_k_models", {}).items()},
        })  # fmt: skip


class LastCheckpoint(RunFolderCheckpoint):
    """checkpoints/last.ckpt, one consistent state to continue from (weights, optimizer,
    scheduler, loop position): Lightning's ModelCheckpoint at the end of the first epoch and
    then of each epoch `every_s` seconds after the last save, at the end of fit, and
    mid-epoch when the user stops training (SIGINT, SIGTERM); not on other exceptions.
    Home-made: Lightning's train_time_interval is checked at every batch and skipped under
    manual optimisation, and its save at the end of fit only happens if none came before."""

    def __init__(self, dirpath: Path, every_s: float) -> None:
        super().__init__(dirpath, filename="last", enable_version_counter=False,
                         save_on_train_epoch_end=True)  # fmt: skip
        self.every_s, self.signame = every_s, None
        self._saved_at = -math.inf

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.strategy.broadcast(time.monotonic() - self._saved_at >= self.every_s):
            super().on_train_epoch_end(trainer, pl_module)
            self._saved_at = time.monotonic()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_checkpoint(trainer, self.format_checkpoint_name({}))  # checked on its way

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exc: BaseException):
        if isinstance(exc, KeyboardInterrupt | SIGTERMException):
            self.signame = "SIGINT" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
            if self._last_global_step_saved != trainer.global_step:
                with contextlib.suppress(DivergenceError):  # then the last finite one stays
                    self._save_checkpoint(trainer, self.format_checkpoint_name({}))


class BestCheckpoint(RunFolderCheckpoint):
    """select=best: checkpoints/best.ckpt, the weights of the lowest val_mse (Lightning's
    ModelCheckpoint), chosen on validation alone. Home-made: the untrained start is the
    first candidate (for model=residual it is PCA), for it and for EarlyStopping's patience;
    Lightning's callbacks know no step-0 candidate."""

    def __init__(self, dirpath: Path) -> None:
        super().__init__(dirpath, filename="best", monitor="val_mse", save_weights_only=True,
                         enable_version_counter=False, save_on_train_epoch_end=False)  # fmt: skip
        self.validations = 0  # since the start, resumes included: 0 means nothing chose

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validations += not trainer.sanity_checking
        super().on_validation_end(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = state_dict.get("validations", 1)  # older checkpoints: assume one
        super().load_state_dict(state_dict)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self.best_model_score is not None:  # resumed: its candidates ride in last.ckpt
            return
        dtype = next(pl_module.parameters()).dtype  # *-true precisions: the model's
        x = trainer.datamodule.val_x.to(dtype)
        with torch.no_grad():
            pl_module.eval()
            start = F.mse_loss(pl_module(x), x).float()
            pl_module.train()
        self._update_best_and_save(start, trainer, self._monitor_candidates(trainer))
        for stopper in trainer.early_stopping_callbacks:
            stopper.best_score = start.to(stopper.best_score.device)


class Continuation(Callback):
    """A resumed run continues exactly where its checkpoint stopped. With this machine's
    steps_per_call whatever the checkpoint's (chunks give the same updates): Lightning's loop
    counts chunks, so its position is rewritten to this run's chunk size, with a one-line
    notice. Under a step limit (trainer.max_steps) from the end of an epoch: Lightning would
    take the finished epoch for a restarted one and skip the epoch after."""

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:  # fmt: skip
        loop = checkpoint["loops"]["fit_loop"]
        saved = checkpoint["hyper_parameters"].get("steps_per_call", 1)
        now = pl_module.hparams.get("steps_per_call", 1)  # a plain Lightning loop records none
        if saved != now:
            rechunk(loop, saved, now, trainer.datamodule.train_dataloader().n_batches)
            print(f"aesweep: continuing with this machine's steps_per_call={now} (the "
                  f"checkpoint was saved with {saved}; same updates)", file=sys.stderr)  # fmt: skip
        batches = loop["epoch_loop.batch_progress"]
        if trainer.max_steps != -1 and batches["is_last_batch"]:
            batches["current"] = dict.fromkeys(batches["current"], 0)
            batches["is_last_batch"] = False


def rechunk(loop: dict[str, Any], old: int, new: int, n_batches: int) -> None:
    """Rewrite a fit loop's counters from chunks of `old` mini-batches to chunks of `new`:
    training_step calls per epoch and overall, and the optimizer steps of the other
    optimisation mode (one Lightning step per step at 1, a chunk of them above)."""
    old_chunks, new_chunks = math.ceil(n_batches / old), math.ceil(n_batches / new)

    def convert(count: int) -> int:
        epochs, rest = divmod(count, old_chunks)
        batches = min(rest * old, n_batches)
        if batches % new:
            raise CheckpointError(
                f"the checkpoint stopped {batches} mini-batches into an epoch, inside a chunk "
                f"of steps_per_call={new}; continue it with steps_per_call={old}"
            )
        return epochs * new_chunks + batches // new

    progress = loop["epoch_loop.batch_progress"]
    for scope in ("total", "current"):  # a step cut short counts as not started
        progress[scope] = dict.fromkeys(progress[scope], convert(progress[scope]["completed"]))
    state = loop["epoch_loop.state_dict"]
    state["_batches_that_stepped"] = convert(state.get("_batches_that_stepped", 0))
    auto = "epoch_loop.automatic_optimization.optim_progress"
    manual = "epoch_loop.manual_optimization.optim_step_progress"
    steps = loop[auto]["optimizer"]["step"] if old == 1 else loop[manual]
    if new == 1:
        loop[auto]["optimizer"]["step"] = steps
        loop[auto]["optimizer"]["zero_grad"] = {
            scope: {**counts, "started": counts["completed"]} for scope, counts in steps.items()
        }
    else:
        loop[manual] = steps
